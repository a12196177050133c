// Sync: copies committed versions, with everything they reference, from one
// store (a Remote) to another, moving only what the receiver lacks.
//
// Identity: a version is (model, version name, content id). The receiver
// holding the same name with the same content id has it (nothing moves, test
// results merge). The same name with another content id is a clash: the
// incoming version is stored as `<version>-<first 8 hex of its content id>`
// (the full 32 hex if that is taken too; a long base is cut to keep the name
// within 255 bytes), edges pointing at it are remapped, and the rename is
// reported. The receiver settles the name under its writer lock (a
// concurrent sync may take the planned one). A name of either form whose base
// name holds the same content id on the receiver is recognised as that
// version, so a round trip (push, then pull back) adds nothing.
//
// Order and atomicity: versions travel parents first; each one (its missing
// frames, object records, reference counts and lineage records) commits in one
// receiver batch. An interrupted sync leaves only whole versions behind; a
// rerun skips them and moves only what is still missing.
//
// Not transferred: drafts; removals (a version removed on the sender stays on
// the receiver; a tombstone edge travels as a tombstone, live again where the
// receiver holds that parent with the same content id). A predecessor that
// did not travel is dropped.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "lineage/remote.h"

namespace lfs::lineage {

struct SyncOptions {
  std::optional<std::string> model;  // that model's committed versions and their ancestors
  bool dry_run = false;              // plan and count, change nothing
  std::function<void(const std::string&)> log;  // one line per version
};

struct SyncStats {
  uint64_t versions_selected = 0;  // committed versions considered on the sender
  uint64_t versions_sent = 0;      // (dry run: that would be sent)
  uint64_t versions_present = 0;   // already on the receiver
  uint64_t drafts_skipped = 0;
  // Name clashes: sent under a new name (sender M/V -> receiver M/V).
  std::vector<std::pair<std::string, std::string>> renamed;
  // Already on the receiver under another name (an earlier clash, or a round trip).
  std::vector<std::pair<std::string, std::string>> matched;
  std::vector<std::string> sent;  // receiver names
  // Distinct chunks (delta bases included) of the object records the receiver
  // lacked, over the whole run; of those, present before the run and sent.
  uint64_t chunks_needed = 0, chunks_present = 0, chunks_sent = 0;
  uint64_t frame_bytes = 0;   // encoded frame bytes sent
  uint64_t record_bytes = 0;  // file, tensor and version records sent
  uint64_t files_sent = 0, tensors_sent = 0;
  uint64_t test_results_merged = 0, test_defs_added = 0, tags_added = 0;
  std::vector<std::string> test_def_clashes;  // the receiver kept its own
  std::vector<std::string> tag_clashes;       // "model:tag", the receiver kept its own
};

Result<SyncStats> Sync(Remote& from, Remote& to, const SyncOptions& opts);

// The receiver's name for a version whose name is taken by other content.
std::string ClashName(const std::string& version, const Digest& content_id, bool full = false);

}  // namespace lfs::lineage
