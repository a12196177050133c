// The mounted tree, without FUSE: path resolution, attributes, directory
// listings, file contents, symlinks and extended attributes. fs/fuse_*.cc
// wraps it; tests drive it directly. The layout is documented in fs/LAYOUT.md.
//
// Lock order (outermost first): Namespace::mu_ (version-view cache) ->
// Store internals (cache shards, pack files). models_mu_ is a leaf. Nothing here holds an LMDB
// transaction beyond one call.
#pragma once

#include <sys/stat.h>

#include <cstdint>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "lineage/lineage.h"
#include "store/formats/format.h"
#include "store/objects.h"

namespace lfs::fs {

enum class NodeKind {
  kRoot,
  kModel,
  kVersion,
  kOriginal,     // an original file of a version
  kTensorDir,    // tensors/ and its sub-folders
  kTensorFile,   // tensors/.../x.npy or .safetensors
  kViewsDir,     // views/
  kViewFile,     // views/model.pt etc.
  kChildrenDir,  // children/
  kSymlink,      // latest, parent, parent.N, children/<m>@<v>
};

struct Attr {
  uint64_t ino = 0;
  mode_t mode = 0;
  uint64_t size = 0;
  uint32_t nlink = 1;
  int64_t mtime_ns = 0;
  bool immutable = false;  // committed content: long kernel cache timeouts
  bool draft = false;      // a draft version or in one: changes as it is written
  uid_t uid = 0;
  gid_t gid = 0;
};

struct DirEntry {
  std::string name;
  Attr attr;
};

// Bytes of a regular file: literal runs, ranges of tensor objects, ranges of
// original file recipes.
class FileContent {
 public:
  struct Segment {
    uint64_t length = 0;
    enum class Kind { kLiteral, kObject, kRecipe } kind = Kind::kLiteral;
    std::string literal;
    std::shared_ptr<const TensorObject> object;
    std::shared_ptr<FileReader> recipe;
    uint64_t offset = 0;  // inside the object or recipe
  };
  FileContent(Store& store, std::vector<Segment> segs);
  uint64_t size() const { return size_; }
  Result<size_t> Read(uint64_t off, size_t n, char* out) const;
  // The same bytes as references into the chunk cache (literals: into this
  // object, null hold), appended to *out; returns their total.
  Result<size_t> ReadRefs(uint64_t off, size_t n, ReadHint hint, std::vector<ByteRef>* out) const;

 private:
  Store& store_;
  std::vector<Segment> segs_;
  std::vector<uint64_t> starts_;
  uint64_t size_ = 0;
};

struct Node;
class VersionView;
class Drafts;

class Namespace {
 public:
  struct Options {
    size_t max_cached_versions = 256;
    // Bound on the cached versions' views (tensor listings, synthesized
    // checkpoint layouts), approximate heap bytes; the most recent view is
    // kept whatever its size.
    size_t max_view_bytes = 32 << 20;
    // Bound on the decoded model records kept (their raw bytes): a listing
    // or lookup then decodes a model's JSON only when its record changed.
    size_t max_model_bytes = 4 << 20;
    uid_t uid = 0;  // the mounting user: owns everything but others' drafts
    gid_t gid = 0;
    // The root and model folders are 01777 (like /tmp): with allow_other,
    // other users may add models and drafts, which are then theirs.
    bool shared = false;
  };
  Namespace(Store& store, lineage::Lineage& lin, Options opts);
  ~Namespace();

  static constexpr uint64_t kRootIno = 1;
  // Stable inode number of a path (the same across remounts).
  static uint64_t InoOf(const std::string& path);

  Result<Attr> GetAttr(const std::string& path);
  // The entries of a folder with their attributes (the same GetAttr gives
  // each); *self, when given, gets the folder's own.
  Result<std::vector<DirEntry>> ReadDir(const std::string& path, Attr* self = nullptr);
  Result<std::string> ReadLink(const std::string& path);
  Result<std::shared_ptr<FileContent>> Open(const std::string& path);
  // Extended attributes: names are "user.lineage.*"; NotFound means ENODATA.
  Result<std::vector<std::string>> ListXattr(const std::string& path);
  Result<std::string> GetXattr(const std::string& path, const std::string& name);

  // Files being written into drafts show up (with their current size).
  void SetDrafts(Drafts* drafts) { drafts_ = drafts; }
  // Drops cached views of a version (after the write side changed it).
  void Invalidate(const std::string& model, const std::string& version);
  const Options& options() const { return opts_; }
  // Cached version views and their approximate bytes (as of the last lookup).
  std::pair<size_t, size_t> view_cache_usage();

  Result<Node> Resolve(const std::string& path);
  // Kind, version and name of a path, for the write side.
  struct Where {
    NodeKind kind;
    std::string model, version, name;  // name: the file's name inside its version
    bool committed = false;
    bool spooled = false;  // a file being written
  };
  Result<Where> Locate(const std::string& path);

 private:
  Result<std::shared_ptr<VersionView>> View(const std::string& model, const std::string& version);
  void TrimViewsLocked();  // mu_ held
  Attr MakeAttr(const std::string& path, const Node& n);
  Result<Node> Step(const Node& dir, const std::string& name, const std::string& path);
  Result<Node> VersionEntry(const Node& dir, const std::string& name, const std::string& path);
  Node ChildLinkNode(const Node& children_dir, const lineage::VersionKey& child);
  Result<std::optional<std::string>> LatestOf(const lineage::Model& m);
  Result<std::shared_ptr<const lineage::Model>> ModelOf(const std::string& name);
  Result<std::vector<std::pair<std::string, std::shared_ptr<const lineage::Model>>>> AllModels();
  Result<std::shared_ptr<const lineage::Model>> DecodeModelCached(const std::string& name,
                                                                  std::string_view record);

  Store& store_;
  lineage::Lineage& lin_;
  Options opts_;
  Drafts* drafts_ = nullptr;
  std::mutex mu_;
  std::list<std::string> lru_;
  struct CachedView {
    std::shared_ptr<VersionView> view;
    std::list<std::string>::iterator lru;
    size_t accounted = 0;  // its bytes as of when they were last counted
  };
  std::unordered_map<std::string, CachedView> views_;
  size_t cached_view_bytes_ = 0;  // sum of `accounted`
  std::mutex models_mu_;
  // name -> (raw record, decoded): reused while the record is the same.
  std::unordered_map<std::string, std::pair<std::string, std::shared_ptr<const lineage::Model>>>
      models_;
  size_t cached_model_bytes_ = 0;
};

// "parent" -> 0, "parent.N" -> N for 1 <= N < 1000 written without leading
// zeros; anything else (parent.0, parent.01, huge N) is not a parent link.
std::optional<size_t> ParentLinkIndex(const std::string& name);

// Child entries of children/: "<model>@<version>", with '%' and '@' inside
// the names escaped as %25 and %40 so that two children never share an entry.
std::string ChildEntryName(const lineage::VersionKey& child);

// Splits a tensor name into the folders and file name of its tensors/ path,
// escaping anything that could leave the folder (documented in LAYOUT.md).
std::vector<std::string> TensorPathComponents(const std::string& tensor_name, bool npy);

}  // namespace lfs::fs
