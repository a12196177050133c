// The other side of a sync: a store reached through a small interface, so
// that an object store or an ssh peer can stand behind it later. The read side
// hands out lineage records, object records and encoded chunk frames exactly
// as stored; the write side takes one version at a time and applies it in one
// atomic batch, trusting nothing it receives (frames are verified, references
// are counted from its own index under its writer lock).
//
// Nothing here names packs or offsets: a chunk travels as its self-describing
// frame (store/FORMAT.md), so a pack-based object store fits behind it.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "lineage/lineage.h"
#include "store/objects.h"
#include "store/store.h"

namespace lfs::lineage {

// What the read side knows about a chunk without shipping it.
struct ChunkInfo {
  uint32_t frame_len = 0;
  uint32_t raw_len = 0;
  Digest base;  // delta base (empty for a standalone chunk): must travel first
};

// One version and the objects the receiver lacked when the sync planned it.
struct VersionTransfer {
  Version version;  // as the receiver stores it: name, parent edges and predecessor remapped
  // Should version.key be taken by other content when the receiver applies it
  // (a concurrent sync chose the same clash name), the first free of these.
  std::vector<std::string> fallback_names;
  int64_t model_created_ns = 0;  // for a model the receiver does not hold yet
  std::map<Digest, FileRecipe> files;
  std::map<Digest, TensorObject> tensors;
  std::vector<Digest> frames;  // chunks to send, each delta base before its children
  // Reads one chunk's encoded frame from the sender (called in `frames` order).
  std::function<Result<std::string>(const Digest&)> fetch_frame;
};

struct ApplyStats {
  bool already_present = false;  // an earlier, interrupted run got it there first
  std::string stored_as;         // the version name the receiver holds it under
  uint64_t frames = 0, frame_bytes = 0;
  uint64_t files = 0, tensors = 0, record_bytes = 0;
};

class Remote {
 public:
  virtual ~Remote() = default;
  virtual std::string Describe() const = 0;  // for messages: a path or URL

  // Lineage records.
  virtual Result<std::vector<Model>> ListModels() = 0;
  virtual Result<std::vector<Version>> ListVersions(const std::string& model) = 0;
  virtual Result<std::optional<Version>> FindVersion(const VersionKey& key) = 0;

  // Objects: batched presence queries, then records and frames one by one.
  virtual Result<std::vector<std::optional<ChunkInfo>>> StatChunks(
      const std::vector<Digest>& chunks) = 0;
  virtual Result<std::vector<bool>> HaveFiles(const std::vector<Digest>& files) = 0;
  virtual Result<std::vector<bool>> HaveTensors(const std::vector<Digest>& tensors) = 0;
  virtual Result<FileRecipe> GetFile(const Digest& d) = 0;
  virtual Result<TensorObject> GetTensor(const Digest& d) = 0;
  // The chunk's encoded frame, verbatim (the receiver verifies it).
  virtual Result<std::string> ReadFrame(const Digest& d) = 0;

  // Test definitions: `meta` records `test:<name>` (JSON), by name.
  virtual Result<std::map<std::string, std::string>> ListTestDefinitions() = 0;

  // Write side. Applies one version atomically: frames, object records,
  // reference counts, the model/version records and children entries. A
  // version that is already there (same name, same content id) is left alone.
  // Object records are checked for consistency first (Corruption otherwise).
  virtual Result<ApplyStats> ApplyVersion(const VersionTransfer& t) = 0;
  // Per test name, the result with the larger time_ns wins. Returns how many
  // results changed.
  virtual Result<uint64_t> MergeTestResults(const VersionKey& key,
                                            const std::string& tests_json) = 0;
  // Adds the definitions the receiver lacks; returns the names it already
  // holds with a different definition (it keeps its own).
  virtual Result<std::vector<std::string>> AddTestDefinitions(
      const std::map<std::string, std::string>& defs, uint64_t* added) = 0;
  // Sets tags the model lacks (tag -> version); returns the tags it already
  // holds pointing elsewhere (it keeps its own).
  virtual Result<std::vector<std::string>> MergeTags(const std::string& model,
                                                     const std::map<std::string, std::string>& tags,
                                                     uint64_t* added) = 0;
};

// A store on a local path (or any mounted filesystem).
class StoreRemote final : public Remote {
 public:
  // Borrows an open store (read-only stores serve the read side only).
  explicit StoreRemote(Store& store) : store_(store) {}
  static Result<std::unique_ptr<StoreRemote>> Open(const std::string& path, bool read_only,
                                                   const StoreOptions& opts = {});

  std::string Describe() const override { return store_.path(); }
  Result<std::vector<Model>> ListModels() override;
  Result<std::vector<Version>> ListVersions(const std::string& model) override;
  Result<std::optional<Version>> FindVersion(const VersionKey& key) override;
  Result<std::vector<std::optional<ChunkInfo>>> StatChunks(
      const std::vector<Digest>& chunks) override;
  Result<std::vector<bool>> HaveFiles(const std::vector<Digest>& files) override;
  Result<std::vector<bool>> HaveTensors(const std::vector<Digest>& tensors) override;
  Result<FileRecipe> GetFile(const Digest& d) override;
  Result<TensorObject> GetTensor(const Digest& d) override;
  Result<std::string> ReadFrame(const Digest& d) override;
  Result<std::map<std::string, std::string>> ListTestDefinitions() override;
  Result<ApplyStats> ApplyVersion(const VersionTransfer& t) override;
  Result<uint64_t> MergeTestResults(const VersionKey& key, const std::string& tests_json) override;
  Result<std::vector<std::string>> AddTestDefinitions(
      const std::map<std::string, std::string>& defs, uint64_t* added) override;
  Result<std::vector<std::string>> MergeTags(const std::string& model,
                                             const std::map<std::string, std::string>& tags,
                                             uint64_t* added) override;

  Store& store() { return store_; }

 private:
  explicit StoreRemote(std::unique_ptr<Store> owned) : owned_(std::move(owned)), store_(*owned_) {}
  std::unique_ptr<Store> owned_;  // declared first: store_ may refer to it
  Store& store_;
};

// Merges two `"tests"` objects ({name: {passed, time_ns, ...}}): per name the
// result with the larger time_ns wins; ours wins ties. Sets *changed.
std::string MergeTestsJson(const std::string& ours, const std::string& theirs, uint64_t* changed);

// The `meta` key prefix of test definitions.
inline constexpr char kTestDefPrefix[] = "test:";

}  // namespace lfs::lineage
