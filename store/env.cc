#include "store/env.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <map>
#include <mutex>
#include <set>

namespace lfs {

namespace {

class PosixWritableFile final : public WritableFile {
 public:
  PosixWritableFile(std::string path, int fd, uint64_t size)
      : path_(std::move(path)), fd_(fd), size_(size) {}
  ~PosixWritableFile() override {
    if (fd_ >= 0) ::close(fd_);
  }
  Status Append(std::string_view data) override {
    while (!data.empty()) {
      ssize_t n = ::write(fd_, data.data(), data.size());
      if (n < 0) {
        if (errno == EINTR) continue;
        return Status::FromErrno(errno, "write " + path_);
      }
      data.remove_prefix(static_cast<size_t>(n));
      size_ += static_cast<uint64_t>(n);
    }
    return Status::OK();
  }
  Status Sync() override {
    if (::fdatasync(fd_) != 0) return Status::FromErrno(errno, "fdatasync " + path_);
    return Status::OK();
  }
  Status Close() override {
    int fd = fd_;
    fd_ = -1;
    if (fd >= 0 && ::close(fd) != 0) return Status::FromErrno(errno, "close " + path_);
    return Status::OK();
  }
  uint64_t Size() const override { return size_; }

 private:
  std::string path_;
  int fd_;
  uint64_t size_;
};

class PosixRandomAccessFile final : public RandomAccessFile {
 public:
  PosixRandomAccessFile(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}
  ~PosixRandomAccessFile() override { ::close(fd_); }
  Status ReadExact(uint64_t offset, size_t n, char* scratch) const override {
    size_t done = 0;
    while (done < n) {
      ssize_t r = ::pread(fd_, scratch + done, n - done, static_cast<off_t>(offset + done));
      if (r < 0) {
        if (errno == EINTR) continue;
        return Status::FromErrno(errno, "pread " + path_);
      }
      if (r == 0) {
        return Status::Corruption("short read of " + path_ + " at " +
                                  std::to_string(offset + done));
      }
      done += static_cast<size_t>(r);
    }
    return Status::OK();
  }
  Result<uint64_t> Size() const override {
    struct stat st;
    if (::fstat(fd_, &st) != 0) return Status::FromErrno(errno, "fstat " + path_);
    return static_cast<uint64_t>(st.st_size);
  }
  void WillNeed(uint64_t offset, uint64_t n) const override {
    (void)::posix_fadvise(fd_, static_cast<off_t>(offset), static_cast<off_t>(n),
                          POSIX_FADV_WILLNEED);
  }

 private:
  std::string path_;
  int fd_;
};

class PosixFileLock final : public FileLock {
 public:
  explicit PosixFileLock(int fd) : fd_(fd) {}
  ~PosixFileLock() override {
    ::flock(fd_, LOCK_UN);
    ::close(fd_);
  }

 private:
  int fd_;
};

class PosixEnv final : public Env {
 public:
  Result<std::unique_ptr<WritableFile>> OpenAppendable(
      const std::string& path, std::optional<uint64_t> truncate_to) override {
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return Status::FromErrno(errno, "open " + path);
    if (truncate_to && ::ftruncate(fd, static_cast<off_t>(*truncate_to)) != 0) {
      Status s = Status::FromErrno(errno, "ftruncate " + path);
      ::close(fd);
      return s;
    }
    off_t end = ::lseek(fd, 0, SEEK_END);
    if (end < 0) {
      Status s = Status::FromErrno(errno, "lseek " + path);
      ::close(fd);
      return s;
    }
    return std::unique_ptr<WritableFile>(
        new PosixWritableFile(path, fd, static_cast<uint64_t>(end)));
  }
  Result<std::unique_ptr<RandomAccessFile>> OpenRandomAccess(const std::string& path) override {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return Status::FromErrno(errno, "open " + path);
    return std::unique_ptr<RandomAccessFile>(new PosixRandomAccessFile(path, fd));
  }
  Status Rename(const std::string& from, const std::string& to) override {
    if (::rename(from.c_str(), to.c_str()) != 0) {
      return Status::FromErrno(errno, "rename " + from + " -> " + to);
    }
    return Status::OK();
  }
  Status Remove(const std::string& path) override {
    if (::unlink(path.c_str()) != 0) return Status::FromErrno(errno, "unlink " + path);
    return Status::OK();
  }
  Status CreateDirIfMissing(const std::string& path) override {
    if (::mkdir(path.c_str(), 0755) != 0 && errno != EEXIST) {
      return Status::FromErrno(errno, "mkdir " + path);
    }
    return Status::OK();
  }
  Status SyncDir(const std::string& path) override {
    int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return Status::FromErrno(errno, "open dir " + path);
    Status s;
    if (::fsync(fd) != 0) s = Status::FromErrno(errno, "fsync dir " + path);
    ::close(fd);
    return s;
  }
  bool Exists(const std::string& path) override { return ::access(path.c_str(), F_OK) == 0; }
  Result<std::vector<std::string>> ListDir(const std::string& path) override {
    DIR* d = ::opendir(path.c_str());
    if (!d) return Status::FromErrno(errno, "opendir " + path);
    std::vector<std::string> out;
    while (struct dirent* e = ::readdir(d)) {
      std::string n = e->d_name;
      if (n != "." && n != "..") out.push_back(std::move(n));
    }
    ::closedir(d);
    return out;
  }
  Result<uint64_t> FileSize(const std::string& path) override {
    struct stat st;
    if (::stat(path.c_str(), &st) != 0) return Status::FromErrno(errno, "stat " + path);
    return static_cast<uint64_t>(st.st_size);
  }
  Result<std::unique_ptr<FileLock>> Lock(const std::string& path) override {
    int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return Status::FromErrno(errno, "open lock " + path);
    while (::flock(fd, LOCK_EX) != 0) {
      if (errno == EINTR) continue;
      Status s = Status::FromErrno(errno, "flock " + path);
      ::close(fd);
      return s;
    }
    return std::unique_ptr<FileLock>(new PosixFileLock(fd));
  }
};

}  // namespace

Env* Env::Default() {
  static PosixEnv env;
  return &env;
}

// ---------------------------------------------------------------------------
// FaultInjectionEnv

struct FaultInjectionEnv::State {
  mutable std::mutex mu;
  std::map<Op, uint64_t> counts;
  struct Fault {
    Op op;
    uint64_t at;
    int err;
  };
  std::vector<Fault> faults;
  bool disk_full = false;
  std::map<std::string, uint64_t> synced_len;  // files written through us
  std::set<std::string> created_unsynced;      // created since the dir was last synced
};

namespace {

class FaultWritableFile final : public WritableFile {
 public:
  FaultWritableFile(FaultInjectionEnv* env, std::string path, std::unique_ptr<WritableFile> f)
      : env_(env), path_(std::move(path)), f_(std::move(f)) {}
  Status Append(std::string_view data) override {
    if (env_->disk_full()) return Status::FromErrno(ENOSPC, "write " + path_);
    LFS_RETURN_IF_ERROR(env_->MaybeFail(FaultInjectionEnv::Op::kAppend, "write " + path_));
    return f_->Append(data);
  }
  Status Sync() override {
    LFS_RETURN_IF_ERROR(env_->MaybeFail(FaultInjectionEnv::Op::kSync, "fdatasync " + path_));
    LFS_RETURN_IF_ERROR(f_->Sync());
    env_->NoteSynced(path_, f_->Size());
    return Status::OK();
  }
  Status Close() override { return f_->Close(); }
  uint64_t Size() const override { return f_->Size(); }

 private:
  FaultInjectionEnv* env_;
  std::string path_;
  std::unique_ptr<WritableFile> f_;
};

std::string DirOf(const std::string& path) {
  size_t p = path.rfind('/');
  return p == std::string::npos ? "." : path.substr(0, p);
}

}  // namespace

FaultInjectionEnv::FaultInjectionEnv(Env* base) : s_(new State), base_(base) {}
FaultInjectionEnv::~FaultInjectionEnv() = default;

void FaultInjectionEnv::FailNth(Op op, uint64_t n, int err) {
  std::lock_guard<std::mutex> l(s_->mu);
  s_->faults.push_back({op, s_->counts[op] + n, err});
}
void FaultInjectionEnv::SetDiskFull(bool full) {
  std::lock_guard<std::mutex> l(s_->mu);
  s_->disk_full = full;
}
bool FaultInjectionEnv::disk_full() const {
  std::lock_guard<std::mutex> l(s_->mu);
  return s_->disk_full;
}
uint64_t FaultInjectionEnv::op_count(Op op) const {
  std::lock_guard<std::mutex> l(s_->mu);
  auto it = s_->counts.find(op);
  return it == s_->counts.end() ? 0 : it->second;
}
void FaultInjectionEnv::Reset() {
  std::lock_guard<std::mutex> l(s_->mu);
  s_->counts.clear();
  s_->faults.clear();
  s_->disk_full = false;
}

Status FaultInjectionEnv::MaybeFail(Op op, const std::string& what) {
  std::lock_guard<std::mutex> l(s_->mu);
  uint64_t n = s_->counts[op]++;
  uint64_t any = s_->counts[Op::kAny]++;
  for (size_t i = 0; i < s_->faults.size(); i++) {
    const auto& f = s_->faults[i];
    if ((f.op == op && f.at == n) || (f.op == Op::kAny && f.at == any)) {
      int err = f.err;
      s_->faults.erase(s_->faults.begin() + static_cast<long>(i));
      return Status::FromErrno(err, what + " (injected)");
    }
  }
  return Status::OK();
}

void FaultInjectionEnv::NoteSynced(const std::string& path, uint64_t len) {
  std::lock_guard<std::mutex> l(s_->mu);
  s_->synced_len[path] = len;
}

Status FaultInjectionEnv::DropUnsyncedData() {
  std::map<std::string, uint64_t> synced;
  std::set<std::string> created;
  {
    std::lock_guard<std::mutex> l(s_->mu);
    synced = s_->synced_len;
    created.swap(s_->created_unsynced);
  }
  for (const auto& path : created) {
    if (base_->Exists(path)) LFS_RETURN_IF_ERROR(base_->Remove(path));
    synced.erase(path);
  }
  for (const auto& [path, len] : synced) {
    if (!base_->Exists(path)) continue;
    LFS_ASSIGN_OR_RETURN(auto f, base_->OpenAppendable(path, len));
    LFS_RETURN_IF_ERROR(f->Close());
  }
  std::lock_guard<std::mutex> l(s_->mu);
  s_->synced_len.clear();
  return Status::OK();
}

Result<std::unique_ptr<WritableFile>> FaultInjectionEnv::OpenAppendable(
    const std::string& path, std::optional<uint64_t> truncate_to) {
  LFS_RETURN_IF_ERROR(MaybeFail(Op::kOpen, "open " + path));
  bool existed = base_->Exists(path);
  LFS_ASSIGN_OR_RETURN(auto f, base_->OpenAppendable(path, truncate_to));
  {
    std::lock_guard<std::mutex> l(s_->mu);
    if (!existed) s_->created_unsynced.insert(path);
    // A file we never saw synced counts as synced at its opening length.
    s_->synced_len.emplace(path, f->Size());
    if (truncate_to) s_->synced_len[path] = std::min(s_->synced_len[path], *truncate_to);
  }
  return std::unique_ptr<WritableFile>(new FaultWritableFile(this, path, std::move(f)));
}
Result<std::unique_ptr<RandomAccessFile>> FaultInjectionEnv::OpenRandomAccess(
    const std::string& path) {
  return base_->OpenRandomAccess(path);
}
Status FaultInjectionEnv::Rename(const std::string& from, const std::string& to) {
  LFS_RETURN_IF_ERROR(MaybeFail(Op::kRename, "rename " + from));
  return base_->Rename(from, to);
}
Status FaultInjectionEnv::Remove(const std::string& path) { return base_->Remove(path); }
Status FaultInjectionEnv::CreateDirIfMissing(const std::string& path) {
  return base_->CreateDirIfMissing(path);
}
Status FaultInjectionEnv::SyncDir(const std::string& path) {
  LFS_RETURN_IF_ERROR(MaybeFail(Op::kSync, "fsync dir " + path));
  LFS_RETURN_IF_ERROR(base_->SyncDir(path));
  std::lock_guard<std::mutex> l(s_->mu);
  for (auto it = s_->created_unsynced.begin(); it != s_->created_unsynced.end();) {
    it = DirOf(*it) == path ? s_->created_unsynced.erase(it) : std::next(it);
  }
  return Status::OK();
}
bool FaultInjectionEnv::Exists(const std::string& path) { return base_->Exists(path); }
Result<std::vector<std::string>> FaultInjectionEnv::ListDir(const std::string& path) {
  return base_->ListDir(path);
}
Result<uint64_t> FaultInjectionEnv::FileSize(const std::string& path) {
  return base_->FileSize(path);
}
Result<std::unique_ptr<FileLock>> FaultInjectionEnv::Lock(const std::string& path) {
  return base_->Lock(path);
}

}  // namespace lfs
