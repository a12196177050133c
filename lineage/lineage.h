// The lineage graph: models, versions, provenance edges, drafts and commits.
// Stored in the store's LMDB environment (tables models, versions, children);
// every mutation is one WriteBatch commit, so it is atomic with the file
// objects it references and serialised with every other writer.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "store/ingest.h"
#include "store/objects.h"
#include "store/store.h"

namespace lfs::lineage {

// Frozen: stored in version records by name; the numbers appear in --json.
enum class Relation : uint8_t {
  kFinetune = 1,
  kQuantize = 2,
  kPrune = 3,
  kDistill = 4,
  kAdapter = 5,
  kMerge = 6,
  kOther = 7,
};
const char* RelationName(Relation r);
std::optional<Relation> ParseRelation(std::string_view s);  // also accepts "quantized", "fine-tune"

enum class State : uint8_t { kDraft = 0, kCommitted = 1 };

struct VersionKey {
  std::string model, version;
  std::string str() const { return model + "/" + version; }
  static Result<VersionKey> Parse(std::string_view s);  // "model/version"
  bool operator<(const VersionKey& o) const {
    return model != o.model ? model < o.model : version < o.version;
  }
  bool operator==(const VersionKey& o) const { return model == o.model && version == o.version; }
};

struct ParentEdge {
  VersionKey parent;
  Relation relation = Relation::kFinetune;
  bool tombstone = false;  // the parent was removed; its name and content id remain
  std::string content_id;  // of the parent when the edge was made (committed parents)
};

struct FileEntry {
  Digest digest;
  uint64_t size = 0;
};

struct Version {
  VersionKey key;
  State state = State::kDraft;
  int64_t created_ns = 0;
  int64_t committed_ns = 0;
  std::string author;
  std::string message;
  std::string metadata_json = "{}";  // free-form: metrics, recipe command, test results
  // Who made a draft through a mount (uid, gid); the mount shows the draft
  // and its files as theirs until the commit. Unset: the mounting user's.
  std::optional<std::pair<uint32_t, uint32_t>> owner;
  std::vector<ParentEdge> parents;
  std::optional<std::string> predecessor;  // previous version of the same model
  std::map<std::string, FileEntry> files;
  uint64_t seq = 0;  // store-wide creation sequence number

  bool committed() const { return state == State::kCommitted; }
  // XXH3-128 over the sorted (file name, file digest) pairs.
  Digest ContentId() const;
  int64_t mtime_ns() const { return committed() ? committed_ns : created_ns; }
};

struct Model {
  std::string name;
  int64_t created_ns = 0;
  std::vector<std::string> versions;        // creation order
  std::map<std::string, std::string> tags;  // tag -> version ("latest" is computed)
  uint64_t next_number = 1;                 // for default names v1, v2, ...
  uint64_t seq = 0;
};

struct ParentSpec {
  VersionKey parent;
  Relation relation = Relation::kFinetune;
};

// Names of models and versions (and file names inside versions): non-empty,
// at most 255 bytes, no '/', NUL or control characters, not "." or "..".
Status ValidateName(std::string_view kind, std::string_view name);

class Lineage {
 public:
  explicit Lineage(Store& store) : store_(store) {}
  Store& store() { return store_; }

  // Models
  Status CreateModel(const std::string& name);
  Status RenameModel(const std::string& from, const std::string& to);
  Status RemoveModel(const std::string& name);  // must hold no versions
  Result<Model> GetModel(const std::string& name) const;
  Result<std::vector<std::string>> ListModels() const;
  // The newest committed version, or nullopt.
  Result<std::optional<std::string>> Latest(const std::string& model) const;
  Status Tag(const std::string& model, const std::string& tag, const std::string& version);
  Status Untag(const std::string& model, const std::string& tag);

  // Versions
  struct DraftOptions {
    std::optional<std::string> name;  // default: v<N>
    std::string author, message;
    std::vector<ParentSpec> parents;
    std::string metadata_json = "{}";
    std::optional<std::pair<uint32_t, uint32_t>> owner;  // uid, gid (see Version::owner)
    bool create_model = false;                           // create the model when missing
    // Default: the model's newest version. A rebuild names the version it replaces.
    std::optional<std::string> predecessor;
  };
  Result<Version> CreateDraft(const std::string& model, const DraftOptions& opts);
  Result<Version> GetVersion(const VersionKey& key) const;
  Result<std::vector<Version>> ListVersions(const std::string& model) const;
  Status SetParents(const VersionKey& key, const std::vector<ParentSpec>& parents);
  Status SetMessage(const VersionKey& key, const std::string& message);
  Status SetMetadata(const VersionKey& key, const std::string& json);  // replaces
  // Merges one key into the metadata JSON object (works on committed versions:
  // metadata such as test results is annotation, not content).
  Status PutMetadataKey(const VersionKey& key, const std::string& name, const std::string& json);
  // Read-modify-write of the metadata JSON text in one transaction.
  Status UpdateMetadata(const VersionKey& key, const std::function<Status(std::string*)>& edit);

  // Ingests src as file `name` of a draft (replacing a file of that name);
  // tensors are delta-encoded against the parents' and the predecessor's.
  Result<IngestedFile> AddFile(const VersionKey& key, const std::string& name,
                               const formats::RandomAccess& src,
                               const std::function<void(const std::string&)>& log = nullptr,
                               const std::function<void(uint64_t)>& progress = nullptr);
  Status RemoveFile(const VersionKey& key, const std::string& name);
  Status RenameFile(const VersionKey& key, const std::string& from, const std::string& to);
  Status Commit(const VersionKey& key);
  // Refuses (NotEmpty) when the version has children, unless force: then the
  // children keep it as a tombstone parent.
  Status RemoveVersion(const VersionKey& key, bool force);

  // Queries
  Result<std::vector<std::pair<VersionKey, Relation>>> Children(const VersionKey& key) const;
  // Ancestors through provenance edges, nearest first, each once (BFS).
  Result<std::vector<std::pair<VersionKey, Relation>>> Ancestors(const VersionKey& key) const;
  Result<std::vector<VersionKey>> Descendants(const VersionKey& key) const;  // BFS
  // Why a version is stale: each ancestor that has a newer committed version.
  struct Staleness {
    VersionKey ancestor;
    std::string newer;  // the newer version of the ancestor's model
  };
  Result<std::vector<Staleness>> StaleReasons(const VersionKey& key) const;
  // All tensors of a version (across its files): name -> ref. Names of
  // tensors in several files are prefixed "<file>:".
  Result<std::map<std::string, TensorRef>> TensorIndex(const Version& v) const;

 private:
  Result<DeltaBases> BasesFor(const Version& v) const;
  Store& store_;
};

// Record encoding (JSON values in LMDB; see store/FORMAT.md).
std::string EncodeVersion(const Version& v);
Result<Version> DecodeVersion(std::string_view s);
std::string EncodeModel(const Model& m);
Result<Model> DecodeModel(std::string_view s);
std::string VersionDbKey(const VersionKey& k);  // model NUL version
// Key of a `children` entry: parent model NUL version NUL child model NUL version.
std::string ChildDbKey(const VersionKey& parent, const VersionKey& child);
// The next store-wide creation sequence number (meta `seq`), inside txn.
Result<uint64_t> NextSeq(WriteTxn& txn);
int64_t NowNs();
// ISO-8601 UTC, seconds precision ("2026-11-27T05:30:00Z").
std::string IsoTime(int64_t ns);

}  // namespace lfs::lineage
