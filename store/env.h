// The Env seam: all store file I/O goes through it, so tests can inject
// faults (fail the Nth write, report ENOSPC, drop data that was never synced).
// LMDB does its own I/O; it is crash-safe by design (fsync at commit).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "store/status.h"

namespace lfs {

class WritableFile {
 public:
  virtual ~WritableFile() = default;
  virtual Status Append(std::string_view data) = 0;
  virtual Status Sync() = 0;  // data reaches stable storage (fdatasync)
  virtual Status Close() = 0;
  virtual uint64_t Size() const = 0;
};

class RandomAccessFile {
 public:
  virtual ~RandomAccessFile() = default;
  // Reads exactly n bytes at offset into scratch, or fails (a short read is Corruption).
  virtual Status ReadExact(uint64_t offset, size_t n, char* scratch) const = 0;
  virtual Result<uint64_t> Size() const = 0;
  // Hint: [offset, offset+n) will be read soon (starts readahead). No effect on results.
  virtual void WillNeed(uint64_t /*offset*/, uint64_t /*n*/) const {}
};

class FileLock {
 public:
  virtual ~FileLock() = default;  // releases
};

class Env {
 public:
  virtual ~Env() = default;
  static Env* Default();  // POSIX

  // Opens path for appending, creating it if missing. When truncate_to is set
  // the file is first cut to that length (discarding a torn tail).
  virtual Result<std::unique_ptr<WritableFile>> OpenAppendable(
      const std::string& path, std::optional<uint64_t> truncate_to) = 0;
  virtual Result<std::unique_ptr<RandomAccessFile>> OpenRandomAccess(const std::string& path) = 0;
  virtual Status Rename(const std::string& from, const std::string& to) = 0;
  virtual Status Remove(const std::string& path) = 0;
  virtual Status CreateDirIfMissing(const std::string& path) = 0;
  virtual Status SyncDir(const std::string& path) = 0;  // makes creations/renames durable
  virtual bool Exists(const std::string& path) = 0;
  virtual Result<std::vector<std::string>> ListDir(const std::string& path) = 0;
  virtual Result<uint64_t> FileSize(const std::string& path) = 0;
  // Exclusive advisory lock (flock), blocking; shared across processes.
  virtual Result<std::unique_ptr<FileLock>> Lock(const std::string& path) = 0;
};

// Wraps another Env and injects faults. Thread-safe.
class FaultInjectionEnv final : public Env {
 public:
  enum class Op { kAppend, kSync, kRename, kOpen, kAny };
  explicit FaultInjectionEnv(Env* base);
  ~FaultInjectionEnv() override;

  // The nth (0-based) future operation of kind op fails with err (EIO, ENOSPC…).
  void FailNth(Op op, uint64_t n, int err);
  // Every Append fails with ENOSPC while set.
  void SetDiskFull(bool full);
  // Simulates power loss: every file written through this Env is cut back to
  // the length it had at its last successful Sync, and files created since the
  // last SyncDir of their directory disappear.
  Status DropUnsyncedData();
  uint64_t op_count(Op op) const;
  void Reset();  // clears counters and pending faults

  Result<std::unique_ptr<WritableFile>> OpenAppendable(
      const std::string& path, std::optional<uint64_t> truncate_to) override;
  Result<std::unique_ptr<RandomAccessFile>> OpenRandomAccess(const std::string& path) override;
  Status Rename(const std::string& from, const std::string& to) override;
  Status Remove(const std::string& path) override;
  Status CreateDirIfMissing(const std::string& path) override;
  Status SyncDir(const std::string& path) override;
  bool Exists(const std::string& path) override;
  Result<std::vector<std::string>> ListDir(const std::string& path) override;
  Result<uint64_t> FileSize(const std::string& path) override;
  Result<std::unique_ptr<FileLock>> Lock(const std::string& path) override;

  // Internal: called by the wrapped files.
  Status MaybeFail(Op op, const std::string& what);
  void NoteSynced(const std::string& path, uint64_t len);
  bool disk_full() const;

 private:
  struct State;
  std::unique_ptr<State> s_;
  Env* base_;
};

}  // namespace lfs
