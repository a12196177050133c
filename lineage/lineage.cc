#include "lineage/lineage.h"

#include <algorithm>
#include <chrono>
#include <ctime>
#include <deque>
#include <nlohmann/json.hpp>
#include <set>

#include "store/coding.h"

namespace lfs::lineage {

using json = nlohmann::json;

namespace {
constexpr char kMetaSeq[] = "seq";
constexpr size_t kMaxNameBytes = 255;

std::string ChildKeyPrefix(const VersionKey& parent) {
  std::string k = VersionDbKey(parent);
  k.push_back('\0');
  return k;
}
std::string ChildKey(const VersionKey& parent, const VersionKey& child) {
  return ChildDbKey(parent, child);
}

Result<Model> LoadModel(const Txn& txn, const std::string& name) {
  LFS_ASSIGN_OR_RETURN(auto v, txn.Get(Table::kModels, name));
  if (!v) return Status::NotFound("no model named '" + name + "'");
  return DecodeModel(*v);
}
Result<Version> LoadVersion(const Txn& txn, const VersionKey& k) {
  LFS_ASSIGN_OR_RETURN(auto v, txn.Get(Table::kVersions, VersionDbKey(k)));
  if (!v) return Status::NotFound("no version " + k.str());
  return DecodeVersion(*v);
}
Status StoreModel(WriteTxn& txn, const Model& m) {
  return txn.Put(Table::kModels, m.name, EncodeModel(m));
}
Status StoreVersion(WriteTxn& txn, const Version& v) {
  return txn.Put(Table::kVersions, VersionDbKey(v.key), EncodeVersion(v));
}
Status RequireDraft(const Version& v) {
  if (v.committed()) return Status::ReadOnly(v.key.str() + " is committed and immutable");
  return Status::OK();
}

// One writer-locked, atomic mutation of the lineage tables.
Status Mutate(Store& store, const std::function<Status(WriteTxn&)>& fn) {
  LFS_ASSIGN_OR_RETURN(auto batch, store.BeginWrite());
  return batch->Commit(fn);
}
}  // namespace

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string IsoTime(int64_t ns) {
  std::time_t t = static_cast<std::time_t>(ns / 1000000000);
  std::tm tm;
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

const char* RelationName(Relation r) {
  switch (r) {
    case Relation::kFinetune: return "finetune";
    case Relation::kQuantize: return "quantize";
    case Relation::kPrune: return "prune";
    case Relation::kDistill: return "distill";
    case Relation::kAdapter: return "adapter";
    case Relation::kMerge: return "merge";
    case Relation::kOther: return "other";
  }
  return "other";
}

std::optional<Relation> ParseRelation(std::string_view s) {
  if (s == "finetune" || s == "fine-tune" || s == "finetuned") return Relation::kFinetune;
  if (s == "quantize" || s == "quantized" || s == "quantization") return Relation::kQuantize;
  if (s == "prune" || s == "pruned") return Relation::kPrune;
  if (s == "distill" || s == "distilled") return Relation::kDistill;
  if (s == "adapter" || s == "lora") return Relation::kAdapter;
  if (s == "merge" || s == "merged") return Relation::kMerge;
  if (s == "other") return Relation::kOther;
  return std::nullopt;
}

namespace {
// Records are JSON, so names must be UTF-8 (well-formed, shortest form).
bool IsUtf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (n == 0 || i + n > s.size()) return false;
    uint32_t cp = n == 1 ? c : c & (0x7f >> n);
    for (size_t k = 1; k < n; k++) {
      unsigned char d = static_cast<unsigned char>(s[i + k]);
      if ((d & 0xc0) != 0x80) return false;
      cp = cp << 6 | (d & 0x3f);
    }
    static const uint32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < kMin[n] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
    i += n;
  }
  return true;
}
}  // namespace

Status ValidateName(std::string_view kind, std::string_view name) {
  std::string what = std::string(kind) + " name";
  if (name.empty()) return Status::InvalidArgument(what + " is empty");
  if (name.size() > kMaxNameBytes) {
    return Status::InvalidArgument(what + " is longer than 255 bytes");
  }
  if (name == "." || name == "..") return Status::InvalidArgument(what + " may not be . or ..");
  for (unsigned char c : name) {
    if (c == '/') return Status::InvalidArgument(what + " may not contain '/'");
    if (c < 0x20 || c == 0x7f) {
      return Status::InvalidArgument(what + " may not contain NUL or control characters");
    }
  }
  if (!IsUtf8(name)) return Status::InvalidArgument(what + " is not valid UTF-8");
  return Status::OK();
}

Result<VersionKey> VersionKey::Parse(std::string_view s) {
  size_t slash = s.find('/');
  if (slash == std::string_view::npos || s.find('/', slash + 1) != std::string_view::npos) {
    return Status::InvalidArgument("expected MODEL/VERSION, got '" + std::string(s) + "'");
  }
  VersionKey k{std::string(s.substr(0, slash)), std::string(s.substr(slash + 1))};
  LFS_RETURN_IF_ERROR(ValidateName("model", k.model));
  LFS_RETURN_IF_ERROR(ValidateName("version", k.version));
  return k;
}

std::string VersionDbKey(const VersionKey& k) {
  std::string s = k.model;
  s.push_back('\0');
  s += k.version;
  return s;
}

std::string ChildDbKey(const VersionKey& parent, const VersionKey& child) {
  std::string k = VersionDbKey(parent);
  k.push_back('\0');
  return k + VersionDbKey(child);
}

Result<uint64_t> NextSeq(WriteTxn& txn) {
  LFS_ASSIGN_OR_RETURN(auto v, txn.Get(Table::kMeta, kMetaSeq));
  uint64_t seq = v ? DecodeKeyU64(*v) + 1 : 1;
  LFS_RETURN_IF_ERROR(txn.Put(Table::kMeta, kMetaSeq, KeyU64(seq)));
  return seq;
}

Digest Version::ContentId() const {
  Hasher h;
  for (const auto& [name, f] : files) {
    h.Update(name.data(), name.size() + 1);  // includes the terminating NUL as separator
    std::string enc = f.digest.Encode();
    h.Update(enc.data(), enc.size());
  }
  return h.Finish();
}

// ---------------------------------------------------------------------------
// Encoding

std::string EncodeVersion(const Version& v) {
  json j;
  j["format"] = 1;
  j["model"] = v.key.model;
  j["name"] = v.key.version;
  j["state"] = v.committed() ? "committed" : "draft";
  j["created_ns"] = v.created_ns;
  j["committed_ns"] = v.committed_ns;
  j["author"] = v.author;
  if (v.owner) j["owner"] = {v.owner->first, v.owner->second};
  j["message"] = v.message;
  j["metadata"] = json::parse(v.metadata_json, nullptr, false);
  if (j["metadata"].is_discarded()) j["metadata"] = json::object();
  j["seq"] = v.seq;
  j["predecessor"] = v.predecessor ? json(*v.predecessor) : json(nullptr);
  j["parents"] = json::array();
  for (const auto& p : v.parents) {
    j["parents"].push_back({{"model", p.parent.model},
                            {"version", p.parent.version},
                            {"relation", RelationName(p.relation)},
                            {"tombstone", p.tombstone},
                            {"content_id", p.content_id}});
  }
  j["files"] = json::object();
  for (const auto& [name, f] : v.files) {
    j["files"][name] = {{"digest", f.digest.Hex()}, {"size", f.size}};
  }
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

namespace {
// Integers of a record, refusing floats and out-of-range values (a damaged
// record must be Corruption, never undefined behaviour).
int64_t IntAt(const json& j, const char* key) {
  const json& v = j.at(key);
  if (v.is_number_integer()) return v.get<int64_t>();
  throw json::type_error::create(302, std::string(key) + " is not an integer", &v);
}
uint64_t UintAt(const json& j, const char* key) {
  const json& v = j.at(key);
  if (v.is_number_unsigned()) return v.get<uint64_t>();
  if (v.is_number_integer() && v.get<int64_t>() >= 0)
    return static_cast<uint64_t>(v.get<int64_t>());
  throw json::type_error::create(302, std::string(key) + " is not a non-negative integer", &v);
}
}  // namespace

Result<Version> DecodeVersion(std::string_view s) {
  json j = json::parse(s, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return Status::Corruption("malformed version record");
  try {
    Version v;
    v.key.model = j.at("model").get<std::string>();
    v.key.version = j.at("name").get<std::string>();
    v.state = j.at("state").get<std::string>() == "committed" ? State::kCommitted : State::kDraft;
    v.created_ns = IntAt(j, "created_ns");
    v.committed_ns = IntAt(j, "committed_ns");
    v.author = j.at("author").get<std::string>();
    if (j.contains("owner")) {  // absent in records written before owners were kept
      const json& o = j.at("owner");
      if (!o.is_array() || o.size() != 2 || !o[0].is_number_unsigned() ||
          !o[1].is_number_unsigned() || o[0].get<uint64_t>() > UINT32_MAX ||
          o[1].get<uint64_t>() > UINT32_MAX) {
        return Status::Corruption("malformed version record: owner is not [uid, gid]");
      }
      v.owner = {o[0].get<uint32_t>(), o[1].get<uint32_t>()};
    }
    v.message = j.at("message").get<std::string>();
    v.metadata_json = j.at("metadata").dump();
    v.seq = UintAt(j, "seq");
    if (!j.at("predecessor").is_null()) v.predecessor = j.at("predecessor").get<std::string>();
    for (const auto& p : j.at("parents")) {
      ParentEdge e;
      e.parent = {p.at("model").get<std::string>(), p.at("version").get<std::string>()};
      auto r = ParseRelation(p.at("relation").get<std::string>());
      e.relation = r ? *r : Relation::kOther;
      e.tombstone = p.at("tombstone").get<bool>();
      e.content_id = p.at("content_id").get<std::string>();
      v.parents.push_back(std::move(e));
    }
    for (const auto& [name, f] : j.at("files").items()) {
      auto d = Digest::FromHex(f.at("digest").get<std::string>());
      if (!d) return Status::Corruption("malformed file digest in version record");
      v.files[name] = FileEntry{*d, UintAt(f, "size")};
    }
    return v;
  } catch (const json::exception& e) {
    return Status::Corruption(std::string("malformed version record: ") + e.what());
  }
}

std::string EncodeModel(const Model& m) {
  json j;
  j["format"] = 1;
  j["name"] = m.name;
  j["created_ns"] = m.created_ns;
  j["versions"] = m.versions;
  j["tags"] = m.tags;
  j["next_number"] = m.next_number;
  j["seq"] = m.seq;
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

Result<Model> DecodeModel(std::string_view s) {
  json j = json::parse(s, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return Status::Corruption("malformed model record");
  try {
    Model m;
    m.name = j.at("name").get<std::string>();
    m.created_ns = IntAt(j, "created_ns");
    m.versions = j.at("versions").get<std::vector<std::string>>();
    m.tags = j.at("tags").get<std::map<std::string, std::string>>();
    m.next_number = UintAt(j, "next_number");
    m.seq = UintAt(j, "seq");
    return m;
  } catch (const json::exception& e) {
    return Status::Corruption(std::string("malformed model record: ") + e.what());
  }
}

// ---------------------------------------------------------------------------
// Models

Status Lineage::CreateModel(const std::string& name) {
  LFS_RETURN_IF_ERROR(ValidateName("model", name));
  return Mutate(store_, [&](WriteTxn& txn) -> Status {
    LFS_ASSIGN_OR_RETURN(auto v, txn.Get(Table::kModels, name));
    if (v) return Status::AlreadyExists("model '" + name + "' exists");
    Model m;
    m.name = name;
    m.created_ns = NowNs();
    LFS_ASSIGN_OR_RETURN(m.seq, NextSeq(txn));
    return StoreModel(txn, m);
  });
}

Status Lineage::RenameModel(const std::string& from, const std::string& to) {
  LFS_RETURN_IF_ERROR(ValidateName("model", to));
  return Mutate(store_, [&](WriteTxn& txn) -> Status {
    LFS_ASSIGN_OR_RETURN(Model m, LoadModel(txn, from));
    LFS_ASSIGN_OR_RETURN(auto exists, txn.Get(Table::kModels, to));
    if (exists) return Status::AlreadyExists("model '" + to + "' exists");
    // Rewrite every record that names the model: its versions, their
    // children entries, and the parent edges of versions derived from them.
    for (const auto& vn : m.versions) {
      VersionKey oldk{from, vn}, newk{to, vn};
      // Children entries keyed by this version, and the children's parent edges.
      std::vector<std::pair<std::string, std::string>> kids;
      LFS_RETURN_IF_ERROR(txn.ScanPrefix(Table::kChildren, ChildKeyPrefix(oldk),
                                         [&](std::string_view k, std::string_view val) {
                                           kids.emplace_back(std::string(k), std::string(val));
                                           return true;
                                         }));
      for (const auto& [k, val] : kids) {
        std::string child = k.substr(ChildKeyPrefix(oldk).size());
        size_t nul = child.find('\0');
        VersionKey stored{child.substr(0, nul), child.substr(nul + 1)};
        VersionKey renamed = stored;
        if (renamed.model == from) renamed.model = to;
        LFS_RETURN_IF_ERROR(txn.Del(Table::kChildren, k));
        LFS_RETURN_IF_ERROR(txn.Put(Table::kChildren, ChildKey(newk, renamed), val));
        LFS_ASSIGN_OR_RETURN(Version c, LoadVersion(txn, stored));
        for (auto& p : c.parents) {
          if (p.parent == oldk) p.parent = newk;
        }
        LFS_RETURN_IF_ERROR(StoreVersion(txn, c));
      }
      // Entries under this version's parents name it as a child.
      LFS_ASSIGN_OR_RETURN(Version cur, LoadVersion(txn, oldk));
      for (const auto& p : cur.parents) {
        if (p.tombstone) continue;
        VersionKey parent_old =
            p.parent.model == to ? VersionKey{from, p.parent.version} : p.parent;
        LFS_RETURN_IF_ERROR(txn.Del(Table::kChildren, ChildKey(parent_old, oldk)));
        LFS_RETURN_IF_ERROR(txn.Put(Table::kChildren, ChildKey(p.parent, newk),
                                    std::string(1, static_cast<char>(p.relation))));
      }
      cur.key = newk;
      LFS_RETURN_IF_ERROR(txn.Del(Table::kVersions, VersionDbKey(oldk)));
      LFS_RETURN_IF_ERROR(StoreVersion(txn, cur));
    }
    LFS_RETURN_IF_ERROR(txn.Del(Table::kModels, from));
    m.name = to;
    return StoreModel(txn, m);
  });
}

Status Lineage::RemoveModel(const std::string& name) {
  return Mutate(store_, [&](WriteTxn& txn) -> Status {
    LFS_ASSIGN_OR_RETURN(Model m, LoadModel(txn, name));
    if (!m.versions.empty()) {
      return Status::NotEmpty("model '" + name + "' still has " +
                              std::to_string(m.versions.size()) + " version(s)");
    }
    return txn.Del(Table::kModels, name);
  });
}

Result<Model> Lineage::GetModel(const std::string& name) const {
  ReadTxn txn(store_.db());
  return LoadModel(txn, name);
}

Result<std::vector<std::string>> Lineage::ListModels() const {
  ReadTxn txn(store_.db());
  std::vector<std::string> out;
  LFS_RETURN_IF_ERROR(txn.Scan(Table::kModels, "", [&](std::string_view k, std::string_view) {
    out.emplace_back(k);
    return true;
  }));
  return out;
}

Result<std::optional<std::string>> Lineage::Latest(const std::string& model) const {
  ReadTxn txn(store_.db());
  LFS_ASSIGN_OR_RETURN(Model m, LoadModel(txn, model));
  for (auto it = m.versions.rbegin(); it != m.versions.rend(); ++it) {
    LFS_ASSIGN_OR_RETURN(Version v, LoadVersion(txn, {model, *it}));
    if (v.committed()) return std::optional<std::string>(*it);
  }
  return std::optional<std::string>();
}

Status Lineage::Tag(const std::string& model, const std::string& tag, const std::string& version) {
  LFS_RETURN_IF_ERROR(ValidateName("tag", tag));
  if (tag == "latest") return Status::InvalidArgument("'latest' is maintained automatically");
  return Mutate(store_, [&](WriteTxn& txn) -> Status {
    LFS_ASSIGN_OR_RETURN(Model m, LoadModel(txn, model));
    LFS_ASSIGN_OR_RETURN(Version v, LoadVersion(txn, {model, version}));
    (void)v;
    m.tags[tag] = version;
    return StoreModel(txn, m);
  });
}

Status Lineage::Untag(const std::string& model, const std::string& tag) {
  return Mutate(store_, [&](WriteTxn& txn) -> Status {
    LFS_ASSIGN_OR_RETURN(Model m, LoadModel(txn, model));
    if (!m.tags.erase(tag)) return Status::NotFound("model '" + model + "' has no tag " + tag);
    return StoreModel(txn, m);
  });
}

// ---------------------------------------------------------------------------
// Versions

namespace {
// Refuses parents that do not exist, are drafts, are the child itself, or
// descend from it (the graph stays acyclic).
Status CheckParents(const Txn& txn, const VersionKey& child, const std::vector<ParentSpec>& ps) {
  std::set<VersionKey> seen;
  for (const auto& p : ps) {
    if (!seen.insert(p.parent).second) {
      return Status::InvalidArgument(p.parent.str() + " is listed twice as a parent");
    }
    if (p.parent == child) {
      return Status::InvalidArgument("a version cannot be its own parent (cycle)");
    }
    LFS_ASSIGN_OR_RETURN(auto pv, txn.Get(Table::kVersions, VersionDbKey(p.parent)));
    if (!pv) return Status::InvalidArgument("parent " + p.parent.str() + " does not exist");
    LFS_ASSIGN_OR_RETURN(Version parent, DecodeVersion(*pv));
    if (!parent.committed()) {
      return Status::InvalidArgument("parent " + p.parent.str() + " is a draft; commit it first");
    }
    // Walk the parent's ancestors: meeting the child would close a cycle.
    std::deque<VersionKey> q{p.parent};
    std::set<VersionKey> visited;
    while (!q.empty()) {
      VersionKey k = q.front();
      q.pop_front();
      if (!visited.insert(k).second) continue;
      if (k == child) {
        return Status::InvalidArgument("making " + p.parent.str() + " a parent of " + child.str() +
                                       " would create a cycle");
      }
      LFS_ASSIGN_OR_RETURN(auto av, txn.Get(Table::kVersions, VersionDbKey(k)));
      if (!av) continue;
      LFS_ASSIGN_OR_RETURN(Version a, DecodeVersion(*av));
      for (const auto& e : a.parents) {
        if (!e.tombstone) q.push_back(e.parent);
      }
    }
  }
  return Status::OK();
}

Status LinkParents(WriteTxn& txn, Version& v, const std::vector<ParentSpec>& ps) {
  for (const auto& old : v.parents) {
    if (!old.tombstone) LFS_RETURN_IF_ERROR(txn.Del(Table::kChildren, ChildKey(old.parent, v.key)));
  }
  v.parents.clear();
  for (const auto& p : ps) {
    LFS_ASSIGN_OR_RETURN(Version parent, LoadVersion(txn, p.parent));
    v.parents.push_back(ParentEdge{p.parent, p.relation, false, parent.ContentId().Hex()});
    LFS_RETURN_IF_ERROR(txn.Put(Table::kChildren, ChildKey(p.parent, v.key),
                                std::string(1, static_cast<char>(p.relation))));
  }
  return Status::OK();
}
}  // namespace

Result<Version> Lineage::CreateDraft(const std::string& model, const DraftOptions& opts) {
  LFS_RETURN_IF_ERROR(ValidateName("model", model));
  if (opts.name) {
    LFS_RETURN_IF_ERROR(ValidateName("version", *opts.name));
    if (*opts.name == "latest") return Status::InvalidArgument("'latest' is a reserved name");
  }
  {
    json md = json::parse(opts.metadata_json, nullptr, false);
    if (md.is_discarded() || !md.is_object()) {
      return Status::InvalidArgument("metadata must be a JSON object");
    }
  }
  Version out;
  LFS_RETURN_IF_ERROR(Mutate(store_, [&](WriteTxn& txn) -> Status {
    Model m;
    auto mr = LoadModel(txn, model);
    if (mr.ok()) {
      m = std::move(mr).value();
    } else if (mr.status().IsNotFound() && opts.create_model) {
      m.name = model;
      m.created_ns = NowNs();
      LFS_ASSIGN_OR_RETURN(m.seq, NextSeq(txn));
    } else {
      return mr.status();
    }
    Version v;
    if (opts.name) {
      v.key = {model, *opts.name};
    } else {
      // The first free v<N>.
      for (;; m.next_number++) {
        VersionKey k{model, "v" + std::to_string(m.next_number)};
        LFS_ASSIGN_OR_RETURN(auto e, txn.Get(Table::kVersions, VersionDbKey(k)));
        if (!e) {
          v.key = k;
          break;
        }
      }
    }
    LFS_ASSIGN_OR_RETURN(auto exists, txn.Get(Table::kVersions, VersionDbKey(v.key)));
    if (exists) return Status::AlreadyExists("version " + v.key.str() + " exists");
    LFS_RETURN_IF_ERROR(CheckParents(txn, v.key, opts.parents));
    v.created_ns = NowNs();
    v.author = opts.author;
    v.owner = opts.owner;
    v.message = opts.message;
    v.metadata_json = opts.metadata_json;
    if (opts.predecessor) {
      if (std::find(m.versions.begin(), m.versions.end(), *opts.predecessor) == m.versions.end()) {
        return Status::InvalidArgument("predecessor " + model + "/" + *opts.predecessor +
                                       " is not a version of " + model);
      }
      v.predecessor = opts.predecessor;
    } else if (!m.versions.empty()) {
      v.predecessor = m.versions.back();
    }
    LFS_ASSIGN_OR_RETURN(v.seq, NextSeq(txn));
    LFS_RETURN_IF_ERROR(LinkParents(txn, v, opts.parents));
    m.versions.push_back(v.key.version);
    if (!opts.name) m.next_number++;
    LFS_RETURN_IF_ERROR(StoreModel(txn, m));
    LFS_RETURN_IF_ERROR(StoreVersion(txn, v));
    out = v;
    return Status::OK();
  }));
  return out;
}

Result<Version> Lineage::GetVersion(const VersionKey& key) const {
  ReadTxn txn(store_.db());
  return LoadVersion(txn, key);
}

Result<std::vector<Version>> Lineage::ListVersions(const std::string& model) const {
  ReadTxn txn(store_.db());
  LFS_ASSIGN_OR_RETURN(Model m, LoadModel(txn, model));
  std::vector<Version> out;
  for (const auto& vn : m.versions) {
    LFS_ASSIGN_OR_RETURN(Version v, LoadVersion(txn, {model, vn}));
    out.push_back(std::move(v));
  }
  return out;
}

Status Lineage::SetParents(const VersionKey& key, const std::vector<ParentSpec>& parents) {
  return Mutate(store_, [&](WriteTxn& txn) -> Status {
    LFS_ASSIGN_OR_RETURN(Version v, LoadVersion(txn, key));
    LFS_RETURN_IF_ERROR(RequireDraft(v));
    LFS_RETURN_IF_ERROR(CheckParents(txn, key, parents));
    LFS_RETURN_IF_ERROR(LinkParents(txn, v, parents));
    return StoreVersion(txn, v);
  });
}

Status Lineage::SetMessage(const VersionKey& key, const std::string& message) {
  return Mutate(store_, [&](WriteTxn& txn) -> Status {
    LFS_ASSIGN_OR_RETURN(Version v, LoadVersion(txn, key));
    LFS_RETURN_IF_ERROR(RequireDraft(v));
    v.message = message;
    return StoreVersion(txn, v);
  });
}

Status Lineage::SetMetadata(const VersionKey& key, const std::string& js) {
  json md = json::parse(js, nullptr, false);
  if (md.is_discarded() || !md.is_object()) {
    return Status::InvalidArgument("metadata must be a JSON object");
  }
  return Mutate(store_, [&](WriteTxn& txn) -> Status {
    LFS_ASSIGN_OR_RETURN(Version v, LoadVersion(txn, key));
    LFS_RETURN_IF_ERROR(RequireDraft(v));
    v.metadata_json = md.dump();
    return StoreVersion(txn, v);
  });
}

Status Lineage::PutMetadataKey(const VersionKey& key, const std::string& name,
                               const std::string& js) {
  json val = json::parse(js, nullptr, false);
  if (val.is_discarded()) return Status::InvalidArgument("value is not JSON");
  return Mutate(store_, [&](WriteTxn& txn) -> Status {
    LFS_ASSIGN_OR_RETURN(Version v, LoadVersion(txn, key));
    json md = json::parse(v.metadata_json, nullptr, false);
    if (!md.is_object()) md = json::object();
    md[name] = val;
    v.metadata_json = md.dump();
    return StoreVersion(txn, v);
  });
}

Status Lineage::UpdateMetadata(const VersionKey& key,
                               const std::function<Status(std::string*)>& edit) {
  return Mutate(store_, [&](WriteTxn& txn) -> Status {
    LFS_ASSIGN_OR_RETURN(Version v, LoadVersion(txn, key));
    LFS_RETURN_IF_ERROR(edit(&v.metadata_json));
    return StoreVersion(txn, v);
  });
}

Result<DeltaBases> Lineage::BasesFor(const Version& v) const {
  DeltaBases bases;
  std::vector<std::pair<VersionKey, int>> sources;  // with their origin
  // The predecessor (the previous checkpoint of the same model) is usually
  // the closest relative of all: try it first.
  if (v.predecessor) {
    sources.emplace_back(VersionKey{v.key.model, *v.predecessor}, DeltaBases::kPredecessor);
  }
  int parent_index = 0;
  for (const auto& p : v.parents) {
    if (!p.tombstone) sources.emplace_back(p.parent, parent_index++);
  }
  // The draft's own files come first: a training run saving checkpoint after
  // checkpoint into one draft deltas each against the one before.
  for (const auto& [fname, fe] : v.files) {
    auto r = LoadFile(store_, fe.digest);
    if (!r.ok()) continue;
    for (const auto& t : r->tensors) bases.Add(t, DeltaBases::kOwnFiles);
  }
  for (const auto& [k, origin] : sources) {
    auto pv = GetVersion(k);
    if (!pv.ok()) continue;
    LFS_ASSIGN_OR_RETURN(auto idx, TensorIndex(*pv));
    for (const auto& [name, ref] : idx) bases.Add(ref, origin);
  }
  return bases;
}

Result<std::map<std::string, TensorRef>> Lineage::TensorIndex(const Version& v) const {
  std::map<std::string, TensorRef> out;
  for (const auto& [fname, fe] : v.files) {
    LFS_ASSIGN_OR_RETURN(FileRecipe r, LoadFile(store_, fe.digest));
    for (auto& t : r.tensors) {
      std::string name = out.count(t.name) ? fname + ":" + t.name : t.name;
      t.name = name;
      out.emplace(name, std::move(t));
    }
  }
  return out;
}

Result<IngestedFile> Lineage::AddFile(const VersionKey& key, const std::string& name,
                                      const formats::RandomAccess& src,
                                      const std::function<void(const std::string&)>& log,
                                      const std::function<void(uint64_t)>& progress) {
  LFS_RETURN_IF_ERROR(ValidateName("file", name));
  LFS_ASSIGN_OR_RETURN(Version v, GetVersion(key));
  LFS_RETURN_IF_ERROR(RequireDraft(v));
  LFS_ASSIGN_OR_RETURN(DeltaBases bases, BasesFor(v));
  LFS_ASSIGN_OR_RETURN(auto batch, store_.BeginWrite());
  IngestOptions io;
  io.bases = &bases;
  io.log = log;
  io.progress = progress;
  Ingester ing(*batch, io);
  LFS_ASSIGN_OR_RETURN(IngestedFile f, ing.AddFile(name, src));
  LFS_RETURN_IF_ERROR(batch->Commit([&](WriteTxn& txn) -> Status {
    LFS_RETURN_IF_ERROR(ing.Apply(txn));
    LFS_ASSIGN_OR_RETURN(Version cur, LoadVersion(txn, key));
    LFS_RETURN_IF_ERROR(RequireDraft(cur));
    LFS_RETURN_IF_ERROR(AdjustFileRefs(txn, f.digest, +1));
    auto old = cur.files.find(name);
    if (old != cur.files.end()) LFS_RETURN_IF_ERROR(AdjustFileRefs(txn, old->second.digest, -1));
    cur.files[name] = FileEntry{f.digest, f.size};
    return StoreVersion(txn, cur);
  }));
  return f;
}

Status Lineage::RemoveFile(const VersionKey& key, const std::string& name) {
  return Mutate(store_, [&](WriteTxn& txn) -> Status {
    LFS_ASSIGN_OR_RETURN(Version v, LoadVersion(txn, key));
    LFS_RETURN_IF_ERROR(RequireDraft(v));
    auto it = v.files.find(name);
    if (it == v.files.end()) return Status::NotFound(key.str() + " has no file '" + name + "'");
    LFS_RETURN_IF_ERROR(AdjustFileRefs(txn, it->second.digest, -1));
    v.files.erase(it);
    return StoreVersion(txn, v);
  });
}

Status Lineage::RenameFile(const VersionKey& key, const std::string& from, const std::string& to) {
  LFS_RETURN_IF_ERROR(ValidateName("file", to));
  return Mutate(store_, [&](WriteTxn& txn) -> Status {
    LFS_ASSIGN_OR_RETURN(Version v, LoadVersion(txn, key));
    LFS_RETURN_IF_ERROR(RequireDraft(v));
    auto it = v.files.find(from);
    if (it == v.files.end()) return Status::NotFound(key.str() + " has no file '" + from + "'");
    if (from == to) return Status::OK();
    FileEntry fe = it->second;
    v.files.erase(it);
    auto old = v.files.find(to);
    if (old != v.files.end()) LFS_RETURN_IF_ERROR(AdjustFileRefs(txn, old->second.digest, -1));
    v.files[to] = fe;
    return StoreVersion(txn, v);
  });
}

Status Lineage::Commit(const VersionKey& key) {
  return Mutate(store_, [&](WriteTxn& txn) -> Status {
    LFS_ASSIGN_OR_RETURN(Version v, LoadVersion(txn, key));
    if (v.committed()) return Status::InvalidArgument(key.str() + " is already committed");
    v.state = State::kCommitted;
    v.committed_ns = NowNs();
    return StoreVersion(txn, v);
  });
}

Status Lineage::RemoveVersion(const VersionKey& key, bool force) {
  return Mutate(store_, [&](WriteTxn& txn) -> Status {
    LFS_ASSIGN_OR_RETURN(Version v, LoadVersion(txn, key));
    std::vector<std::string> kids;
    LFS_RETURN_IF_ERROR(txn.ScanPrefix(Table::kChildren, ChildKeyPrefix(key),
                                       [&](std::string_view k, std::string_view) {
                                         kids.emplace_back(k.substr(ChildKeyPrefix(key).size()));
                                         return true;
                                       }));
    if (!kids.empty() && !force) {
      return Status::NotEmpty(key.str() + " has " + std::to_string(kids.size()) +
                              " derived version(s); remove them first or use --force");
    }
    std::string cid = v.ContentId().Hex();
    for (const auto& kid : kids) {
      size_t nul = kid.find('\0');
      VersionKey ck{kid.substr(0, nul), kid.substr(nul + 1)};
      LFS_ASSIGN_OR_RETURN(Version c, LoadVersion(txn, ck));
      for (auto& p : c.parents) {
        if (p.parent == key && !p.tombstone) {
          p.tombstone = true;
          if (v.committed()) p.content_id = cid;
        }
      }
      LFS_RETURN_IF_ERROR(StoreVersion(txn, c));
      LFS_RETURN_IF_ERROR(txn.Del(Table::kChildren, ChildKeyPrefix(key) + kid));
    }
    for (const auto& p : v.parents) {
      if (!p.tombstone) LFS_RETURN_IF_ERROR(txn.Del(Table::kChildren, ChildKey(p.parent, key)));
    }
    for (const auto& [name, fe] : v.files) {
      LFS_RETURN_IF_ERROR(AdjustFileRefs(txn, fe.digest, -1));
    }
    LFS_ASSIGN_OR_RETURN(Model m, LoadModel(txn, key.model));
    m.versions.erase(std::remove(m.versions.begin(), m.versions.end(), key.version),
                     m.versions.end());
    for (auto it = m.tags.begin(); it != m.tags.end();) {
      it = it->second == key.version ? m.tags.erase(it) : std::next(it);
    }
    LFS_RETURN_IF_ERROR(StoreModel(txn, m));
    return txn.Del(Table::kVersions, VersionDbKey(key));
  });
}

// ---------------------------------------------------------------------------
// Queries

Result<std::vector<std::pair<VersionKey, Relation>>> Lineage::Children(
    const VersionKey& key) const {
  ReadTxn txn(store_.db());
  std::vector<std::pair<VersionKey, Relation>> out;
  std::string prefix = ChildKeyPrefix(key);
  LFS_RETURN_IF_ERROR(
      txn.ScanPrefix(Table::kChildren, prefix, [&](std::string_view k, std::string_view v) {
        std::string kid(k.substr(prefix.size()));
        size_t nul = kid.find('\0');
        Relation r = v.empty() ? Relation::kOther : static_cast<Relation>(v[0]);
        out.push_back({{kid.substr(0, nul), kid.substr(nul + 1)}, r});
        return true;
      }));
  return out;
}

Result<std::vector<std::pair<VersionKey, Relation>>> Lineage::Ancestors(
    const VersionKey& key) const {
  ReadTxn txn(store_.db());
  std::vector<std::pair<VersionKey, Relation>> out;
  std::set<VersionKey> seen{key};
  std::deque<VersionKey> q{key};
  while (!q.empty()) {
    VersionKey k = q.front();
    q.pop_front();
    LFS_ASSIGN_OR_RETURN(auto raw, txn.Get(Table::kVersions, VersionDbKey(k)));
    if (!raw) continue;  // a tombstone
    LFS_ASSIGN_OR_RETURN(Version v, DecodeVersion(*raw));
    for (const auto& p : v.parents) {
      if (seen.insert(p.parent).second) {
        out.push_back({p.parent, p.relation});
        if (!p.tombstone) q.push_back(p.parent);
      }
    }
  }
  return out;
}

Result<std::vector<VersionKey>> Lineage::Descendants(const VersionKey& key) const {
  std::vector<VersionKey> out;
  std::set<VersionKey> seen{key};
  std::deque<VersionKey> q{key};
  while (!q.empty()) {
    VersionKey k = q.front();
    q.pop_front();
    LFS_ASSIGN_OR_RETURN(auto kids, Children(k));
    for (const auto& [c, r] : kids) {
      if (seen.insert(c).second) {
        out.push_back(c);
        q.push_back(c);
      }
    }
  }
  return out;
}

Result<std::vector<Lineage::Staleness>> Lineage::StaleReasons(const VersionKey& key) const {
  LFS_ASSIGN_OR_RETURN(auto ancestors, Ancestors(key));
  std::vector<Staleness> out;
  ReadTxn txn(store_.db());
  for (const auto& [a, rel] : ancestors) {
    auto m = LoadModel(txn, a.model);
    if (!m.ok()) continue;
    auto pos = std::find(m->versions.begin(), m->versions.end(), a.version);
    if (pos == m->versions.end()) continue;  // tombstone
    for (auto it = m->versions.rbegin(); it != m->versions.rend() && *it != a.version; ++it) {
      LFS_ASSIGN_OR_RETURN(Version nv, LoadVersion(txn, {a.model, *it}));
      if (nv.committed()) {
        out.push_back({a, *it});
        break;
      }
    }
  }
  return out;
}

}  // namespace lfs::lineage
