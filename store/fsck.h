// Store-wide consistency check: every pack, every chunk (decoded and hashed),
// every tensor and file record, and every reference count recomputed.
#pragma once

#include <set>
#include <string>
#include <vector>

#include "store/store.h"

namespace lfs {

struct FsckReport {
  uint64_t packs_checked = 0, chunks_checked = 0, tensors_checked = 0, files_checked = 0;
  std::vector<std::string> errors;  // each a sentence naming what is wrong
  std::set<Digest> bad_chunks;      // unreadable or corrupt
  std::set<Digest> damaged_files;   // files whose bytes depend on a bad chunk or tensor
  bool ok() const { return errors.empty(); }
};

struct FsckOptions {
  // Chunk-level users (tests, tools) may hold chunk references outside tensor
  // and file records; they turn the recount off.
  bool verify_refcounts = true;
};

Status Fsck(Store& store, FsckReport* report, const FsckOptions& opts = {});

}  // namespace lfs
