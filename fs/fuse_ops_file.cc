// File I/O handlers: open, create, read, write, flush, fsync, release.
// Committed files are read through the chunk cache with the kernel page cache
// kept (keep_cache, never direct_io: mmap must work). Draft files are spooled
// by Drafts and ingested on close.
#include <fcntl.h>
#include <sys/uio.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <vector>

#include "fs/fuse_internal.h"
#include "store/log.h"

namespace lfs::fs {

namespace {

struct FileHandle {
  std::shared_ptr<FileContent> content;  // committed or ingested bytes
  Drafts::Handle* writer = nullptr;      // a draft file opened for writing
  Drafts::Handle* reader = nullptr;      // a draft file being written by someone else
  lineage::VersionKey key;
  std::string name;
  // Where the last read ended: reads near it are sequential and prefetch.
  std::atomic<uint64_t> next_off{0};
  fuse_ino_t ino = 0;
  Attr attr;  // at open: owner, mode, mtime for OpenFileAttr
};

void Register(Daemon& d, fuse_ino_t ino, FileHandle* h) {
  h->ino = ino;
  std::lock_guard<std::mutex> l(d.open_mu);
  d.open_files.emplace(ino, h);
}
void Unregister(Daemon& d, FileHandle* h) {
  std::lock_guard<std::mutex> l(d.open_mu);
  auto [b, e] = d.open_files.equal_range(h->ino);
  for (auto it = b; it != e; ++it) {
    if (it->second == h) {
      d.open_files.erase(it);
      return;
    }
  }
}

FileHandle* H(fuse_file_info* fi) { return reinterpret_cast<FileHandle*>(fi->fh); }

Result<std::string> PathOf(Daemon& d, fuse_ino_t ino) {
  auto p = d.inodes.PathOf(ino);
  if (!p) return Status::NotFound("stale inode");
  return *p;
}

int OpenWriter(Daemon& d, const Namespace::Where& w, bool create, bool truncate, bool excl,
               const std::string& path, FileHandle* h) {
  if (d.opts.read_only) return EROFS;
  lineage::VersionKey key{w.model, w.version};
  auto wh = d.drafts->Open(key, w.name, create, truncate, excl);
  if (!wh.ok()) return LogErrno("open for write", path, wh.status());
  h->writer = *wh;
  h->key = key;
  h->name = w.name;
  return 0;
}

int do_open(Daemon& d, fuse_ino_t ino, fuse_file_info* fi) {
  auto p = PathOf(d, ino);
  if (!p.ok()) return ESTALE;
  auto w = d.ns->Locate(*p);
  if (!w.ok()) return LogErrno("open", *p, w.status());
  auto h = std::make_unique<FileHandle>();
  if (auto a = d.ns->GetAttr(*p); a.ok()) h->attr = *a;
  int acc = fi->flags & O_ACCMODE;
  if (acc != O_RDONLY || (fi->flags & O_TRUNC)) {
    if (w->kind != NodeKind::kOriginal || w->committed) {
      return LogErrno("open for write", *p, Status::ReadOnly("committed content is immutable"));
    }
    int err = OpenWriter(d, *w, false, (fi->flags & O_TRUNC) != 0, false, *p, h.get());
    if (err) return err;
  } else {
    // A file being written is read from its spool, which the handle holds:
    // the last writer may release it while this is open. Otherwise (also
    // when that happened since Locate) the ingested bytes.
    Result<Drafts::Handle*> rd = Status::NotFound("not being written");
    if (w->spooled) rd = d.drafts->OpenReader({w->model, w->version}, w->name);
    if (rd.ok()) {
      h->reader = *rd;
      h->key = {w->model, w->version};
      h->name = w->name;
    } else {
      auto c = d.ns->Open(*p);
      if (!c.ok()) return LogErrno("open", *p, c.status());
      h->content = *c;
      fi->keep_cache = w->committed;  // immutable: the page cache stays valid
    }
  }
  fi->direct_io = 0;
  Register(d, ino, h.get());
  fi->fh = reinterpret_cast<uint64_t>(h.release());
  return 0;
}
void op_open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  int err = do_open(*GetDaemon(req), ino, fi);
  if (err) {
    fuse_reply_err(req, err);
  } else {
    fuse_reply_open(req, fi);
  }
}

int do_create(Daemon& d, fuse_ino_t parent, const char* name, fuse_file_info* fi,
              fuse_entry_param* e) {
  auto dir = PathOf(d, parent);
  if (!dir.ok()) return ESTALE;
  auto w = d.ns->Locate(*dir);
  if (!w.ok()) return LogErrno("create", *dir, w.status());
  if (w->kind != NodeKind::kVersion) {
    return LogErrno("create", JoinPath(*dir, name),
                    Status::ReadOnly("files are created inside a draft version folder"));
  }
  if (w->committed) {
    return LogErrno("create", JoinPath(*dir, name), Status::ReadOnly("version is committed"));
  }
  Namespace::Where fw = *w;
  fw.kind = NodeKind::kOriginal;
  fw.name = name;
  auto h = std::make_unique<FileHandle>();
  int err = OpenWriter(d, fw, true, (fi->flags & O_TRUNC) != 0, (fi->flags & O_EXCL) != 0,
                       JoinPath(*dir, name), h.get());
  if (err) return err;
  err = LookupEntry(d, JoinPath(*dir, name), e);
  if (err) {
    (void)d.drafts->Release(h->writer);
    return err;
  }
  if (auto a = d.ns->GetAttr(JoinPath(*dir, name)); a.ok()) h->attr = *a;
  Register(d, e->ino, h.get());
  fi->fh = reinterpret_cast<uint64_t>(h.release());
  return 0;
}
void op_create(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t, fuse_file_info* fi) {
  fuse_entry_param e;
  int err = do_create(*GetDaemon(req), parent, name, fi, &e);
  if (err) {
    fuse_reply_err(req, err);
  } else {
    fuse_reply_create(req, &e, fi);
  }
}

// Committed content replies straight from the chunk cache (an iovec per
// cached range: no copy in the daemon); drafts and spools copy into buf.
struct ReadReply {
  std::vector<ByteRef> refs;
  std::vector<char> buf;
};

// A sequential reader gets this many chunks decoded ahead (both cores: the
// prefetcher has two threads); a read far from the previous one gets none,
// so random reads do not pay for decoding chunks nobody asks for. "Near":
// the kernel's readahead requests arrive out of order, up to max_read apart.
constexpr int kSequentialPrefetch = 4;
constexpr uint64_t kSequentialWindow = 4 << 20;

// More ranges than this (a read across many tiny tensors) are gathered into
// one buffer: writev takes at most IOV_MAX (1024) of them.
constexpr size_t kMaxReplyRefs = 256;

int do_read(Daemon& d, FileHandle* h, size_t size, off_t off, ReadReply* out) {
  Result<size_t> r = size_t{0};
  if (h->writer || h->reader) {
    out->buf.resize(size);
    r = d.drafts->Read(h->writer ? h->writer : h->reader, static_cast<uint64_t>(off), size,
                       out->buf.data());
    if (r.ok()) out->buf.resize(*r);
  } else {
    uint64_t at = static_cast<uint64_t>(off);
    uint64_t prev = h->next_off.exchange(at + size);
    bool sequential = at == 0 || (at + kSequentialWindow >= prev && at <= prev + kSequentialWindow);
    // A random read, and a reader's first, decode only the segments they need
    // when nobody is decoding their chunk; the first read then has whole
    // chunks decoded ahead (from the one it is in). A sequential reader reads
    // whole chunks, which it mostly finds cached or being decoded.
    ReadHint hint{sequential ? kSequentialPrefetch : 0, /*partial=*/!sequential || at == 0};
    r = h->content->ReadRefs(at, size, hint, &out->refs);
    if (r.ok() && out->refs.size() > kMaxReplyRefs) {
      out->buf.resize(*r);
      size_t at = 0;
      for (const auto& ref : out->refs) {
        std::memcpy(out->buf.data() + at, ref.data, ref.size);
        at += ref.size;
      }
      out->refs.clear();
    }
  }
  if (!r.ok()) return LogErrno("read", h->key.str() + "/" + h->name, r.status());
  return 0;
}
void op_read(fuse_req_t req, fuse_ino_t, size_t size, off_t off, fuse_file_info* fi) {
  ReadReply out;
  int err = do_read(*GetDaemon(req), H(fi), size, off, &out);
  if (err) {
    fuse_reply_err(req, err);
  } else if (!out.refs.empty()) {
    std::vector<iovec> iov(out.refs.size());
    for (size_t i = 0; i < iov.size(); i++) {
      iov[i].iov_base = const_cast<char*>(out.refs[i].data);
      iov[i].iov_len = out.refs[i].size;
    }
    fuse_reply_iov(req, iov.data(), static_cast<int>(iov.size()));
  } else {
    fuse_reply_buf(req, out.buf.data(), out.buf.size());
  }
}

int do_write(Daemon& d, FileHandle* h, const char* data, size_t size, off_t off, size_t* done) {
  if (!h->writer) return EBADF;
  auto r = d.drafts->Write(h->writer, static_cast<uint64_t>(off), data, size);
  if (!r.ok()) return LogErrno("write", h->key.str() + "/" + h->name, r.status());
  *done = *r;
  return 0;
}
void op_write(fuse_req_t req, fuse_ino_t, const char* data, size_t size, off_t off,
              fuse_file_info* fi) {
  size_t done = 0;
  int err = do_write(*GetDaemon(req), H(fi), data, size, off, &done);
  if (err) {
    fuse_reply_err(req, err);
  } else {
    fuse_reply_write(req, done);
  }
}

int do_flush(Daemon& d, FileHandle* h) {
  if (!h->writer) return 0;
  Status s = d.drafts->Flush(h->writer);
  return s.ok() ? 0 : LogErrno("close", h->key.str() + "/" + h->name, s);
}
void op_flush(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) {
  fuse_reply_err(req, do_flush(*GetDaemon(req), H(fi)));
}

int do_fsync(Daemon& d, FileHandle* h) {
  if (!h->writer) return 0;
  Status s = d.drafts->Fsync(h->writer);
  return s.ok() ? 0 : LogErrno("fsync", h->key.str() + "/" + h->name, s);
}
void op_fsync(fuse_req_t req, fuse_ino_t, int, fuse_file_info* fi) {
  fuse_reply_err(req, do_fsync(*GetDaemon(req), H(fi)));
}

void op_release(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) {
  Daemon& d = *GetDaemon(req);
  FileHandle* h = H(fi);
  Unregister(d, h);
  if (h->writer) {
    Status s = d.drafts->Release(h->writer);
    if (!s.ok()) (void)LogErrno("release", h->key.str() + "/" + h->name, s);
  }
  if (h->reader) d.drafts->CloseReader(h->reader);
  delete h;
  fuse_reply_err(req, 0);
}

}  // namespace

bool OpenFileAttr(Daemon& d, fuse_ino_t ino, Attr* a) {
  std::lock_guard<std::mutex> l(d.open_mu);
  auto it = d.open_files.find(ino);
  if (it == d.open_files.end()) return false;
  auto* h = static_cast<FileHandle*>(it->second);
  *a = h->attr;
  a->ino = ino;
  a->nlink = 0;
  a->immutable = false;
  if (h->writer) {
    a->size = d.drafts->HandleSize(h->writer);
  } else if (h->reader) {
    a->size = d.drafts->HandleSize(h->reader);
  } else if (h->content) {
    a->size = h->content->size();
  }
  return true;
}

int TruncateOpenFile(Daemon& d, fuse_ino_t ino, uint64_t size) {
  std::lock_guard<std::mutex> l(d.open_mu);
  auto [b, e] = d.open_files.equal_range(ino);
  for (auto it = b; it != e; ++it) {
    auto* h = static_cast<FileHandle*>(it->second);
    if (!h->writer) continue;
    Status s = d.drafts->TruncateHandle(h->writer, size);
    return s.ok() ? 0 : LogErrno("truncate", h->key.str() + "/" + h->name, s);
  }
  return ENOENT;
}

void AddFileOps(fuse_lowlevel_ops* ops) {
  ops->open = op_open;
  ops->create = op_create;
  ops->read = op_read;
  ops->write = op_write;
  ops->flush = op_flush;
  ops->fsync = op_fsync;
  ops->release = op_release;
}

}  // namespace lfs::fs
