#include "lineage/sync.h"

#include <algorithm>
#include <deque>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

namespace lfs::lineage {

using json = nlohmann::json;

// ValidateName's limit: a clash name must stay a valid name.
constexpr size_t kMaxNameBytes = 255;

std::string ClashName(const std::string& version, const Digest& content_id, bool full) {
  std::string hex = content_id.Hex().substr(5);  // past "xxh3:"
  std::string suffix = "-" + (full ? hex : hex.substr(0, 8));
  // A long base is cut (at a UTF-8 character boundary) so the suffix fits.
  size_t keep = std::min(version.size(), kMaxNameBytes - suffix.size());
  while (keep > 0 && keep < version.size() &&
         (static_cast<unsigned char>(version[keep]) & 0xC0) == 0x80) {
    keep--;
  }
  return version.substr(0, keep) + suffix;
}

namespace {

std::string TestsOf(const Version& v) {
  json md = json::parse(v.metadata_json, nullptr, false);
  if (md.is_discarded() || !md.is_object() || !md.contains("tests")) return "";
  return md["tests"].dump();
}

// Sender versions to send, parents before children (creation order among equals).
Result<std::vector<const Version*>> Order(const std::map<VersionKey, Version>& sel) {
  std::map<VersionKey, int> pending;
  std::map<VersionKey, std::vector<VersionKey>> kids;
  std::set<std::pair<uint64_t, VersionKey>> ready;
  for (const auto& [k, v] : sel) {
    int n = 0;
    std::set<VersionKey> deps;
    for (const auto& p : v.parents) {
      if (p.tombstone) continue;
      if (!sel.count(p.parent)) {
        return Status::Corruption("the sender's " + k.str() + " names parent " + p.parent.str() +
                                  ", which it does not hold");
      }
      deps.insert(p.parent);
    }
    // A committed predecessor travels first, so its receiver name is known.
    if (v.predecessor && sel.count({k.model, *v.predecessor})) {
      deps.insert({k.model, *v.predecessor});
    }
    for (const auto& d : deps) {
      kids[d].push_back(k);
      n++;
    }
    pending[k] = n;
    if (n == 0) ready.insert({v.seq, k});
  }
  std::vector<const Version*> out;
  while (!ready.empty()) {
    VersionKey k = ready.begin()->second;
    ready.erase(ready.begin());
    out.push_back(&sel.at(k));
    for (const auto& c : kids[k]) {
      if (--pending[c] == 0) ready.insert({sel.at(c).seq, c});
    }
  }
  if (out.size() != sel.size()) return Status::Corruption("the sender's lineage has a cycle");
  return out;
}

class Syncer {
 public:
  Syncer(Remote& from, Remote& to, const SyncOptions& opts) : from_(from), to_(to), opts_(opts) {}

  Result<SyncStats> Run() {
    LFS_RETURN_IF_ERROR(Select());
    LFS_RETURN_IF_ERROR(TestDefinitions());
    LFS_ASSIGN_OR_RETURN(auto order, Order(sel_));
    for (const Version* v : order) {
      LFS_RETURN_IF_ERROR(One(*v).Annotate("sync of " + v->key.str() + " from " + from_.Describe() +
                                           " to " + to_.Describe()));
    }
    LFS_RETURN_IF_ERROR(Tags());
    return st_;
  }

 private:
  Status Select() {
    LFS_ASSIGN_OR_RETURN(auto models, from_.ListModels());
    std::map<VersionKey, Version> all;
    for (auto& m : models) {
      LFS_ASSIGN_OR_RETURN(auto vs, from_.ListVersions(m.name));
      for (auto& v : vs) {
        if (v.committed()) {
          all.emplace(v.key, std::move(v));
        } else if (!opts_.model || *opts_.model == m.name) {
          st_.drafts_skipped++;
        }
      }
      models_.emplace(m.name, std::move(m));
    }
    if (!opts_.model) {
      sel_ = std::move(all);
    } else {
      if (!models_.count(*opts_.model)) {
        return Status::NotFound("no model named '" + *opts_.model + "' in " + from_.Describe());
      }
      std::deque<VersionKey> q;
      for (const auto& [k, v] : all) {
        if (k.model == *opts_.model) q.push_back(k);
      }
      while (!q.empty()) {
        VersionKey k = q.front();
        q.pop_front();
        auto it = all.find(k);
        if (it == all.end() || sel_.count(k)) continue;
        for (const auto& p : it->second.parents) {
          if (!p.tombstone) q.push_back(p.parent);
        }
        sel_.emplace(k, it->second);
      }
    }
    st_.versions_selected = sel_.size();
    return Status::OK();
  }

  Status TestDefinitions() {
    LFS_ASSIGN_OR_RETURN(auto defs, from_.ListTestDefinitions());
    if (opts_.dry_run) {
      LFS_ASSIGN_OR_RETURN(auto theirs, to_.ListTestDefinitions());
      for (const auto& [name, def] : defs) {
        auto it = theirs.find(name);
        if (it == theirs.end()) {
          st_.test_defs_added++;
        } else if (it->second != def) {
          st_.test_def_clashes.push_back(name);
        }
      }
      return Status::OK();
    }
    LFS_ASSIGN_OR_RETURN(st_.test_def_clashes, to_.AddTestDefinitions(defs, &st_.test_defs_added));
    return Status::OK();
  }

  // The receiver's view of a version, including what a dry run has planned.
  Result<std::optional<Version>> Lookup(const VersionKey& k) {
    auto it = planned_versions_.find(k);
    if (it != planned_versions_.end()) return std::optional<Version>(it->second);
    return to_.FindVersion(k);
  }

  // The receiver's committed version of `model` holding content `cid` under
  // `name`, one of its clash names, or (a clash name coming back) the base
  // name it was made from.
  Result<std::optional<VersionKey>> FindSame(const std::string& model, const std::string& name,
                                             const Digest& cid) {
    auto same = [&](const std::optional<Version>& r) {
      return r && r->committed() && r->ContentId() == cid;
    };
    std::string hex = cid.Hex().substr(5);
    for (bool full : {false, true}) {
      std::string suffix = "-" + (full ? hex : hex.substr(0, 8));
      if (name.size() <= suffix.size() || !name.ends_with(suffix)) continue;
      VersionKey base{model, name.substr(0, name.size() - suffix.size())};
      LFS_ASSIGN_OR_RETURN(auto r, Lookup(base));
      if (same(r)) return std::optional<VersionKey>(base);
      // A clash name at the length limit may have had its base cut short:
      // look for the version whose clash name it is.
      if (name.size() + 3 < kMaxNameBytes) continue;
      std::vector<Version> theirs;
      auto listed = to_.ListVersions(model);
      if (listed.ok()) {
        theirs = std::move(listed).value();
      } else if (!listed.status().IsNotFound()) {
        return listed.status();
      }
      for (const auto& [k, pv] : planned_versions_) {
        if (k.model == model) theirs.push_back(pv);
      }
      for (const Version& r : theirs) {
        if (r.committed() && r.ContentId() == cid && ClashName(r.key.version, cid, full) == name) {
          return std::optional<VersionKey>(r.key);
        }
      }
    }
    for (const std::string& cand :
         {name, ClashName(name, cid, false), ClashName(name, cid, true)}) {
      LFS_ASSIGN_OR_RETURN(auto r, Lookup({model, cand}));
      if (same(r)) return std::optional<VersionKey>(VersionKey{model, cand});
    }
    return std::optional<VersionKey>();
  }

  // Where sender version v lives (or will live) on the receiver; *present
  // when it is already there. *fallback: the names to try, in order, should
  // the chosen one be taken by the time the receiver applies it.
  Result<VersionKey> Place(const Version& v, bool* present, std::vector<std::string>* fallback) {
    Digest cid = v.ContentId();
    *present = false;
    LFS_ASSIGN_OR_RETURN(auto found, FindSame(v.key.model, v.key.version, cid));
    if (found) {
      *present = true;
      return *found;
    }
    const std::string& name = v.key.version;
    std::vector<std::string> cands = {name, ClashName(name, cid, false),
                                      ClashName(name, cid, true)};
    for (size_t i = 0; i < cands.size(); i++) {
      LFS_ASSIGN_OR_RETURN(auto r, Lookup({v.key.model, cands[i]}));
      if (!r) {
        fallback->assign(cands.begin() + static_cast<ptrdiff_t>(i) + 1, cands.end());
        return VersionKey{v.key.model, cands[i]};
      }
    }
    return Status::AlreadyExists("no free name for " + v.key.str() + " on " + to_.Describe());
  }

  // The receiver's name for a parent edge: a live one follows its version; a
  // tombstone comes back to life when the receiver holds that parent.
  Status MapParent(ParentEdge* p) {
    if (!p->tombstone) {
      p->parent = mapped_.at(p->parent);
      return Status::OK();
    }
    auto cid = Digest::FromHex(p->content_id);
    if (!cid) return Status::OK();  // a removed draft: nothing to match
    LFS_ASSIGN_OR_RETURN(auto found, FindSame(p->parent.model, p->parent.version, *cid));
    if (found) {
      p->parent = *found;
      p->tombstone = false;
    }
    return Status::OK();
  }

  Status One(const Version& v) {
    bool present = false;
    std::vector<std::string> fallback;
    LFS_ASSIGN_OR_RETURN(VersionKey target, Place(v, &present, &fallback));
    mapped_[v.key] = target;
    if (present) {
      if (!(target == v.key)) st_.matched.push_back({v.key.str(), target.str()});
      st_.versions_present++;
      std::string tests = TestsOf(v);
      if (tests.empty()) return Status::OK();
      if (opts_.dry_run) {
        LFS_ASSIGN_OR_RETURN(auto r, Lookup(target));
        uint64_t n = 0;
        std::string ours = r ? TestsOf(*r) : "";
        (void)MergeTestsJson(ours.empty() ? "{}" : ours, tests, &n);
        st_.test_results_merged += n;
        return Status::OK();
      }
      LFS_ASSIGN_OR_RETURN(uint64_t n, to_.MergeTestResults(target, tests));
      st_.test_results_merged += n;
      if (n && opts_.log) {
        opts_.log("merged " + std::to_string(n) + " test result(s) into " + target.str());
      }
      return Status::OK();
    }
    VersionTransfer t;
    t.version = v;
    t.version.key = target;
    t.fallback_names = fallback;
    for (auto& p : t.version.parents) LFS_RETURN_IF_ERROR(MapParent(&p));
    // A predecessor that did not travel (a draft, or removed on the sender)
    // would name some other version on the receiver, or none: drop it.
    if (v.predecessor) {
      auto it = mapped_.find({v.key.model, *v.predecessor});
      t.version.predecessor.reset();
      if (it != mapped_.end()) t.version.predecessor = it->second.version;
    }
    t.model_created_ns = models_.at(v.key.model).created_ns;
    uint64_t frame_bytes_planned = 0;
    LFS_RETURN_IF_ERROR(Plan(v, &t, &frame_bytes_planned));
    if (opts_.dry_run) {
      if (!(target == v.key)) st_.renamed.push_back({v.key.str(), target.str()});
      planned_versions_[target] = t.version;
      st_.versions_sent++;
      st_.sent.push_back(target.str());
      st_.frame_bytes += frame_bytes_planned;
      st_.chunks_sent += t.frames.size();
      st_.files_sent += t.files.size();
      st_.tensors_sent += t.tensors.size();
      for (const auto& [d, f] : t.files) st_.record_bytes += f.Encode().size();
      for (const auto& [d, o] : t.tensors) st_.record_bytes += o.Encode().size();
      st_.record_bytes += EncodeVersion(t.version).size();
      return Status::OK();
    }
    t.fetch_frame = [this](const Digest& d) { return from_.ReadFrame(d); };
    LFS_ASSIGN_OR_RETURN(ApplyStats a, to_.ApplyVersion(t));
    // Another writer may have taken the name meanwhile: the receiver chose.
    if (!a.stored_as.empty()) target.version = a.stored_as;
    mapped_[v.key] = target;
    if (a.already_present) {
      st_.versions_present++;
      if (!(target == v.key)) st_.matched.push_back({v.key.str(), target.str()});
      return Status::OK();
    }
    if (!(target == v.key)) st_.renamed.push_back({v.key.str(), target.str()});
    st_.versions_sent++;
    st_.sent.push_back(target.str());
    st_.chunks_sent += a.frames;
    st_.frame_bytes += a.frame_bytes;
    st_.record_bytes += a.record_bytes;
    st_.files_sent += a.files;
    st_.tensors_sent += a.tensors;
    if (opts_.log) {
      opts_.log("sent " + v.key.str() + (target == v.key ? "" : " as " + target.str()) + ": " +
                std::to_string(a.frames) + " chunk(s), " + std::to_string(a.frame_bytes) +
                " frame bytes");
    }
    return Status::OK();
  }

  // Fills t with the records and chunks the receiver lacks for v.
  Status Plan(const Version& v, VersionTransfer* t, uint64_t* frame_bytes) {
    std::vector<Digest> files;
    for (const auto& [name, fe] : v.files) {
      if (std::find(files.begin(), files.end(), fe.digest) == files.end()) {
        files.push_back(fe.digest);
      }
    }
    LFS_ASSIGN_OR_RETURN(auto have_files, to_.HaveFiles(files));
    std::vector<Digest> chunks;
    std::set<Digest> chunk_seen;
    auto add_chunk = [&](const Digest& c) {
      if (chunk_seen.insert(c).second) chunks.push_back(c);
    };
    std::vector<Digest> tensors;
    std::set<Digest> tensor_seen;
    for (size_t i = 0; i < files.size(); i++) {
      if (have_files[i] || planned_files_.count(files[i])) continue;
      LFS_ASSIGN_OR_RETURN(FileRecipe f, from_.GetFile(files[i]));
      for (const auto& e : f.extents) {
        if (e.kind == Extent::Kind::kChunk) {
          add_chunk(e.digest);
        } else if (tensor_seen.insert(e.digest).second) {
          tensors.push_back(e.digest);
        }
      }
      t->files.emplace(files[i], std::move(f));
    }
    // Tensors the receiver lacks, and the tensors they derive from.
    for (size_t done = 0; done < tensors.size();) {
      std::vector<Digest> round(tensors.begin() + static_cast<ptrdiff_t>(done), tensors.end());
      done = tensors.size();
      LFS_ASSIGN_OR_RETURN(auto have, to_.HaveTensors(round));
      for (size_t i = 0; i < round.size(); i++) {
        if (have[i] || planned_tensors_.count(round[i])) continue;
        LFS_ASSIGN_OR_RETURN(TensorObject o, from_.GetTensor(round[i]));
        for (const Digest& c : o.chunks) add_chunk(c);
        if (o.derivation != Derivation::kNone && tensor_seen.insert(o.derived_from).second) {
          tensors.push_back(o.derived_from);
        }
        if (!o.derived_from2.empty() && tensor_seen.insert(o.derived_from2).second) {
          tensors.push_back(o.derived_from2);
        }
        t->tensors.emplace(round[i], std::move(o));
      }
    }
    // Delta bases, transitively.
    std::map<Digest, ChunkInfo> info;
    for (size_t done = 0; done < chunks.size();) {
      std::vector<Digest> round(chunks.begin() + static_cast<ptrdiff_t>(done), chunks.end());
      done = chunks.size();
      LFS_ASSIGN_OR_RETURN(auto stat, from_.StatChunks(round));
      for (size_t i = 0; i < round.size(); i++) {
        if (!stat[i]) {
          return Status::NotFound("the sender lacks chunk " + round[i].Hex() + " (run fsck on it)");
        }
        info[round[i]] = *stat[i];
        if (!stat[i]->base.empty()) add_chunk(stat[i]->base);
      }
    }
    LFS_ASSIGN_OR_RETURN(auto there, to_.StatChunks(chunks));
    std::set<Digest> missing;
    for (size_t i = 0; i < chunks.size(); i++) {
      if (!there[i] && !planned_chunks_.count(chunks[i])) missing.insert(chunks[i]);
    }
    // Each chunk counts once per run: one a version sent is not "present" for the next.
    for (const Digest& c : chunks) {
      if (!counted_.insert(c).second) continue;
      st_.chunks_needed++;
      if (!missing.count(c)) st_.chunks_present++;
    }
    // Bases before the chunks encoded against them.
    std::set<Digest> ordered;
    std::function<void(const Digest&)> visit = [&](const Digest& c) {
      if (!missing.count(c) || ordered.count(c)) return;
      ordered.insert(c);
      const Digest& b = info[c].base;
      if (!b.empty()) visit(b);
      t->frames.push_back(c);
      *frame_bytes += info[c].frame_len;
    };
    for (const Digest& c : chunks) visit(c);
    if (opts_.dry_run) {
      for (const auto& [d, f] : t->files) planned_files_.insert(d);
      for (const auto& [d, o] : t->tensors) planned_tensors_.insert(d);
      planned_chunks_.insert(missing.begin(), missing.end());
    }
    return Status::OK();
  }

  Status Tags() {
    std::set<std::string> models;
    for (const auto& [k, v] : sel_) models.insert(k.model);
    for (const auto& name : models) {
      std::map<std::string, std::string> tags;
      for (const auto& [tag, version] : models_.at(name).tags) {
        auto it = mapped_.find({name, version});
        if (it != mapped_.end()) tags[tag] = it->second.version;
      }
      if (tags.empty() || opts_.dry_run) continue;
      uint64_t added = 0;
      LFS_ASSIGN_OR_RETURN(auto clashes, to_.MergeTags(name, tags, &added));
      st_.tags_added += added;
      st_.tag_clashes.insert(st_.tag_clashes.end(), clashes.begin(), clashes.end());
    }
    return Status::OK();
  }

  Remote& from_;
  Remote& to_;
  const SyncOptions& opts_;
  SyncStats st_;
  std::map<std::string, Model> models_;
  std::map<VersionKey, Version> sel_;
  std::map<VersionKey, VersionKey> mapped_;  // sender key -> receiver key
  // Dry run: what earlier versions would have sent.
  std::map<VersionKey, Version> planned_versions_;
  std::set<Digest> planned_files_, planned_tensors_, planned_chunks_;
  std::set<Digest> counted_;  // chunks already in chunks_needed
};

}  // namespace

Result<SyncStats> Sync(Remote& from, Remote& to, const SyncOptions& opts) {
  return Syncer(from, to, opts).Run();
}

}  // namespace lfs::lineage
