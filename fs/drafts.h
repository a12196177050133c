// The write side: files written into a draft version are spooled to
// STORE/staging and ingested (format-aware, delta against the parents) when
// their last writer closes. A spool file's sidecar (.meta) names its draft
// and file, so a restarted daemon ingests what a killed one had spooled:
// everything fsync'd survives kill -9. FUSE-free; the mount wraps it.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "lineage/lineage.h"
#include "store/status.h"

namespace lfs::fs {

class Namespace;

class Drafts {
 public:
  Drafts(Store& store, lineage::Lineage& lin, Namespace* ns);
  ~Drafts();

  // Ingests spool files left by a previous daemon (after a crash).
  Status Recover();

  struct Handle;  // an open writable file
  // Opens model/version/name for writing: creates it (create), truncates it
  // (truncate), or copies an ingested file up first so it can be changed.
  Result<Handle*> Open(const lineage::VersionKey& key, const std::string& name, bool create,
                       bool truncate, bool exclusive);
  Result<size_t> Write(Handle* h, uint64_t off, const char* data, size_t n);
  Result<size_t> Read(Handle* h, uint64_t off, size_t n, char* out);
  // Current size of the file behind an open handle (also once unlinked).
  uint64_t HandleSize(Handle* h);
  Status TruncateHandle(Handle* h, uint64_t size);
  Status Fsync(Handle* h);
  // A close(2) of a writer: ingests what was written so far into the draft.
  Status Flush(Handle* h);
  // Last close of a file ingests it into the draft.
  Status Release(Handle* h);

  // Size of a file being written (nullopt when not spooled).
  std::optional<uint64_t> SpooledSize(const lineage::VersionKey& key, const std::string& name);
  std::vector<std::string> SpooledNames(const lineage::VersionKey& key);
  // A read-only handle on a file being written: it keeps the spool (and its
  // bytes) even when the last writer releases it meanwhile, so a reader
  // never sees ENOENT on an open descriptor. Read() and HandleSize() take it;
  // CloseReader() frees it. NotFound when the file is no longer spooled.
  Result<Handle*> OpenReader(const lineage::VersionKey& key, const std::string& name);
  void CloseReader(Handle* h);
  // Reads a spooled file (readers see written bytes before the close).
  Result<size_t> ReadSpooled(const lineage::VersionKey& key, const std::string& name, uint64_t off,
                             size_t n, char* out);
  Status Truncate(const lineage::VersionKey& key, const std::string& name, uint64_t size);
  Status Unlink(const lineage::VersionKey& key, const std::string& name);
  Status Rename(const lineage::VersionKey& key, const std::string& from, const std::string& to);
  // Drops every spool of a draft (rm -r of a draft).
  void Discard(const lineage::VersionKey& key);
  bool HasOpenFiles(const lineage::VersionKey& key);

 private:
  struct Spool;
  std::shared_ptr<Spool> Find(const lineage::VersionKey& key, const std::string& name);
  Status Ingest(const std::shared_ptr<Spool>& s);
  std::string NewSpoolPath();

  Store& store_;
  lineage::Lineage& lin_;
  Namespace* ns_;
  std::mutex mu_;  // guards spools_; taken before a Spool's own mutex
  std::map<std::string, std::shared_ptr<Spool>> spools_;  // "model\0version\0name"
  uint64_t counter_ = 0;
};

}  // namespace lfs::fs
