#include "fs/namespace.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <ctime>
#include <nlohmann/json.hpp>
#include <set>

#include "fs/drafts.h"
#include "store/formats/npy.h"
#include "store/formats/safetensors.h"
#include "store/formats/torch_zip.h"
#include "store/log.h"

namespace lfs::fs {

using lineage::Version;
using lineage::VersionKey;
using json = nlohmann::json;

namespace {

constexpr size_t kMaxComponentBytes = 200;
constexpr size_t kMaxTensorDepth = 32;
constexpr char kXattrPrefix[] = "user.lineage.";

std::vector<std::string> SplitPath(const std::string& path) {
  std::vector<std::string> out;
  size_t i = 0;
  while (i < path.size()) {
    while (i < path.size() && path[i] == '/') i++;
    size_t j = path.find('/', i);
    if (j == std::string::npos) j = path.size();
    if (j > i) out.push_back(path.substr(i, j - i));
    i = j;
  }
  return out;
}

std::string Hex8(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%08llx", static_cast<unsigned long long>(v & 0xffffffffull));
  return buf;
}

// One path component made safe: no '/', NUL, control bytes, '%' (the escape
// itself), not "." or "..", not empty, at most kMaxComponentBytes.
std::string EscapeComponent(const std::string& c) {
  if (c.empty()) return "%";
  std::string out;
  for (unsigned char ch : c) {
    if (ch == '/' || ch == '%' || ch < 0x20 || ch == 0x7f) {
      char buf[4];
      std::snprintf(buf, sizeof buf, "%%%02X", ch);
      out += buf;
    } else {
      out.push_back(static_cast<char>(ch));
    }
  }
  if (out == "." || out == "..") out = std::string(out.size(), '%') + "2E";
  if (out.size() > kMaxComponentBytes) {
    out = out.substr(0, kMaxComponentBytes - 17) + "~" + Hex8(Hash64(c.data(), c.size())) +
          Hex8(Hash64(c.data(), c.size()) >> 32);
  }
  return out;
}

bool NumpyHasDType(formats::DType d) { return formats::DTypeNumpyDescr(d).has_value(); }

uint64_t Numel(const std::vector<int64_t>& shape) {
  uint64_t n = 1;
  for (int64_t d : shape) n *= static_cast<uint64_t>(std::max<int64_t>(d, 0));
  return n;
}

}  // namespace

std::vector<std::string> TensorPathComponents(const std::string& name, bool npy) {
  std::vector<std::string> parts;
  size_t i = 0;
  for (;;) {
    size_t j = name.find('.', i);
    if (j == std::string::npos) {
      parts.push_back(name.substr(i));
      break;
    }
    parts.push_back(name.substr(i, j - i));
    i = j + 1;
  }
  // Folders: every component but the last two; the file: the last two.
  std::vector<std::string> out;
  // Deep names stop nesting after kMaxTensorDepth folders (the rest joins the
  // file name): a hostile name of 30,000 dots must not become 30,000 folders.
  size_t nfolders = std::min<size_t>(parts.size() > 2 ? parts.size() - 2 : 0, kMaxTensorDepth);
  for (size_t k = 0; k < nfolders; k++) out.push_back(EscapeComponent(parts[k]));
  std::string file;
  for (size_t k = nfolders; k < parts.size(); k++) {
    file += (k > nfolders ? "." : "") + parts[k];
  }
  std::string ext = npy ? ".npy" : ".safetensors";
  std::string esc = EscapeComponent(file);
  if (esc.size() + ext.size() > 255)
    esc = EscapeComponent(file.substr(0, 150) + "~" + Hex8(Hash64(file.data(), file.size())));
  out.push_back(esc + ext);
  return out;
}

std::optional<size_t> ParentLinkIndex(const std::string& n) {
  if (n == "parent") return 0;
  if (n.rfind("parent.", 0) != 0) return std::nullopt;
  std::string digits = n.substr(7);
  if (digits.empty() || digits.size() > 3 || digits[0] == '0') return std::nullopt;
  size_t v = 0;
  for (char c : digits) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + static_cast<size_t>(c - '0');
  }
  return v;
}

std::string ChildEntryName(const lineage::VersionKey& k) {
  auto esc = [](const std::string& s) {
    std::string out;
    for (char c : s) {
      if (c == '%') {
        out += "%25";
      } else if (c == '@') {
        out += "%40";
      } else {
        out.push_back(c);
      }
    }
    return out;
  };
  return esc(k.model) + "@" + esc(k.version);
}

// ---------------------------------------------------------------------------
// FileContent

FileContent::FileContent(Store& store, std::vector<Segment> segs)
    : store_(store), segs_(std::move(segs)) {
  for (const auto& s : segs_) {
    starts_.push_back(size_);
    size_ += s.length;
  }
}

Result<size_t> FileContent::Read(uint64_t off, size_t n, char* out) const {
  return WalkPieces(
      starts_, size_, off, n, [&](size_t i) { return segs_[i].length; },
      [&](size_t i, uint64_t in, size_t take, size_t done) -> Status {
        const Segment& s = segs_[i];
        switch (s.kind) {
          case Segment::Kind::kLiteral: std::memcpy(out + done, s.literal.data() + in, take); break;
          case Segment::Kind::kObject: {
            LFS_ASSIGN_OR_RETURN(
                size_t got,
                ObjectReader::ReadTensor(store_, *s.object, s.offset + in, take, out + done));
            if (got != take) return Status::Corruption("tensor object shorter than expected");
            break;
          }
          case Segment::Kind::kRecipe: {
            LFS_ASSIGN_OR_RETURN(size_t got, s.recipe->ReadAt(s.offset + in, take, out + done));
            if (got != take) return Status::Corruption("file shorter than its recipe says");
            break;
          }
        }
        return Status::OK();
      });
}

Result<size_t> FileContent::ReadRefs(uint64_t off, size_t n, ReadHint hint,
                                     std::vector<ByteRef>* out) const {
  return WalkPieces(
      starts_, size_, off, n, [&](size_t i) { return segs_[i].length; },
      [&](size_t i, uint64_t in, size_t take, size_t) -> Status {
        const Segment& s = segs_[i];
        size_t got = 0;
        switch (s.kind) {
          case Segment::Kind::kLiteral:
            out->push_back({nullptr, s.literal.data() + in, take});
            got = take;
            break;
          case Segment::Kind::kObject: {
            LFS_ASSIGN_OR_RETURN(
                got, ObjectReader::TensorRefs(store_, *s.object, s.offset + in, take, hint, out));
            break;
          }
          case Segment::Kind::kRecipe: {
            LFS_ASSIGN_OR_RETURN(got, s.recipe->ReadRefs(s.offset + in, take, hint, out));
            break;
          }
        }
        if (got != take) return Status::Corruption("file content shorter than its segments say");
        return Status::OK();
      });
}

// ---------------------------------------------------------------------------
// VersionView: the immutable content of one version, built once.

struct TensorFileSpec {
  TensorRef ref;
  bool npy = true;
  std::string header;  // .npy header or single-tensor safetensors header
};

struct ViewFileSpec {
  formats::ViewLayout layout;
  std::vector<TensorRef> tensors;  // indexed by layout segments
};

// Built in parts, each on first use: a model listing needs only the version
// records; tensors/ needs the tensor index; views/ the layouts (and a crc per
// tensor); same_as_parent the parent's index.
class VersionView {
 public:
  Version v;
  std::string record;  // raw version record: a changed version has a different one
  std::map<std::string, std::string> originals;  // shown name -> file name

  Status EnsureTensors(Store& store, lineage::Lineage& lin);
  Status EnsureViews(Store& store);
  void EnsureParent(lineage::Lineage& lin);

  std::vector<TensorFileSpec> tensors;
  // tensors/ folders: folder path ("" is tensors/ itself) -> name -> tensor index or -1 (folder)
  std::map<std::string, std::map<std::string, int>> tensor_dirs;
  std::map<std::string, ViewFileSpec> views;
  std::map<std::string, TensorRef> parent_tensors;  // first parent (or predecessor), by name
  bool has_parent_tensors = false;
  // Approximate heap bytes of what the Ensure* calls built (the view cache is
  // bounded by it): a 1000-tensor version's tensors/ and .pt view are ~1.4 MB.
  std::atomic<size_t> bytes{0};

 private:
  std::once_flag tensors_once_, views_once_, parent_once_;
  Status tensors_status_, views_status_;
};

namespace {

// Allocation overhead of a small heap object or map node, roughly.
constexpr size_t kNodeBytes = 64;

size_t RefBytes(const TensorRef& r) {
  return sizeof(TensorRef) + r.name.capacity() + (r.shape.capacity() + r.stride.capacity()) * 8;
}

const std::set<std::string>& ReservedVersionNames() {
  static const std::set<std::string> names = {"tensors", "views", "children", "parent"};
  return names;
}
bool IsParentLinkName(const std::string& n) { return ParentLinkIndex(n).has_value(); }

Result<std::shared_ptr<VersionView>> BuildView(const Version& v, std::string record) {
  auto view = std::make_shared<VersionView>();
  view->v = v;
  view->record = std::move(record);
  for (const auto& [name, fe] : v.files) {
    std::string shown = name;
    if (ReservedVersionNames().count(name) || IsParentLinkName(name)) shown = name + "~orig";
    view->originals[shown] = name;
  }
  return view;
}

}  // namespace

Status VersionView::EnsureTensors(Store&, lineage::Lineage& lin) {
  std::call_once(tensors_once_, [&] {
    tensors_status_ = [&]() -> Status {
      LFS_ASSIGN_OR_RETURN(auto idx, lin.TensorIndex(v));
      tensor_dirs[""];
      for (auto& [name, ref] : idx) {
        if (!ref.contiguous) {
          LogDebug(v.key.str() + ": tensor " + name + " is a non-contiguous view; not in tensors/");
          continue;
        }
        TensorFileSpec spec;
        spec.ref = ref;
        spec.npy = NumpyHasDType(ref.dtype);
        if (formats::DTypeSize(ref.dtype) == 0 ||
            Numel(ref.shape) * formats::DTypeSize(ref.dtype) != ref.nbytes) {
          continue;
        }
        if (spec.npy) {
          spec.header = *formats::NpyHeader(ref.dtype, ref.shape);
        } else {
          auto lay = formats::LayoutSafetensors({{"tensor", ref.dtype, ref.shape, ref.nbytes}});
          if (!lay.ok()) continue;
          spec.header = lay->segments.front().literal;
        }
        auto comps = TensorPathComponents(name, spec.npy);
        std::string dir;
        for (size_t k = 0; k + 1 < comps.size(); k++) {
          tensor_dirs[dir].emplace(comps[k], -1);
          dir += (dir.empty() ? "" : "/") + comps[k];
          tensor_dirs[dir];
        }
        std::string file = comps.back();
        auto& entries = tensor_dirs[dir];
        if (entries.count(file)) {
          // Two names escaped to the same file: keep both, the second disambiguated.
          size_t dot = file.rfind('.');
          file =
              file.substr(0, dot) + "~" + Hex8(Hash64(name.data(), name.size())) + file.substr(dot);
        }
        entries[file] = static_cast<int>(tensors.size());
        bytes += RefBytes(spec.ref) + spec.header.capacity() + 2 * kNodeBytes + 2 * file.size() +
                 dir.size();
        tensors.push_back(std::move(spec));
      }
      bytes += tensors.capacity() * sizeof(TensorFileSpec);
      return Status::OK();
    }();
  });
  return tensors_status_;
}

namespace {
size_t LayoutBytes(const ViewFileSpec& vs) {
  size_t b = vs.layout.segments.capacity() * sizeof(formats::ViewSegment);
  for (const auto& seg : vs.layout.segments) b += seg.literal.capacity();
  for (const auto& r : vs.tensors) b += RefBytes(r);
  return b;
}
}  // namespace

Status VersionView::EnsureViews(Store& store) {
  std::call_once(views_once_, [&] {
    views_status_ = [&]() -> Status {
      // Whole-checkpoint views in the other format.
      for (const auto& [fname, fe] : v.files) {
        auto recipe = LoadFile(store, fe.digest);
        if (!recipe.ok()) return recipe.status();
        std::string stem = fname.substr(0, fname.rfind('.'));
        std::vector<TensorRef> refs;
        for (const auto& t : recipe->tensors) {
          if (t.contiguous && formats::DTypeSize(t.dtype) > 0) refs.push_back(t);
        }
        if (refs.empty()) continue;
        ViewFileSpec vs;
        if (recipe->format == formats::Format::kTorchZip) {
          std::vector<formats::SafetensorsEntry> entries;
          for (const auto& t : refs) entries.push_back({t.name, t.dtype, t.shape, t.nbytes});
          auto lay = formats::LayoutSafetensors(entries, {{"format", "pt"}, {"source", fname}});
          if (!lay.ok()) continue;
          vs.layout = std::move(lay).value();
          vs.tensors = refs;
          bytes += LayoutBytes(vs);
          views[stem + ".safetensors"] = std::move(vs);
        } else if (recipe->format == formats::Format::kSafetensors) {
          std::vector<formats::TorchZipTensor> entries;
          bool ok = true;
          for (const auto& t : refs) {
            auto obj = LoadTensor(store, t.object);
            if (!obj.ok() || t.object_offset != 0 || t.nbytes != obj->nbytes) {
              ok = false;
              break;
            }
            entries.push_back({t.name, t.dtype, t.shape, t.nbytes, obj->crc32});
          }
          if (!ok) continue;
          auto lay = formats::LayoutTorchZip(entries, "archive");
          if (!lay.ok()) continue;
          vs.layout = std::move(lay).value();
          vs.tensors = refs;
          bytes += LayoutBytes(vs);
          views[stem + ".pt"] = std::move(vs);
        }
      }
      return Status::OK();
    }();
  });
  return views_status_;
}

void VersionView::EnsureParent(lineage::Lineage& lin) {
  std::call_once(parent_once_, [&] {
    // Parent tensors, for user.lineage.same_as_parent.
    std::optional<VersionKey> pk;
    for (const auto& p : v.parents) {
      if (!p.tombstone) {
        pk = p.parent;
        break;
      }
    }
    if (!pk && v.predecessor) pk = VersionKey{v.key.model, *v.predecessor};
    if (pk) {
      auto pv = lin.GetVersion(*pk);
      if (pv.ok()) {
        auto pidx = lin.TensorIndex(*pv);
        if (pidx.ok()) {
          parent_tensors = std::move(pidx).value();
          has_parent_tensors = true;
          size_t b = 0;
          for (const auto& [name, ref] : parent_tensors) b += name.capacity() + RefBytes(ref);
          bytes += b + parent_tensors.size() * kNodeBytes;
        }
      }
    }
  });
}

struct Node {
  NodeKind kind = NodeKind::kRoot;
  std::string model, version;
  std::shared_ptr<const lineage::Model> model_rec;  // for a model folder and what is in it
  std::shared_ptr<VersionView> view;                // for nodes inside a version
  std::string rest;  // tensors/ sub-path, original name, view name, child name
  int tensor = -1;
  std::string link_target;
  int64_t mtime_ns = 0;
  bool immutable = false;
  bool spooled = false;  // a draft file being written (size from its spool)
  uint64_t spooled_size = 0;
};

// ---------------------------------------------------------------------------
// Namespace

Namespace::Namespace(Store& store, lineage::Lineage& lin, Options opts)
    : store_(store), lin_(lin), opts_(opts) {}
Namespace::~Namespace() = default;

uint64_t Namespace::InoOf(const std::string& path) {
  auto comps = SplitPath(path);
  if (comps.empty()) return kRootIno;
  std::string canon;
  for (const auto& c : comps) canon += "/" + c;
  uint64_t h = Hash64(canon.data(), canon.size());
  return h < 2 ? h + 2 : h;
}

void Namespace::Invalidate(const std::string& model, const std::string& version) {
  std::lock_guard<std::mutex> l(mu_);
  auto it = views_.find(model + "/" + version);
  if (it != views_.end()) {
    cached_view_bytes_ -= it->second.accounted;
    lru_.erase(it->second.lru);
    views_.erase(it);
  }
}

Result<std::shared_ptr<VersionView>> Namespace::View(const std::string& model,
                                                     const std::string& version) {
  std::string key = model + "/" + version;
  std::shared_ptr<VersionView> cached;
  {
    std::lock_guard<std::mutex> l(mu_);
    auto it = views_.find(key);
    if (it != views_.end()) {
      lru_.splice(lru_.begin(), lru_, it->second.lru);
      cached = it->second.view;
    }
  }
  // Read the record (a short LMDB lookup) and reuse the view while it is the
  // same: a committed version never changes, but it can be removed and its
  // name reused, or its model renamed, by this mount or another process.
  std::string record;
  {
    ReadTxn txn(store_.db());
    LFS_ASSIGN_OR_RETURN(auto raw,
                         txn.Get(Table::kVersions, lineage::VersionDbKey({model, version})));
    if (!raw) return Status::NotFound("no version " + key);
    record = std::string(*raw);
  }
  if (cached && cached->record == record) {
    std::lock_guard<std::mutex> l(mu_);
    auto it = views_.find(key);
    if (it != views_.end()) {
      // Only this view's growth since it was last counted: a hit stays O(1)
      // (summing every cached view on each lookup was 7% of a `find`).
      size_t now = it->second.view->bytes.load(std::memory_order_relaxed);
      cached_view_bytes_ += now - it->second.accounted;
      it->second.accounted = now;
      TrimViewsLocked();
    }
    return cached;
  }
  LFS_ASSIGN_OR_RETURN(Version v, lineage::DecodeVersion(record));
  LFS_ASSIGN_OR_RETURN(auto view, BuildView(v, record));
  std::lock_guard<std::mutex> l(mu_);
  auto it = views_.find(key);
  if (it != views_.end()) {
    lru_.erase(it->second.lru);
    views_.erase(it);
  }
  lru_.push_front(key);
  views_[key] = {view, lru_.begin(), 0};
  // A miss (a version record decoded) recounts every view, so growth of views
  // not looked up again since is counted too.
  cached_view_bytes_ = 0;
  for (auto& [k, e] : views_) {
    e.accounted = e.view->bytes.load(std::memory_order_relaxed);
    cached_view_bytes_ += e.accounted;
  }
  TrimViewsLocked();
  return view;
}

std::pair<size_t, size_t> Namespace::view_cache_usage() {
  std::lock_guard<std::mutex> l(mu_);
  return {views_.size(), cached_view_bytes_};
}

// Views grow after they are cached (their parts are built on first use), so
// the byte bound is applied on every View() call, not only on insertion. The
// most recent view always stays.
void Namespace::TrimViewsLocked() {
  while (views_.size() > 1 &&
         (views_.size() > opts_.max_cached_versions || cached_view_bytes_ > opts_.max_view_bytes)) {
    auto it = views_.find(lru_.back());
    cached_view_bytes_ -= it->second.accounted;
    views_.erase(it);
    lru_.pop_back();
  }
}

Result<std::shared_ptr<const lineage::Model>> Namespace::DecodeModelCached(
    const std::string& name, std::string_view record) {
  {
    std::lock_guard<std::mutex> l(models_mu_);
    auto it = models_.find(name);
    if (it != models_.end() && it->second.first == record) return it->second.second;
  }
  LFS_ASSIGN_OR_RETURN(lineage::Model m, lineage::DecodeModel(record));
  auto model = std::make_shared<const lineage::Model>(std::move(m));
  std::lock_guard<std::mutex> l(models_mu_);
  auto it = models_.find(name);
  if (it != models_.end()) {
    cached_model_bytes_ -= it->second.first.size();
    models_.erase(it);
  }
  // Bounded by record bytes; any entry may go (a miss costs one decode).
  while (!models_.empty() && cached_model_bytes_ + record.size() > opts_.max_model_bytes) {
    cached_model_bytes_ -= models_.begin()->second.first.size();
    models_.erase(models_.begin());
  }
  cached_model_bytes_ += record.size();
  models_[name] = {std::string(record), model};
  return model;
}

Result<std::shared_ptr<const lineage::Model>> Namespace::ModelOf(const std::string& name) {
  ReadTxn txn(store_.db());
  LFS_ASSIGN_OR_RETURN(auto raw, txn.Get(Table::kModels, name));
  if (!raw) return Status::NotFound("no model named '" + name + "'");
  return DecodeModelCached(name, *raw);
}

Result<std::vector<std::pair<std::string, std::shared_ptr<const lineage::Model>>>>
Namespace::AllModels() {
  std::vector<std::pair<std::string, std::shared_ptr<const lineage::Model>>> out;
  ReadTxn txn(store_.db());
  Status err;
  LFS_RETURN_IF_ERROR(txn.Scan(Table::kModels, "", [&](std::string_view k, std::string_view v) {
    std::string name(k);
    auto m = DecodeModelCached(name, v);
    if (!m.ok()) {
      err = m.status();
      return false;
    }
    out.emplace_back(std::move(name), std::move(m).value());
    return true;
  }));
  LFS_RETURN_IF_ERROR(err);
  return out;
}

namespace {
Node ModelNode(const std::string& name, std::shared_ptr<const lineage::Model> m) {
  Node n;
  n.kind = NodeKind::kModel;
  n.model = name;
  n.mtime_ns = m->created_ns;
  n.model_rec = std::move(m);
  return n;
}
}  // namespace

Result<Node> Namespace::Resolve(const std::string& path) {
  auto c = SplitPath(path);
  Node n;
  if (c.empty()) {
    n.kind = NodeKind::kRoot;
    LFS_ASSIGN_OR_RETURN(auto models, AllModels());
    for (const auto& [name, m] : models) n.mtime_ns = std::max(n.mtime_ns, m->created_ns);
    return n;
  }
  // Below the root, one step per component (the root's mtime is not needed).
  for (const auto& name : c) {
    LFS_ASSIGN_OR_RETURN(n, Step(n, name, path));
  }
  return n;
}

// The entry `name` of the folder `dir`; `path` (the entry's or a deeper one)
// names it in errors. ReadDir and Resolve share it, so a listed entry has the
// attributes a lookup of it gives.
Result<Node> Namespace::Step(const Node& dir, const std::string& name, const std::string& path) {
  switch (dir.kind) {
    case NodeKind::kRoot: {
      LFS_ASSIGN_OR_RETURN(auto m, ModelOf(name));
      return ModelNode(name, std::move(m));
    }
    case NodeKind::kModel: {
      Node n;
      n.model = dir.model;
      n.model_rec = dir.model_rec;
      if (name == "latest") {
        LFS_ASSIGN_OR_RETURN(auto latest, LatestOf(*dir.model_rec));
        if (!latest) return Status::NotFound(dir.model + " has no committed version yet");
        n.kind = NodeKind::kSymlink;
        n.link_target = *latest;
        n.mtime_ns = dir.mtime_ns;
        return n;
      }
      n.version = name;
      LFS_ASSIGN_OR_RETURN(n.view, View(dir.model, name));
      n.kind = NodeKind::kVersion;
      n.mtime_ns = n.view->v.mtime_ns();
      n.immutable = n.view->v.committed();
      return n;
    }
    case NodeKind::kVersion: return VersionEntry(dir, name, path);
    case NodeKind::kTensorDir: {
      Node n = dir;
      auto dit = dir.view->tensor_dirs.find(dir.rest);
      if (dit == dir.view->tensor_dirs.end()) return Status::NotFound(path);
      auto eit = dit->second.find(name);
      if (eit == dit->second.end()) return Status::NotFound(path);
      if (eit->second >= 0) {
        n.kind = NodeKind::kTensorFile;
        n.tensor = eit->second;
        n.rest.clear();
      } else {
        n.rest = dir.rest + (dir.rest.empty() ? "" : "/") + name;
      }
      return n;
    }
    case NodeKind::kViewsDir: {
      if (!dir.view->views.count(name)) return Status::NotFound(path);
      Node n = dir;
      n.kind = NodeKind::kViewFile;
      n.rest = name;
      return n;
    }
    case NodeKind::kChildrenDir: {
      LFS_ASSIGN_OR_RETURN(auto kids, lin_.Children({dir.model, dir.version}));
      for (const auto& [k, rel] : kids) {
        if (ChildEntryName(k) == name) return ChildLinkNode(dir, k);
      }
      return Status::NotFound(path);
    }
    case NodeKind::kOriginal:
    case NodeKind::kTensorFile: return Status::NotADirectory(path);
    case NodeKind::kViewFile:
    case NodeKind::kSymlink: break;
  }
  return Status::NotFound(path);
}

Node Namespace::ChildLinkNode(const Node& children_dir, const VersionKey& k) {
  Node n = children_dir;
  n.kind = NodeKind::kSymlink;
  n.link_target = "../../../" + k.model + "/" + k.version;
  return n;
}

Result<std::optional<std::string>> Namespace::LatestOf(const lineage::Model& m) {
  // Through the cached views: no version record is decoded twice.
  for (auto it = m.versions.rbegin(); it != m.versions.rend(); ++it) {
    LFS_ASSIGN_OR_RETURN(auto view, View(m.name, *it));
    if (view->v.committed()) return std::optional<std::string>(*it);
  }
  return std::optional<std::string>();
}

Result<Node> Namespace::VersionEntry(const Node& dir, const std::string& top,
                                     const std::string& path) {
  Node n = dir;
  const Version& v = n.view->v;
  bool derived = top == "tensors" || top == "views" || top == "children";
  if (derived && !v.committed()) return Status::NotFound(path + ": drafts show their files only");
  if (top == "tensors") {
    LFS_RETURN_IF_ERROR(n.view->EnsureTensors(store_, lin_));
    n.kind = NodeKind::kTensorDir;
    n.rest.clear();
    return n;
  }
  if (top == "views") {
    LFS_RETURN_IF_ERROR(n.view->EnsureViews(store_));
    n.kind = NodeKind::kViewsDir;
    return n;
  }
  if (top == "children") {
    n.immutable = false;  // grows as versions derive from this one
    n.kind = NodeKind::kChildrenDir;
    return n;
  }
  if (IsParentLinkName(top)) {
    size_t i = *ParentLinkIndex(top);
    if (i < v.parents.size()) {
      n.kind = NodeKind::kSymlink;
      n.link_target = "../../" + v.parents[i].parent.model + "/" + v.parents[i].parent.version;
      return n;
    }
    return Status::NotFound(path);
  }
  if (drafts_ && !v.committed()) {
    if (auto size = drafts_->SpooledSize(v.key, top)) {
      n.kind = NodeKind::kOriginal;
      n.rest = top;
      n.spooled = true;
      n.spooled_size = *size;
      return n;
    }
  }
  if (n.view->originals.count(top)) {
    n.kind = NodeKind::kOriginal;
    n.rest = top;
    return n;
  }
  return Status::NotFound(path);
}

Result<Namespace::Where> Namespace::Locate(const std::string& path) {
  LFS_ASSIGN_OR_RETURN(Node n, Resolve(path));
  Where w;
  w.kind = n.kind;
  w.model = n.model;
  w.version = n.version;
  w.committed = n.view && n.view->v.committed();
  w.spooled = n.spooled;
  if (n.kind == NodeKind::kOriginal) {
    w.name = n.spooled ? n.rest : n.view->originals.at(n.rest);
  }
  return w;
}

Attr Namespace::MakeAttr(const std::string& path, const Node& n) {
  Attr a;
  a.ino = InoOf(path);
  a.mtime_ns = n.mtime_ns;
  a.immutable = n.immutable;
  a.draft = n.view && !n.view->v.committed();
  a.uid = opts_.uid;
  a.gid = opts_.gid;
  // A draft and what is in it belong to whoever made it through the mount
  // (default_permissions then keeps other users out); committed content is
  // read-only and the mounting user's.
  if (n.view && !n.view->v.committed() && n.view->v.owner) {
    a.uid = n.view->v.owner->first;
    a.gid = n.view->v.owner->second;
  }
  bool writable_dir = !n.immutable;
  switch (n.kind) {
    case NodeKind::kRoot:
    case NodeKind::kModel: a.mode = S_IFDIR | (opts_.shared ? 01777 : 0755); break;
    case NodeKind::kVersion: a.mode = S_IFDIR | (writable_dir ? 0755 : 0555); break;
    case NodeKind::kTensorDir:
    case NodeKind::kViewsDir:
    case NodeKind::kChildrenDir: a.mode = S_IFDIR | 0555; break;
    case NodeKind::kSymlink:
      a.mode = S_IFLNK | 0777;
      a.size = n.link_target.size();
      break;
    case NodeKind::kOriginal: {
      a.mode = S_IFREG | (n.immutable ? 0444 : 0644);
      a.size = n.spooled ? n.spooled_size : n.view->v.files.at(n.view->originals.at(n.rest)).size;
      break;
    }
    case NodeKind::kTensorFile: {
      const auto& t = n.view->tensors[static_cast<size_t>(n.tensor)];
      a.mode = S_IFREG | 0444;
      a.size = t.header.size() + t.ref.nbytes;
      break;
    }
    case NodeKind::kViewFile:
      a.mode = S_IFREG | 0444;
      a.size = n.view->views.at(n.rest).layout.size;
      break;
  }
  return a;
}

Result<Attr> Namespace::GetAttr(const std::string& path) {
  LFS_ASSIGN_OR_RETURN(Node n, Resolve(path));
  return MakeAttr(path, n);
}

Result<std::vector<DirEntry>> Namespace::ReadDir(const std::string& path, Attr* self) {
  LFS_ASSIGN_OR_RETURN(Node n, Resolve(path));
  std::string base = path == "/" || path.empty() ? "" : path;
  while (!base.empty() && base.back() == '/') base.pop_back();
  std::vector<DirEntry> out;
  auto push = [&](const std::string& name, const Node& c) {
    out.push_back({name, MakeAttr(base + "/" + name, c)});
  };
  // Each entry is one Step from the folder's node (no path resolution, no
  // LMDB transaction for entries inside a version).
  auto add = [&](const std::string& name) -> Status {
    auto c = Step(n, name, base + "/" + name);
    if (!c.ok()) {
      if (c.status().IsNotFound()) return Status::OK();  // vanished meanwhile
      return c.status();
    }
    push(name, *c);
    return Status::OK();
  };
  switch (n.kind) {
    case NodeKind::kRoot: {
      LFS_ASSIGN_OR_RETURN(auto models, AllModels());
      for (auto& [name, m] : models) push(name, ModelNode(name, m));
      break;
    }
    case NodeKind::kModel: {
      LFS_RETURN_IF_ERROR(add("latest"));
      for (const auto& v : n.model_rec->versions) LFS_RETURN_IF_ERROR(add(v));
      break;
    }
    case NodeKind::kVersion: {
      const Version& v = n.view->v;
      std::set<std::string> names;
      for (const auto& [shown, name] : n.view->originals) names.insert(shown);
      if (drafts_ && !v.committed()) {
        for (const auto& s : drafts_->SpooledNames(v.key)) names.insert(s);
      }
      for (const auto& name : names) LFS_RETURN_IF_ERROR(add(name));
      // Derived views appear once a version is committed, so that `rm -r` of a
      // draft meets only what the user wrote.
      if (v.committed()) {
        LFS_RETURN_IF_ERROR(add("tensors"));
        LFS_RETURN_IF_ERROR(n.view->EnsureViews(store_));
        if (!n.view->views.empty()) LFS_RETURN_IF_ERROR(add("views"));
        LFS_RETURN_IF_ERROR(add("children"));
      }
      for (size_t i = 0; i < v.parents.size(); i++) {
        LFS_RETURN_IF_ERROR(add(i == 0 ? "parent" : "parent." + std::to_string(i)));
      }
      break;
    }
    case NodeKind::kTensorDir: {
      auto dit = n.view->tensor_dirs.find(n.rest);
      if (dit == n.view->tensor_dirs.end()) return Status::NotFound(path);
      for (const auto& [name, idx] : dit->second) LFS_RETURN_IF_ERROR(add(name));
      break;
    }
    case NodeKind::kViewsDir:
      for (const auto& [name, spec] : n.view->views) LFS_RETURN_IF_ERROR(add(name));
      break;
    case NodeKind::kChildrenDir: {
      LFS_ASSIGN_OR_RETURN(auto kids, lin_.Children({n.model, n.version}));
      for (const auto& [k, rel] : kids) push(ChildEntryName(k), ChildLinkNode(n, k));
      break;
    }
    default: return Status::NotADirectory(path);
  }
  if (self) *self = MakeAttr(path, n);
  return out;
}

Result<std::string> Namespace::ReadLink(const std::string& path) {
  LFS_ASSIGN_OR_RETURN(Node n, Resolve(path));
  if (n.kind != NodeKind::kSymlink) return Status::InvalidArgument(path + " is not a symlink");
  return n.link_target;
}

Result<std::shared_ptr<FileContent>> Namespace::Open(const std::string& path) {
  LFS_ASSIGN_OR_RETURN(Node n, Resolve(path));
  using Seg = FileContent::Segment;
  std::vector<Seg> segs;
  auto object_seg = [&](const TensorRef& ref, uint64_t off, uint64_t len) -> Result<Seg> {
    LFS_ASSIGN_OR_RETURN(TensorObject t, LoadTensor(store_, ref.object));
    Seg s;
    s.kind = Seg::Kind::kObject;
    s.length = len;
    s.object = std::make_shared<const TensorObject>(std::move(t));
    s.offset = ref.object_offset + off;
    return s;
  };
  switch (n.kind) {
    case NodeKind::kOriginal: {
      if (n.spooled) return Status::Busy(path + " is being written");
      const auto& fe = n.view->v.files.at(n.view->originals.at(n.rest));
      Seg s;
      s.kind = Seg::Kind::kRecipe;
      s.length = fe.size;
      LFS_ASSIGN_OR_RETURN(s.recipe, FileReader::Open(store_, fe.digest));
      segs.push_back(std::move(s));
      break;
    }
    case NodeKind::kTensorFile: {
      const auto& t = n.view->tensors[static_cast<size_t>(n.tensor)];
      Seg h;
      h.length = t.header.size();
      h.literal = t.header;
      segs.push_back(std::move(h));
      if (t.ref.nbytes > 0) {
        LFS_ASSIGN_OR_RETURN(Seg d, object_seg(t.ref, 0, t.ref.nbytes));
        segs.push_back(std::move(d));
      }
      break;
    }
    case NodeKind::kViewFile: {
      const auto& spec = n.view->views.at(n.rest);
      for (const auto& vs : spec.layout.segments) {
        if (vs.tensor < 0) {
          Seg s;
          s.length = vs.length;
          s.literal = vs.literal;
          segs.push_back(std::move(s));
        } else if (vs.length > 0) {
          LFS_ASSIGN_OR_RETURN(Seg d, object_seg(spec.tensors.at(static_cast<size_t>(vs.tensor)),
                                                 vs.tensor_offset, vs.length));
          segs.push_back(std::move(d));
        }
      }
      break;
    }
    default: return Status::IsADirectory(path + " is not a regular file");
  }
  return std::make_shared<FileContent>(store_, std::move(segs));
}

Result<std::vector<std::string>> Namespace::ListXattr(const std::string& path) {
  LFS_ASSIGN_OR_RETURN(Node n, Resolve(path));
  std::vector<std::string> names;
  auto add = [&](const char* s) { names.push_back(std::string(kXattrPrefix) + s); };
  switch (n.kind) {
    case NodeKind::kModel:
      add("latest");
      add("versions");
      add("tags");
      break;
    case NodeKind::kVersion: {
      const Version& v = n.view->v;
      for (const char* s : {"state", "created", "author", "message", "content_id", "stale",
                            "metadata", "parents"}) {
        add(s);
      }
      if (!v.parents.empty()) {
        add("parent");
        add("relation");
      }
      if (v.committed()) add("committed");
      json md = json::parse(v.metadata_json, nullptr, false);
      if (md.is_object() && md.contains("tests") && md["tests"].is_object()) {
        for (const auto& [k, val] : md["tests"].items())
          names.push_back(std::string(kXattrPrefix) + "test." + k);
      }
      break;
    }
    case NodeKind::kTensorFile:
      for (const char* s : {"name", "dtype", "shape", "hash", "same_as_parent"}) add(s);
      break;
    case NodeKind::kOriginal:
      if (!n.spooled) {
        add("hash");
        add("format");
      }
      break;
    default: break;
  }
  return names;
}

Result<std::string> Namespace::GetXattr(const std::string& path, const std::string& full) {
  if (full.rfind(kXattrPrefix, 0) != 0) return Status::NotFound("no such attribute");
  std::string name = full.substr(sizeof(kXattrPrefix) - 1);
  LFS_ASSIGN_OR_RETURN(Node n, Resolve(path));
  auto shape_str = [](const std::vector<int64_t>& s) {
    std::string out = "[";
    for (size_t i = 0; i < s.size(); i++) out += (i ? ", " : "") + std::to_string(s[i]);
    return out + "]";
  };
  switch (n.kind) {
    case NodeKind::kModel: {
      LFS_ASSIGN_OR_RETURN(auto m, lin_.GetModel(n.model));
      if (name == "versions") return std::to_string(m.versions.size());
      if (name == "latest") {
        LFS_ASSIGN_OR_RETURN(auto l, lin_.Latest(n.model));
        if (!l) return Status::NotFound("no committed version");
        return *l;
      }
      if (name == "tags") return json(m.tags).dump();
      break;
    }
    case NodeKind::kVersion: {
      const Version& v = n.view->v;
      if (name == "state") return std::string(v.committed() ? "committed" : "draft");
      if (name == "created") return lineage::IsoTime(v.created_ns);
      if (name == "committed" && v.committed()) return lineage::IsoTime(v.committed_ns);
      if (name == "author") return v.author;
      if (name == "message") return v.message;
      if (name == "content_id") return v.ContentId().Hex();
      if (name == "metadata") return v.metadata_json;
      if (name == "parents") {
        std::string s;
        for (const auto& p : v.parents) {
          s += (s.empty() ? "" : "\n") + p.parent.str() + " " + lineage::RelationName(p.relation) +
               (p.tombstone ? " removed" : "");
        }
        return s;
      }
      if (name == "parent" && !v.parents.empty()) return v.parents[0].parent.str();
      if (name == "relation" && !v.parents.empty()) {
        return std::string(lineage::RelationName(v.parents[0].relation));
      }
      if (name == "stale") {
        LFS_ASSIGN_OR_RETURN(auto reasons, lin_.StaleReasons(v.key));
        if (reasons.empty()) return std::string("no");
        std::string s = "yes:";
        for (const auto& r : reasons) s += " " + r.ancestor.str() + "->" + r.newer;
        return s;
      }
      if (name.rfind("test.", 0) == 0) {
        json md = json::parse(v.metadata_json, nullptr, false);
        std::string t = name.substr(5);
        if (md.is_object() && md.contains("tests") && md["tests"].contains(t)) {
          return md["tests"][t].dump();
        }
      }
      break;
    }
    case NodeKind::kTensorFile: {
      const auto& t = n.view->tensors[static_cast<size_t>(n.tensor)];
      if (name == "name") return t.ref.name;
      if (name == "dtype") return std::string(formats::DTypeName(t.ref.dtype));
      if (name == "shape") return shape_str(t.ref.shape);
      if (name == "hash") {
        return t.ref.object.Hex() +
               (t.ref.object_offset ? "+" + std::to_string(t.ref.object_offset) : "");
      }
      if (name == "same_as_parent") {
        n.view->EnsureParent(lin_);
        if (!n.view->has_parent_tensors) return std::string("no-parent");
        auto it = n.view->parent_tensors.find(t.ref.name);
        if (it == n.view->parent_tensors.end()) return std::string("new");
        bool same = it->second.object == t.ref.object &&
                    it->second.object_offset == t.ref.object_offset &&
                    it->second.nbytes == t.ref.nbytes;
        return std::string(same ? "yes" : "no");
      }
      break;
    }
    case NodeKind::kOriginal: {
      if (n.spooled) break;
      const auto& fe = n.view->v.files.at(n.view->originals.at(n.rest));
      if (name == "hash") return fe.digest.Hex();
      if (name == "format") {
        LFS_ASSIGN_OR_RETURN(FileRecipe r, LoadFile(store_, fe.digest));
        return std::string(formats::FormatName(r.format));
      }
      break;
    }
    default: break;
  }
  return Status::NotFound("no such attribute");
}

}  // namespace lfs::fs
