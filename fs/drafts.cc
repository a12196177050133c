#include "fs/drafts.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <nlohmann/json.hpp>

#include "fs/namespace.h"
#include "store/ingest.h"
#include "store/log.h"
#include "store/objects.h"

namespace lfs::fs {

using lineage::VersionKey;
using json = nlohmann::json;

struct Drafts::Spool {
  VersionKey key;
  std::string name;
  std::string path, meta_path;
  int fd = -1;
  uint64_t size = 0;
  int open_count = 0;
  bool dirty = false;
  bool unlinked = false;
  std::mutex mu;
  ~Spool() {
    if (fd >= 0) ::close(fd);
  }
};

struct Drafts::Handle {
  std::shared_ptr<Spool> spool;
};

namespace {
std::string MapKey(const VersionKey& k, const std::string& name) {
  std::string s = lineage::VersionDbKey(k);
  s.push_back('\0');
  return s + name;
}
bool ReservedFileName(const std::string& n) {
  if (n == "tensors" || n == "views" || n == "children" || n == "parent") return true;
  return n.rfind("parent.", 0) == 0;
}
Status WriteMeta(const std::string& path, const VersionKey& k, const std::string& name) {
  json j = {{"model", k.model}, {"version", k.version}, {"name", name}};
  std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return Status::FromErrno(errno, "create " + tmp);
  std::string s = j.dump();
  bool ok = ::write(fd, s.data(), s.size()) == static_cast<ssize_t>(s.size()) && ::fsync(fd) == 0;
  int err = errno;
  ::close(fd);
  if (!ok) return Status::FromErrno(err, "write " + tmp);
  if (::rename(tmp.c_str(), path.c_str()) != 0) return Status::FromErrno(errno, "rename " + tmp);
  return Status::OK();
}
}  // namespace

Drafts::Drafts(Store& store, lineage::Lineage& lin, Namespace* ns)
    : store_(store), lin_(lin), ns_(ns) {}
Drafts::~Drafts() = default;

std::string Drafts::NewSpoolPath() {
  char buf[64];
  std::snprintf(buf, sizeof buf, "/staging/%d-%llu-%llu", static_cast<int>(::getpid()),
                static_cast<unsigned long long>(lineage::NowNs()),
                static_cast<unsigned long long>(++counter_));
  return store_.path() + buf;
}

std::shared_ptr<Drafts::Spool> Drafts::Find(const VersionKey& key, const std::string& name) {
  std::lock_guard<std::mutex> l(mu_);
  auto it = spools_.find(MapKey(key, name));
  return it == spools_.end() ? nullptr : it->second;
}

Result<Drafts::Handle*> Drafts::Open(const VersionKey& key, const std::string& name, bool create,
                                     bool truncate, bool exclusive) {
  LFS_RETURN_IF_ERROR(lineage::ValidateName("file", name));
  if (ReservedFileName(name)) {
    return Status::InvalidArgument("'" + name + "' is reserved in a version folder");
  }
  LFS_ASSIGN_OR_RETURN(lineage::Version v, lin_.GetVersion(key));
  if (v.committed()) return Status::ReadOnly(key.str() + " is committed");
  std::lock_guard<std::mutex> l(mu_);
  std::string mk = MapKey(key, name);
  auto it = spools_.find(mk);
  if (it != spools_.end()) {
    auto s = it->second;
    if (exclusive) return Status::AlreadyExists(name + " exists");
    std::lock_guard<std::mutex> sl(s->mu);
    if (truncate && ::ftruncate(s->fd, 0) == 0) {
      s->size = 0;
      s->dirty = true;
    }
    s->open_count++;
    return new Handle{s};
  }
  auto existing = v.files.find(name);
  if (existing != v.files.end() && exclusive) return Status::AlreadyExists(name + " exists");
  if (existing == v.files.end() && !create) return Status::NotFound(key.str() + "/" + name);
  auto s = std::make_shared<Spool>();
  s->key = key;
  s->name = name;
  s->path = NewSpoolPath() + ".spool";
  s->meta_path = s->path.substr(0, s->path.size() - 6) + ".meta";
  s->fd = ::open(s->path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (s->fd < 0) return Status::FromErrno(errno, "create spool " + s->path);
  if (existing != v.files.end() && !truncate) {
    // Copy up: the ingested bytes become the spool's starting content.
    LFS_ASSIGN_OR_RETURN(auto reader, FileReader::Open(store_, existing->second.digest));
    std::string buf(4 << 20, '\0');
    for (uint64_t off = 0; off < existing->second.size;) {
      LFS_ASSIGN_OR_RETURN(size_t n, reader->ReadAt(off, buf.size(), buf.data()));
      if (n == 0) break;
      if (::pwrite(s->fd, buf.data(), n, static_cast<off_t>(off)) != static_cast<ssize_t>(n)) {
        Status e = Status::FromErrno(errno, "copy up " + name);
        ::unlink(s->path.c_str());
        return e;
      }
      off += n;
    }
    s->size = existing->second.size;
    if (::fdatasync(s->fd) != 0) {  // the copy is durable before its sidecar
      Status e = Status::FromErrno(errno, "copy up " + name);
      ::unlink(s->path.c_str());
      return e;
    }
  } else {
    s->dirty = true;  // a new or truncated file is ingested even if never written
  }
  // The sidecar makes the spool count as the file's content after a crash:
  // written only once a copy-up is complete, so Recover never takes a
  // partial copy for the file.
  Status ms = WriteMeta(s->meta_path, key, name);
  if (!ms.ok()) {
    ::unlink(s->path.c_str());
    return ms;
  }
  (void)store_.env()->SyncDir(store_.path() + "/staging");
  s->open_count = 1;
  spools_[mk] = s;
  return new Handle{s};
}

Result<size_t> Drafts::Write(Handle* h, uint64_t off, const char* data, size_t n) {
  Spool& s = *h->spool;
  std::lock_guard<std::mutex> l(s.mu);
  ssize_t w = ::pwrite(s.fd, data, n, static_cast<off_t>(off));
  if (w < 0) return Status::FromErrno(errno, "write " + s.name);
  s.size = std::max<uint64_t>(s.size, off + static_cast<uint64_t>(w));
  s.dirty = true;
  return static_cast<size_t>(w);
}

Result<size_t> Drafts::Read(Handle* h, uint64_t off, size_t n, char* out) {
  Spool& s = *h->spool;
  std::lock_guard<std::mutex> l(s.mu);
  ssize_t r = ::pread(s.fd, out, n, static_cast<off_t>(off));
  if (r < 0) return Status::FromErrno(errno, "read " + s.name);
  return static_cast<size_t>(r);
}

uint64_t Drafts::HandleSize(Handle* h) {
  std::lock_guard<std::mutex> l(h->spool->mu);
  return h->spool->size;
}

Status Drafts::TruncateHandle(Handle* h, uint64_t size) {
  Spool& s = *h->spool;
  std::lock_guard<std::mutex> l(s.mu);
  if (::ftruncate(s.fd, static_cast<off_t>(size)) != 0) {
    return Status::FromErrno(errno, "truncate " + s.name);
  }
  s.size = size;
  s.dirty = true;
  return Status::OK();
}

Status Drafts::Fsync(Handle* h) {
  Spool& s = *h->spool;
  std::lock_guard<std::mutex> l(s.mu);
  if (::fdatasync(s.fd) != 0) return Status::FromErrno(errno, "fsync " + s.name);
  return Status::OK();
}

Status Drafts::Ingest(const std::shared_ptr<Spool>& s) {
  std::lock_guard<std::mutex> l(s->mu);
  if (!s->dirty || s->unlinked) return Status::OK();
  auto acc = EnvFileAccess::Open(store_.env(), s->path);
  if (!acc.ok()) return acc.status();
  auto r = lin_.AddFile(s->key, s->name, **acc, [](const std::string& m) { LogWarn(m); });
  if (!r.ok()) {
    LogError("ingest of " + s->key.str() + "/" + s->name + " failed: " + r.status().ToString());
    return r.status();
  }
  s->dirty = false;
  if (ns_) ns_->Invalidate(s->key.model, s->key.version);
  return Status::OK();
}

Status Drafts::Flush(Handle* h) { return Ingest(h->spool); }

Status Drafts::Release(Handle* h) {
  std::shared_ptr<Spool> s = h->spool;
  delete h;
  bool last;
  {
    std::lock_guard<std::mutex> l(mu_);
    std::lock_guard<std::mutex> sl(s->mu);
    last = --s->open_count == 0;
  }
  if (!last) return Ingest(s);
  Status st = Ingest(s);
  // The spool goes either way: on failure (ENOSPC…) the staging data is
  // cleaned up and the draft keeps its previous content of the file.
  std::lock_guard<std::mutex> l(mu_);
  auto it = spools_.find(MapKey(s->key, s->name));
  if (it != spools_.end() && it->second == s) spools_.erase(it);
  ::unlink(s->path.c_str());
  ::unlink(s->meta_path.c_str());
  if (ns_) ns_->Invalidate(s->key.model, s->key.version);
  return st;
}

std::optional<uint64_t> Drafts::SpooledSize(const VersionKey& key, const std::string& name) {
  auto s = Find(key, name);
  if (!s) return std::nullopt;
  std::lock_guard<std::mutex> l(s->mu);
  return s->size;
}

std::vector<std::string> Drafts::SpooledNames(const VersionKey& key) {
  std::lock_guard<std::mutex> l(mu_);
  std::vector<std::string> out;
  std::string prefix = lineage::VersionDbKey(key);
  prefix.push_back('\0');
  for (auto it = spools_.lower_bound(prefix);
       it != spools_.end() && it->first.rfind(prefix, 0) == 0; ++it) {
    out.push_back(it->second->name);
  }
  return out;
}

Result<Drafts::Handle*> Drafts::OpenReader(const VersionKey& key, const std::string& name) {
  auto s = Find(key, name);
  if (!s) return Status::NotFound(key.str() + "/" + name + " is not being written");
  return new Handle{s};
}

void Drafts::CloseReader(Handle* h) { delete h; }

Result<size_t> Drafts::ReadSpooled(const VersionKey& key, const std::string& name, uint64_t off,
                                   size_t n, char* out) {
  auto s = Find(key, name);
  if (!s) return Status::NotFound(name);
  Handle h{s};
  return Read(&h, off, n, out);
}

Status Drafts::Truncate(const VersionKey& key, const std::string& name, uint64_t size) {
  if (auto s = Find(key, name)) {
    // Being written: change the spool; it is ingested when its writers close.
    std::lock_guard<std::mutex> l(s->mu);
    if (::ftruncate(s->fd, static_cast<off_t>(size)) != 0) {
      return Status::FromErrno(errno, "truncate " + name);
    }
    s->size = size;
    s->dirty = true;
    return Status::OK();
  }
  LFS_ASSIGN_OR_RETURN(Handle * h, Open(key, name, false, size == 0, false));
  {
    std::lock_guard<std::mutex> l(h->spool->mu);
    if (::ftruncate(h->spool->fd, static_cast<off_t>(size)) != 0) {
      Status e = Status::FromErrno(errno, "truncate " + name);
      h->spool->dirty = false;
      (void)Release(h);
      return e;
    }
    h->spool->size = size;
    h->spool->dirty = true;
  }
  return Release(h);
}

Status Drafts::Unlink(const VersionKey& key, const std::string& name) {
  LFS_ASSIGN_OR_RETURN(lineage::Version v, lin_.GetVersion(key));
  if (v.committed()) return Status::ReadOnly(key.str() + " is committed");
  bool found = false;
  {
    std::lock_guard<std::mutex> l(mu_);
    auto it = spools_.find(MapKey(key, name));
    if (it != spools_.end()) {
      std::lock_guard<std::mutex> sl(it->second->mu);
      it->second->unlinked = true;  // open handles keep writing into nothing
      ::unlink(it->second->meta_path.c_str());
      spools_.erase(it);
      found = true;
    }
  }
  if (v.files.count(name)) {
    LFS_RETURN_IF_ERROR(lin_.RemoveFile(key, name));
    found = true;
  }
  if (ns_) ns_->Invalidate(key.model, key.version);
  return found ? Status::OK() : Status::NotFound(key.str() + "/" + name);
}

Status Drafts::Rename(const VersionKey& key, const std::string& from, const std::string& to) {
  LFS_RETURN_IF_ERROR(lineage::ValidateName("file", to));
  if (ReservedFileName(to)) return Status::InvalidArgument("'" + to + "' is reserved");
  LFS_ASSIGN_OR_RETURN(lineage::Version v, lin_.GetVersion(key));
  if (v.committed()) return Status::ReadOnly(key.str() + " is committed");
  bool found = false;
  {
    std::lock_guard<std::mutex> l(mu_);
    // rename(2) replaces the target: a writer still holding it writes into
    // nothing from now on, whatever the source is.
    auto old = spools_.find(MapKey(key, to));
    if (old != spools_.end() && from != to) {
      std::lock_guard<std::mutex> ol(old->second->mu);
      old->second->unlinked = true;
      ::unlink(old->second->meta_path.c_str());
      spools_.erase(old);
    }
    auto it = spools_.find(MapKey(key, from));
    if (it != spools_.end()) {
      auto s = it->second;
      spools_.erase(it);
      std::lock_guard<std::mutex> sl(s->mu);
      s->name = to;
      s->dirty = true;
      (void)WriteMeta(s->meta_path, key, to);
      spools_[MapKey(key, to)] = s;
      found = true;
    }
  }
  if (v.files.count(from)) {
    LFS_RETURN_IF_ERROR(lin_.RenameFile(key, from, to));
    found = true;
  } else if (found && v.files.count(to)) {
    LFS_RETURN_IF_ERROR(lin_.RemoveFile(key, to));  // replaced at ingest
  }
  if (ns_) ns_->Invalidate(key.model, key.version);
  return found ? Status::OK() : Status::NotFound(key.str() + "/" + from);
}

void Drafts::Discard(const VersionKey& key) {
  std::lock_guard<std::mutex> l(mu_);
  std::string prefix = lineage::VersionDbKey(key);
  prefix.push_back('\0');
  for (auto it = spools_.lower_bound(prefix);
       it != spools_.end() && it->first.rfind(prefix, 0) == 0;) {
    it->second->unlinked = true;
    ::unlink(it->second->meta_path.c_str());
    it = spools_.erase(it);
  }
}

bool Drafts::HasOpenFiles(const VersionKey& key) { return !SpooledNames(key).empty(); }

Status Drafts::Recover() {
  std::string dir = store_.path() + "/staging";
  auto names = store_.env()->ListDir(dir);
  if (!names.ok()) return Status::OK();
  for (const auto& n : *names) {
    if (n.size() < 5 || n.substr(n.size() - 5) != ".meta") {
      continue;
    }
    std::string meta = dir + "/" + n;
    std::string spool = meta.substr(0, meta.size() - 5) + ".spool";
    std::ifstream in(meta);
    json j = json::parse(in, nullptr, false);
    if (j.is_object() && ::access(spool.c_str(), F_OK) == 0) {
      VersionKey k{j.value("model", ""), j.value("version", "")};
      std::string name = j.value("name", "");
      auto v = lin_.GetVersion(k);
      if (v.ok() && !v->committed()) {
        auto acc = EnvFileAccess::Open(store_.env(), spool);
        if (acc.ok()) {
          auto r = lin_.AddFile(k, name, **acc, [](const std::string& m) { LogWarn(m); });
          if (r.ok()) {
            LogWarn("recovered " + k.str() + "/" + name + " from an interrupted write");
          } else {
            LogError("could not recover " + k.str() + "/" + name + ": " + r.status().ToString());
            continue;  // keep the spool for a later attempt
          }
        }
      }
    }
    ::unlink(spool.c_str());
    ::unlink(meta.c_str());
  }
  // Spools without a sidecar never got a name: nothing refers to them.
  for (const auto& n : *names) {
    if (n.size() > 6 && n.substr(n.size() - 6) == ".spool") {
      std::string p = dir + "/" + n;
      std::string meta = p.substr(0, p.size() - 6) + ".meta";
      if (::access(meta.c_str(), F_OK) != 0) ::unlink(p.c_str());
    }
  }
  return Status::OK();
}

}  // namespace lfs::fs
