#include "lineage/remote.h"

#include <algorithm>
#include <climits>
#include <nlohmann/json.hpp>
#include <set>
#include <unordered_map>

#include "store/coding.h"
#include "store/pack.h"

namespace lfs::lineage {

using json = nlohmann::json;

namespace {

Result<std::optional<Version>> FindVersionIn(const Txn& txn, const VersionKey& k) {
  LFS_ASSIGN_OR_RETURN(auto v, txn.Get(Table::kVersions, VersionDbKey(k)));
  if (!v) return std::optional<Version>();
  LFS_ASSIGN_OR_RETURN(Version ver, DecodeVersion(*v));
  return std::optional<Version>(std::move(ver));
}

// One writer-locked, atomic change of records (no frames).
Status Mutate(Store& store, const std::function<Status(WriteTxn&)>& fn) {
  LFS_ASSIGN_OR_RETURN(auto batch, store.BeginWrite());
  return batch->Commit(fn);
}

int64_t TimeNs(const json& result) {
  auto it = result.find("time_ns");
  if (it == result.end() || !it->is_number_integer()) return INT64_MIN;
  return it->get<int64_t>();
}

}  // namespace

std::string MergeTestsJson(const std::string& ours, const std::string& theirs, uint64_t* changed) {
  *changed = 0;
  json a = json::parse(ours, nullptr, false);
  json b = json::parse(theirs, nullptr, false);
  if (a.is_discarded() || !a.is_object()) a = json::object();
  if (b.is_discarded() || !b.is_object()) return a.dump();
  for (const auto& [name, result] : b.items()) {
    auto it = a.find(name);
    if (it == a.end() || TimeNs(result) > TimeNs(*it)) {
      a[name] = result;
      (*changed)++;
    }
  }
  return a.dump();
}

Result<std::unique_ptr<StoreRemote>> StoreRemote::Open(const std::string& path, bool read_only,
                                                       const StoreOptions& opts) {
  StoreOptions so = opts;
  so.read_only = read_only;
  LFS_ASSIGN_OR_RETURN(auto store, Store::Open(path, so));
  return std::unique_ptr<StoreRemote>(new StoreRemote(std::move(store)));
}

Result<std::vector<Model>> StoreRemote::ListModels() {
  ReadTxn txn(store_.db());
  std::vector<Model> out;
  Status bad;
  LFS_RETURN_IF_ERROR(txn.Scan(Table::kModels, "", [&](std::string_view, std::string_view v) {
    auto m = DecodeModel(v);
    if (!m.ok()) {
      bad = m.status();
      return false;
    }
    out.push_back(std::move(m).value());
    return true;
  }));
  LFS_RETURN_IF_ERROR(bad);
  return out;
}

Result<std::vector<Version>> StoreRemote::ListVersions(const std::string& model) {
  return Lineage(store_).ListVersions(model);
}

Result<std::optional<Version>> StoreRemote::FindVersion(const VersionKey& key) {
  ReadTxn txn(store_.db());
  return FindVersionIn(txn, key);
}

Result<std::vector<std::optional<ChunkInfo>>> StoreRemote::StatChunks(
    const std::vector<Digest>& chunks) {
  ReadTxn txn(store_.db());
  std::vector<std::optional<ChunkInfo>> out;
  out.reserve(chunks.size());
  for (const Digest& d : chunks) {
    LFS_ASSIGN_OR_RETURN(auto v, txn.Get(Table::kChunks, d.Encode()));
    if (!v) {
      out.emplace_back();
      continue;
    }
    LFS_ASSIGN_OR_RETURN(ChunkEntry e, ChunkEntry::Decode(*v));
    out.push_back(ChunkInfo{e.frame_len, e.raw_len, e.base});
  }
  return out;
}

Result<std::vector<bool>> StoreRemote::HaveFiles(const std::vector<Digest>& files) {
  ReadTxn txn(store_.db());
  std::vector<bool> out;
  for (const Digest& d : files) {
    LFS_ASSIGN_OR_RETURN(auto v, txn.Get(Table::kFiles, d.Encode()));
    out.push_back(v.has_value());
  }
  return out;
}

Result<std::vector<bool>> StoreRemote::HaveTensors(const std::vector<Digest>& tensors) {
  ReadTxn txn(store_.db());
  std::vector<bool> out;
  for (const Digest& d : tensors) {
    LFS_ASSIGN_OR_RETURN(auto v, txn.Get(Table::kTensors, d.Encode()));
    out.push_back(v.has_value());
  }
  return out;
}

Result<FileRecipe> StoreRemote::GetFile(const Digest& d) { return LoadFile(store_, d); }
Result<TensorObject> StoreRemote::GetTensor(const Digest& d) { return LoadTensor(store_, d); }

Result<std::string> StoreRemote::ReadFrame(const Digest& d) {
  // Gc may move the chunk between the lookup and the read: look up once more.
  for (int attempt = 0;; attempt++) {
    LFS_ASSIGN_OR_RETURN(auto e, store_.FindChunk(d));
    if (!e) return Status::NotFound("chunk " + d.Hex() + " is not in " + store_.path());
    auto frame = store_.ReadFrame(*e);
    if (frame.ok() || attempt == 1 || !frame.status().IsNotFound()) return frame;
  }
}

Result<std::map<std::string, std::string>> StoreRemote::ListTestDefinitions() {
  ReadTxn txn(store_.db());
  std::map<std::string, std::string> out;
  LFS_RETURN_IF_ERROR(
      txn.ScanPrefix(Table::kMeta, kTestDefPrefix, [&](std::string_view k, std::string_view v) {
        out.emplace(std::string(k.substr(sizeof(kTestDefPrefix) - 1)), std::string(v));
        return true;
      }));
  return out;
}

Result<ApplyStats> StoreRemote::ApplyVersion(const VersionTransfer& t) {
  Version v = t.version;
  LFS_RETURN_IF_ERROR(ValidateName("model", v.key.model));
  for (const auto& [name, fe] : v.files) LFS_RETURN_IF_ERROR(ValidateName("file", name));
  if (!v.committed()) return Status::InvalidArgument("only committed versions are transferred");
  ApplyStats st;
  // Under the writer lock nothing else changes this store: what is missing
  // and every reference count are decided from its own index, not the plan.
  LFS_ASSIGN_OR_RETURN(auto batch, store_.BeginWrite());
  std::vector<Digest> new_files;
  std::map<Digest, const TensorObject*> new_tensors;
  std::unordered_map<Digest, int64_t> chunk_refs;
  std::set<Digest> frames_offered(t.frames.begin(), t.frames.end());
  // Raw lengths the new records require of their chunks: exact for tensor
  // chunks, at least this much for generic extents. Checked once the frames
  // are in (a new chunk's length is known from its verified frame only).
  std::map<Digest, uint64_t> chunk_len_exact, chunk_len_min;
  {
    ReadTxn txn(store_.db());
    // The name is chosen here, under the lock: a concurrent sync may have
    // taken the planned one since.
    std::vector<std::string> names = {v.key.version};
    names.insert(names.end(), t.fallback_names.begin(), t.fallback_names.end());
    bool chosen = false;
    for (const std::string& name : names) {
      LFS_RETURN_IF_ERROR(ValidateName("version", name));
      LFS_ASSIGN_OR_RETURN(auto existing, FindVersionIn(txn, {v.key.model, name}));
      if (!existing) {
        v.key.version = name;
        chosen = true;
        break;
      }
      if (existing->committed() && existing->ContentId() == v.ContentId()) {
        st.already_present = true;
        st.stored_as = name;
        return st;
      }
    }
    if (!chosen) {
      return Status::AlreadyExists(v.key.str() + " (and its clash names) appeared in " +
                                   store_.path() +
                                   " with other content during the sync; run it again");
    }
    st.stored_as = v.key.version;
    for (const auto& p : v.parents) {
      if (p.tombstone) continue;
      LFS_ASSIGN_OR_RETURN(auto pv, FindVersionIn(txn, p.parent));
      if (!pv || !pv->committed()) {
        return Status::InvalidArgument("parent " + p.parent.str() + " of " + v.key.str() +
                                       " is not a committed version of " + store_.path());
      }
    }
    if (v.predecessor) {
      // Only a hint (delta bases, "previous"): never keep a dangling name.
      LFS_ASSIGN_OR_RETURN(auto pv, FindVersionIn(txn, {v.key.model, *v.predecessor}));
      if (!pv) v.predecessor.reset();
    }
    auto in_index = [&](Table tab, const Digest& d) -> Result<bool> {
      LFS_ASSIGN_OR_RETURN(auto r, txn.Get(tab, d.Encode()));
      return r.has_value();
    };
    // Tensors the receiver lacks, with what they derive from.
    std::function<Status(const Digest&)> need_tensor = [&](const Digest& td) -> Status {
      if (new_tensors.count(td)) return Status::OK();
      LFS_ASSIGN_OR_RETURN(bool have, in_index(Table::kTensors, td));
      if (have) return Status::OK();
      auto it = t.tensors.find(td);
      if (it == t.tensors.end()) {
        return Status::InvalidArgument("the sender did not send tensor " + td.Hex());
      }
      new_tensors[td] = &it->second;
      for (const Digest& c : it->second.chunks) chunk_refs[c]++;
      if (it->second.derivation != Derivation::kNone && !it->second.derived_from.empty()) {
        LFS_RETURN_IF_ERROR(need_tensor(it->second.derived_from));
      }
      if (!it->second.derived_from2.empty()) {
        LFS_RETURN_IF_ERROR(need_tensor(it->second.derived_from2));
      }
      return Status::OK();
    };
    std::set<Digest> seen_files;
    for (const auto& [name, fe] : v.files) {
      if (!seen_files.insert(fe.digest).second) continue;
      LFS_ASSIGN_OR_RETURN(bool have, in_index(Table::kFiles, fe.digest));
      if (have) continue;
      auto it = t.files.find(fe.digest);
      if (it == t.files.end()) {
        return Status::InvalidArgument("the sender did not send file " + fe.digest.Hex());
      }
      if (it->second.size != fe.size) {
        return Status::Corruption("received file " + fe.digest.Hex() +
                                  " disagrees with its version record about its size");
      }
      new_files.push_back(fe.digest);
      for (const auto& e : it->second.extents) {
        if (e.kind == Extent::Kind::kChunk) {
          chunk_refs[e.digest]++;
        } else {
          LFS_RETURN_IF_ERROR(need_tensor(e.digest));
        }
      }
    }
    for (const auto& [c, n] : chunk_refs) {
      LFS_ASSIGN_OR_RETURN(bool have, in_index(Table::kChunks, c));
      if (!have && !frames_offered.count(c)) {
        return Status::InvalidArgument("the sender did not send chunk " + c.Hex());
      }
    }
    // Structure of the new records, before anything is written: readers
    // trust these records (offsets, sizes, derivation sources).
    std::map<Digest, TensorObject> held;  // the receiver's own tensors the checks need
    auto tensor_of = [&](const Digest& d) -> Result<const TensorObject*> {
      auto n = new_tensors.find(d);
      if (n != new_tensors.end()) return n->second;
      auto h = held.find(d);
      if (h == held.end()) {
        LFS_ASSIGN_OR_RETURN(auto r, ::lfs::GetTensor(txn, d));
        if (!r) return Status::Corruption("received records name tensor " + d.Hex() + ", unknown");
        h = held.emplace(d, std::move(*r)).first;
      }
      return &h->second;
    };
    for (const auto& [digest, o] : new_tensors) {
      // A copy: C++20 lambdas (clang) cannot capture structured bindings.
      const Digest d = digest;
      auto bad = [&](const std::string& why) {
        return Status::Corruption("received tensor " + d.Hex() + " is inconsistent: " + why);
      };
      // The checks the store applies to its own records (chunk count, derivation kind).
      auto round = TensorObject::Decode(o->Encode());
      if (!round.ok()) return bad(std::string(round.status().message()));
      const bool derived = o->derivation != Derivation::kNone;
      if (derived == o->derived_from.empty()) return bad("derivation source missing or stray");
      if ((o->derivation == Derivation::kMean2) == o->derived_from2.empty()) {
        return bad("second derivation source missing or stray");
      }
      if (derived) {
        const size_t tw = formats::DTypeSize(o->to_dtype), fw = formats::DTypeSize(o->from_dtype);
        if (tw == 0 || fw == 0 || o->nbytes % tw != 0) return bad("not whole elements");
        const uint64_t numel = o->nbytes / tw;
        const bool per_row = o->derivation == Derivation::kQScale;
        if (per_row && numel > UINT64_MAX / fw / o->row_len) return bad("rows too long");
        const uint64_t want = per_row ? numel * o->row_len * fw : numel * fw;
        for (const Digest* src : {&o->derived_from, &o->derived_from2}) {
          if (src->empty()) continue;
          if (*src == d) return bad("derives from itself");
          LFS_ASSIGN_OR_RETURN(const TensorObject* s, tensor_of(*src));
          if (s->nbytes != want) return bad("a derivation source of another size");
        }
      }
      for (size_t i = 0; i < o->chunks.size(); i++) {
        uint64_t len = std::min<uint64_t>(o->chunk_bytes, o->nbytes - i * o->chunk_bytes);
        auto [it, fresh] = chunk_len_exact.emplace(o->chunks[i], len);
        if (!fresh && it->second != len) return bad("a chunk of two lengths");
      }
    }
    for (const Digest& d : new_files) {
      const FileRecipe& f = t.files.at(d);
      auto bad = [&](const std::string& why) {
        return Status::Corruption("received file " + d.Hex() + " is inconsistent: " + why);
      };
      auto round = FileRecipe::Decode(f.Encode());
      if (!round.ok()) return bad(std::string(round.status().message()));
      uint64_t sum = 0;
      for (const auto& e : f.extents) {
        if (e.length > UINT64_MAX - sum || e.object_offset > UINT64_MAX - e.length) {
          return bad("extent lengths overflow");
        }
        sum += e.length;
        const uint64_t end = e.object_offset + e.length;
        if (e.kind == Extent::Kind::kTensor) {
          LFS_ASSIGN_OR_RETURN(const TensorObject* o, tensor_of(e.digest));
          if (end > o->nbytes) return bad("an extent reaches past its tensor");
        } else {
          uint64_t& m = chunk_len_min[e.digest];
          m = std::max(m, end);
        }
      }
      if (sum != f.size) return bad("its extents do not add up to its size");
      // Tensor views (read by the mount) stay inside objects the file holds.
      std::set<Digest> objects;
      for (const auto& e : f.extents) {
        if (e.kind == Extent::Kind::kTensor) objects.insert(e.digest);
      }
      for (const auto& tr : f.tensors) {
        if (tr.object.empty()) continue;
        if (!objects.count(tr.object)) return bad("a tensor view of an object it does not hold");
        LFS_ASSIGN_OR_RETURN(const TensorObject* o, tensor_of(tr.object));
        if (tr.object_offset > o->nbytes || tr.nbytes > o->nbytes - tr.object_offset) {
          return bad("a tensor view reaches past its object");
        }
      }
    }
  }
  // Frames: verified one by one as they arrive, appended, made durable at Commit.
  std::map<Digest, uint64_t> arrived_len;
  for (const Digest& d : t.frames) {
    LFS_ASSIGN_OR_RETURN(auto have, store_.FindChunk(d));
    if (have) continue;
    LFS_ASSIGN_OR_RETURN(std::string frame, t.fetch_frame(d));
    LFS_ASSIGN_OR_RETURN(bool added, batch->PutFrame(d, frame));
    if (added) {
      st.frames++;
      st.frame_bytes += frame.size();
      FrameHeader h;
      std::string_view payload;
      LFS_RETURN_IF_ERROR(DecodeFrame(frame, &h, &payload));  // verified by PutFrame
      arrived_len[d] = h.raw_len;
    }
  }
  // Chunk lengths the records rely on (a tensor's chunk i holds bytes
  // [i*chunk_bytes, ...); an extent reads inside its chunk).
  auto raw_len = [&](const Digest& c) -> Result<uint64_t> {
    auto it = arrived_len.find(c);
    if (it != arrived_len.end()) return it->second;
    LFS_ASSIGN_OR_RETURN(auto e, store_.FindChunk(c));
    if (!e) return Status::InvalidArgument("the sender did not send chunk " + c.Hex());
    return e->raw_len;
  };
  for (const auto& [c, len] : chunk_len_exact) {
    LFS_ASSIGN_OR_RETURN(uint64_t have, raw_len(c));
    if (have != len) {
      return Status::Corruption("received tensor records need chunk " + c.Hex() + " to hold " +
                                std::to_string(len) + " bytes; it holds " + std::to_string(have));
    }
  }
  for (const auto& [c, len] : chunk_len_min) {
    LFS_ASSIGN_OR_RETURN(uint64_t have, raw_len(c));
    if (have < len) {
      return Status::Corruption("a received file reads past the end of chunk " + c.Hex());
    }
  }
  for (const auto& [c, n] : chunk_refs) batch->AddRef(c, n);
  LFS_RETURN_IF_ERROR(batch->Commit([&](WriteTxn& txn) -> Status {
    // Records first (counted from zero), then the references that hold them.
    for (const auto& [d, tp] : new_tensors) {
      TensorObject to = *tp;
      to.refs = 0;
      std::string enc = to.Encode();
      st.record_bytes += enc.size();
      st.tensors++;
      LFS_RETURN_IF_ERROR(txn.Put(Table::kTensors, d.Encode(), enc));
    }
    for (const Digest& d : new_files) {
      FileRecipe f = t.files.at(d);
      f.refs = 0;
      std::string enc = f.Encode();
      st.record_bytes += enc.size();
      st.files++;
      LFS_RETURN_IF_ERROR(txn.Put(Table::kFiles, d.Encode(), enc));
    }
    for (const auto& [d, tp] : new_tensors) {
      if (tp->derivation != Derivation::kNone) {
        LFS_RETURN_IF_ERROR(AdjustTensorRefs(txn, tp->derived_from, +1));
      }
      if (!tp->derived_from2.empty()) {
        LFS_RETURN_IF_ERROR(AdjustTensorRefs(txn, tp->derived_from2, +1));
      }
    }
    for (const Digest& d : new_files) {
      for (const auto& e : t.files.at(d).extents) {
        if (e.kind == Extent::Kind::kTensor) {
          LFS_RETURN_IF_ERROR(AdjustTensorRefs(txn, e.digest, +1));
        }
      }
    }
    for (const auto& [name, fe] : v.files) LFS_RETURN_IF_ERROR(AdjustFileRefs(txn, fe.digest, +1));
    // The lineage records.
    Model m;
    LFS_ASSIGN_OR_RETURN(auto mv, txn.Get(Table::kModels, v.key.model));
    if (mv) {
      LFS_ASSIGN_OR_RETURN(m, DecodeModel(*mv));
    } else {
      m.name = v.key.model;
      m.created_ns = t.model_created_ns;
      LFS_ASSIGN_OR_RETURN(m.seq, NextSeq(txn));
    }
    // Creation order across both stores, so `latest` stays the newest
    // version even when an older one arrives late (under a clash name, say).
    auto pos = m.versions.end();
    for (auto it = m.versions.begin(); it != m.versions.end(); ++it) {
      LFS_ASSIGN_OR_RETURN(auto other, FindVersionIn(txn, {m.name, *it}));
      if (other && other->created_ns > v.created_ns) {
        pos = it;
        break;
      }
    }
    m.versions.insert(pos, v.key.version);
    LFS_RETURN_IF_ERROR(txn.Put(Table::kModels, m.name, EncodeModel(m)));
    Version out = v;
    LFS_ASSIGN_OR_RETURN(out.seq, NextSeq(txn));
    std::string enc = EncodeVersion(out);
    st.record_bytes += enc.size();
    LFS_RETURN_IF_ERROR(txn.Put(Table::kVersions, VersionDbKey(out.key), enc));
    for (const auto& p : out.parents) {
      if (p.tombstone) continue;
      LFS_RETURN_IF_ERROR(txn.Put(Table::kChildren, ChildDbKey(p.parent, out.key),
                                  std::string(1, static_cast<char>(p.relation))));
    }
    return Status::OK();
  }));
  return st;
}

Result<uint64_t> StoreRemote::MergeTestResults(const VersionKey& key,
                                               const std::string& tests_json) {
  uint64_t changed = 0;
  LFS_RETURN_IF_ERROR(Mutate(store_, [&](WriteTxn& txn) -> Status {
    LFS_ASSIGN_OR_RETURN(auto v, FindVersionIn(txn, key));
    if (!v) return Status::NotFound("no version " + key.str());
    json md = json::parse(v->metadata_json, nullptr, false);
    if (md.is_discarded() || !md.is_object()) md = json::object();
    std::string ours = md.contains("tests") ? md["tests"].dump() : "{}";
    std::string merged = MergeTestsJson(ours, tests_json, &changed);
    if (changed == 0) return Status::OK();
    md["tests"] = json::parse(merged);
    v->metadata_json = md.dump();
    return txn.Put(Table::kVersions, VersionDbKey(key), EncodeVersion(*v));
  }));
  return changed;
}

Result<std::vector<std::string>> StoreRemote::AddTestDefinitions(
    const std::map<std::string, std::string>& defs, uint64_t* added) {
  *added = 0;
  std::vector<std::string> clashes;
  if (defs.empty()) return clashes;
  LFS_RETURN_IF_ERROR(Mutate(store_, [&](WriteTxn& txn) -> Status {
    *added = 0;
    clashes.clear();
    for (const auto& [name, def] : defs) {
      std::string key = std::string(kTestDefPrefix) + name;
      LFS_ASSIGN_OR_RETURN(auto cur, txn.Get(Table::kMeta, key));
      if (!cur) {
        LFS_RETURN_IF_ERROR(txn.Put(Table::kMeta, key, def));
        (*added)++;
      } else if (*cur != def) {
        clashes.push_back(name);
      }
    }
    return Status::OK();
  }));
  return clashes;
}

Result<std::vector<std::string>> StoreRemote::MergeTags(
    const std::string& model, const std::map<std::string, std::string>& tags, uint64_t* added) {
  *added = 0;
  std::vector<std::string> clashes;
  if (tags.empty()) return clashes;
  LFS_RETURN_IF_ERROR(Mutate(store_, [&](WriteTxn& txn) -> Status {
    *added = 0;
    clashes.clear();
    LFS_ASSIGN_OR_RETURN(auto mv, txn.Get(Table::kModels, model));
    if (!mv) return Status::NotFound("no model named '" + model + "'");
    LFS_ASSIGN_OR_RETURN(Model m, DecodeModel(*mv));
    for (const auto& [tag, version] : tags) {
      auto it = m.tags.find(tag);
      if (it == m.tags.end()) {
        LFS_ASSIGN_OR_RETURN(auto v, FindVersionIn(txn, {model, version}));
        if (!v) continue;  // its version did not travel
        m.tags[tag] = version;
        (*added)++;
      } else if (it->second != version) {
        clashes.push_back(model + ":" + tag);
      }
    }
    if (*added == 0) return Status::OK();
    return txn.Put(Table::kModels, model, EncodeModel(m));
  }));
  return clashes;
}

}  // namespace lfs::lineage
