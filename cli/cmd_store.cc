// init, import, export, cat, du, fsck, gc.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "cli/cli.h"
#include "lineage/check.h"
#include "store/coding.h"
#include "store/fsck.h"
#include "store/ingest.h"
#include "store/log.h"
#include "store/pack.h"

namespace lfs::cli {

namespace fs = std::filesystem;
using lineage::Lineage;
using lineage::ParentSpec;
using lineage::Relation;
using lineage::VersionKey;

namespace {

// A string field of a manifest entry; missing or null gives the default.
std::string Str(const json& j, const char* key, const std::string& def = "") {
  auto it = j.find(key);
  return it == j.end() || !it->is_string() ? def : it->get<std::string>();
}

uint64_t PackBytes(const Store& store) {
  uint64_t total = 0;
  ReadTxn txn(store.db());
  (void)txn.Scan(Table::kPacks, "", [&](std::string_view, std::string_view v) {
    auto p = PackEntry::Decode(v);
    if (p.ok()) total += p->length;
    return true;
  });
  return total;
}

// base_model / base_model_relation from a Hugging Face model card's front matter.
struct ModelCard {
  std::vector<std::string> base_models;
  std::string relation;
};
ModelCard ReadModelCard(const fs::path& dir) {
  ModelCard card;
  std::ifstream in(dir / "README.md");
  std::string line;
  if (!std::getline(in, line) || line != "---") return card;
  bool in_list = false;
  auto trim = [](std::string s) {
    s.erase(0, s.find_first_not_of(" \t\"'"));
    s.erase(s.find_last_not_of(" \t\"'\r") + 1);
    return s;
  };
  while (std::getline(in, line) && line != "---") {
    if (in_list && line.rfind("  -", 0) == 0) {
      card.base_models.push_back(trim(line.substr(3)));
      continue;
    }
    if (in_list && line.rfind("-", 0) == 0) {
      card.base_models.push_back(trim(line.substr(1)));
      continue;
    }
    in_list = false;
    if (line.rfind("base_model:", 0) == 0) {
      std::string v = trim(line.substr(11));
      if (v.empty()) {
        in_list = true;
      } else {
        card.base_models.push_back(v);
      }
    } else if (line.rfind("base_model_relation:", 0) == 0) {
      card.relation = trim(line.substr(20));
    }
  }
  return card;
}

// Streams a stored file to out, checking the bytes against the file's digest.
Status CopyOut(Store& store, const lineage::FileEntry& fe, FILE* out, const std::string& what) {
  LFS_ASSIGN_OR_RETURN(auto reader, FileReader::Open(store, fe.digest));
  std::string buf(4 << 20, '\0');
  Hasher h;
  for (uint64_t off = 0; off < fe.size;) {
    LFS_ASSIGN_OR_RETURN(size_t n, reader->ReadAt(off, buf.size(), buf.data()));
    if (n == 0) return Status::Corruption(what + " is shorter than recorded");
    h.Update(buf.data(), n);
    if (std::fwrite(buf.data(), 1, n, out) != n) return Status::IOError("write error on " + what);
    off += n;
  }
  if (h.Finish() != fe.digest) return Status::Corruption(what + " does not match its digest");
  return Status::OK();
}

}  // namespace

Result<json> ImportOne(Lineage& lin, const ImportRequest& req, bool quiet) {
  fs::path src(req.path);
  std::error_code ec;
  std::vector<fs::path> files;
  if (fs::is_directory(src, ec)) {
    for (const auto& e : fs::directory_iterator(src, ec)) {
      if (e.is_regular_file()) {
        files.push_back(e.path());
      } else if (e.is_directory()) {
        LogWarn("import: skipping subdirectory " + e.path().string() +
                " (versions hold a flat set of files)");
      }
    }
    std::sort(files.begin(), files.end());
  } else if (fs::is_regular_file(src, ec)) {
    files.push_back(src);
  } else {
    return Status::NotFound(req.path + " is neither a file nor a directory");
  }
  // Parents: explicit, else a model card's base_model naming a model we hold.
  std::vector<ParentSpec> parents;
  auto rel = lineage::ParseRelation(req.relation);
  if (!rel) return Status::InvalidArgument("unknown relation '" + req.relation + "'");
  for (const auto& p : req.parents) {
    LFS_ASSIGN_OR_RETURN(VersionKey k, VersionKey::Parse(p));
    parents.push_back({k, *rel});
  }
  parents.insert(parents.end(), req.parent_specs.begin(), req.parent_specs.end());
  if (parents.empty() && fs::is_directory(src, ec)) {
    ModelCard card = ReadModelCard(src);
    Relation card_rel = *rel;
    if (!card.relation.empty()) {
      if (auto r = lineage::ParseRelation(card.relation)) card_rel = *r;
    }
    for (const auto& bm : card.base_models) {
      std::string name = bm.substr(bm.rfind('/') == std::string::npos ? 0 : bm.rfind('/') + 1);
      for (const auto& cand : {bm, name}) {
        if (!lineage::ValidateName("model", cand).ok()) continue;
        auto latest = lin.Latest(cand);
        if (latest.ok() && *latest) {
          parents.push_back({{cand, **latest}, card_rel});
          break;
        }
      }
    }
  }
  Lineage::DraftOptions dopts;
  dopts.name = req.version;
  dopts.author = req.author.empty() ? (getenv("USER") ? getenv("USER") : "") : req.author;
  dopts.message = req.message;
  dopts.parents = parents;
  dopts.create_model = true;
  dopts.predecessor = req.predecessor;
  json md = json::parse(req.metadata, nullptr, false);
  if (md.is_discarded() || !md.is_object()) {
    return Status::InvalidArgument("--metadata must be a JSON object");
  }
  if (!req.recipe.empty()) md["recipe"] = req.recipe;
  dopts.metadata_json = md.dump();
  LFS_ASSIGN_OR_RETURN(lineage::Version v, lin.CreateDraft(req.model, dopts));
  uint64_t before = PackBytes(lin.store());
  const auto t0 = std::chrono::steady_clock::now();
  uint64_t total = 0;
  for (const auto& f : files) total += fs::file_size(f, ec);
  Progress progress("importing " + v.key.str(), total);
  uint64_t done_before = 0;
  json out = {{"model", v.key.model}, {"version", v.key.version}, {"files", json::array()}};
  auto cleanup = [&](const Status& s) -> Status {
    (void)lin.RemoveVersion(v.key, false);  // never leave a half-imported draft
    return s;
  };
  for (const auto& f : files) {
    auto acc = EnvFileAccess::Open(Env::Default(), f.string());
    if (!acc.ok()) return cleanup(acc.status());
    auto r = lin.AddFile(
        v.key, f.filename().string(), **acc, [](const std::string& m) { LogWarn(m); },
        [&](uint64_t d) { progress.Update(done_before + d); });
    if (!r.ok()) return cleanup(r.status().Annotate(f.string()));
    done_before += r->size;
    out["files"].push_back({{"name", f.filename().string()},
                            {"size", r->size},
                            {"format", formats::FormatName(r->format)},
                            {"digest", r->digest.Hex()},
                            {"tensors", r->tensors},
                            {"tensors_deduplicated", r->tensors_deduped},
                            {"note", r->note}});
  }
  if (!req.draft) {
    Status s = lin.Commit(v.key);
    if (!s.ok()) return cleanup(s);
  }
  uint64_t after = PackBytes(lin.store());
  out["bytes_logical"] = total;
  out["bytes_stored_new"] = after - before;
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  out["seconds"] = secs;
  out["state"] = req.draft ? "draft" : "committed";
  json ps = json::array();
  for (const auto& p : parents) {
    ps.push_back({{"parent", p.parent.str()}, {"relation", lineage::RelationName(p.relation)}});
  }
  out["parents"] = ps;
  if (!quiet) {
    std::printf(
        "%s %s: %zu file(s), %s logical, %s new in the store (%.1f%%), %.2f s (%.0f MB/s)\n",
        req.draft ? "drafted" : "committed", v.key.str().c_str(), files.size(),
        HumanBytes(total).c_str(), HumanBytes(after - before).c_str(),
        total ? 100.0 * static_cast<double>(after - before) / static_cast<double>(total) : 0.0,
        secs, secs > 0 ? static_cast<double>(total) / 1e6 / secs : 0.0);
    std::fflush(stdout);  // one line per version as it lands, also through a pipe
  }
  return out;
}

void RegisterStoreCommands(CLI::App& app, int* rc) {
  // init
  {
    auto* c = app.add_subcommand("init", "create an empty store");
    auto store = std::make_shared<std::string>();
    c->add_option("STORE", *store, "store directory")->required();
    c->callback([=] {
      Status s = Store::Create(*store);
      if (!s.ok()) {
        *rc = Fail(s);
        return;
      }
      std::printf("initialised an empty lineagefs store in %s\n", store->c_str());
    });
  }
  // import
  {
    auto* c = app.add_subcommand("import", "import a checkpoint file or model folder as a version");
    auto store = std::make_shared<std::string>();
    auto req = std::make_shared<ImportRequest>();
    auto version = std::make_shared<std::string>();
    auto manifest = std::make_shared<std::string>();
    auto as_json = std::make_shared<bool>(false);
    c->add_option("STORE", *store, "store directory")->required();
    c->add_option("PATH", req->path, "file or directory to import");
    c->add_option("--model", req->model, "model name");
    c->add_option("--version", *version, "version name (default v<N>)");
    c->add_option("--parent", req->parents, "parent MODEL/VERSION (repeatable)");
    c->add_option("--relation", req->relation,
                  "finetune|quantize|prune|distill|adapter|merge|other")
        ->capture_default_str();
    c->add_option("-m,--message", req->message, "message");
    c->add_option("--author", req->author, "author (default $USER)");
    c->add_option("--metadata", req->metadata, "free-form JSON object");
    c->add_option("--recipe", req->recipe,
                  "command that produced it ({parent_path} and {out_path} placeholders)");
    c->add_flag("--draft", req->draft, "leave the version a draft");
    c->add_option("--manifest", *manifest, "replay a family manifest.json (make_family.py)");
    c->add_flag("--json", *as_json, "print JSON");
    c->callback([=] {
      auto o = OpenStore(*store);
      if (!o.ok()) {
        *rc = Fail(o.status());
        return;
      }
      if (!manifest->empty()) {
        std::ifstream in(*manifest);
        json m = json::parse(in, nullptr, false);
        if (m.is_discarded() || !m.contains("versions")) {
          *rc = Fail("cannot read manifest " + *manifest);
          return;
        }
        fs::path base = fs::path(*manifest).parent_path();
        json all = json::array();
        for (const auto& e : m["versions"]) {
          ImportRequest r;
          r.model = Str(e, "model");
          r.version = Str(e, "version");
          r.path = (base / Str(e, "path")).string();
          r.message = Str(e, "message");
          r.relation = Str(e, "relation", "finetune");
          r.recipe = Str(e, "recipe");
          if (e.contains("parents") && e["parents"].is_array()) {
            for (const auto& p : e["parents"]) {
              r.parents.push_back(Str(p, "model") + "/" + Str(p, "version"));
              r.relation = Str(p, "relation", r.relation);
            }
          }
          if (r.model.empty() || r.version->empty()) {
            *rc = Fail("manifest entry without model or version: " + e.dump());
            return;
          }
          auto existing = o->lineage->GetVersion({r.model, *r.version});
          if (existing.ok()) {
            if (!*as_json) std::printf("exists %s/%s\n", r.model.c_str(), r.version->c_str());
            continue;
          }
          auto res = ImportOne(*o->lineage, r, *as_json);
          if (!res.ok()) {
            *rc = Fail(res.status());
            return;
          }
          all.push_back(*res);
        }
        if (*as_json) std::printf("%s\n", all.dump(2).c_str());
        return;
      }
      if (req->path.empty() || req->model.empty()) {
        std::fprintf(stderr, "lineagefs import: PATH and --model are required (or --manifest)\n");
        *rc = kExitUsage;
        return;
      }
      ImportRequest r = *req;
      if (!version->empty()) r.version = *version;
      auto res = ImportOne(*o->lineage, r, *as_json);
      if (!res.ok()) {
        *rc = Fail(res.status());
        return;
      }
      if (*as_json) std::printf("%s\n", res->dump(2).c_str());
    });
  }
  // add: files into an existing draft (replacing files of the same name)
  {
    auto* c = app.add_subcommand("add", "add or replace files of a draft version");
    auto store = std::make_shared<std::string>(), ver = std::make_shared<std::string>();
    auto paths = std::make_shared<std::vector<std::string>>();
    c->add_option("STORE", *store)->required();
    c->add_option("MODEL/VERSION", *ver)->required();
    c->add_option("FILE", *paths, "files to add")->required();
    c->callback([=] {
      auto o = OpenStore(*store);
      if (!o.ok()) return void(*rc = Fail(o.status()));
      auto k = VersionKey::Parse(*ver);
      if (!k.ok()) return void(*rc = Fail(k.status()));
      for (const auto& p : *paths) {
        auto acc = EnvFileAccess::Open(Env::Default(), p);
        if (!acc.ok()) return void(*rc = Fail(acc.status()));
        auto r = o->lineage->AddFile(*k, fs::path(p).filename().string(), **acc,
                                     [](const std::string& m) { LogWarn(m); });
        if (!r.ok()) return void(*rc = Fail(r.status().Annotate(p)));
        std::printf("added %s to %s (%s, %s)\n", fs::path(p).filename().c_str(), k->str().c_str(),
                    formats::FormatName(r->format), HumanBytes(r->size).c_str());
      }
    });
  }
  // export
  {
    auto* c = app.add_subcommand("export", "write a version's original files to a directory");
    auto store = std::make_shared<std::string>(), ver = std::make_shared<std::string>(),
         dest = std::make_shared<std::string>();
    c->add_option("STORE", *store)->required();
    c->add_option("MODEL/VERSION", *ver)->required();
    c->add_option("DEST", *dest)->required();
    c->callback([=] {
      auto o = OpenStore(*store, true);
      if (!o.ok()) return void(*rc = Fail(o.status()));
      auto k = VersionKey::Parse(*ver);
      if (!k.ok()) return void(*rc = Fail(k.status()));
      auto v = o->lineage->GetVersion(*k);
      if (!v.ok()) return void(*rc = Fail(v.status()));
      std::error_code ec;
      fs::create_directories(*dest, ec);
      if (ec) return void(*rc = Fail("cannot create " + *dest + ": " + ec.message()));
      for (const auto& [name, fe] : v->files) {
        std::string path = *dest + "/" + name;
        FILE* out = std::fopen(path.c_str(), "wbe");
        if (!out) return void(*rc = Fail("cannot write " + path));
        Status st = CopyOut(*o->store, fe, out, path);
        if (std::fclose(out) != 0 && st.ok()) st = Status::IOError("write error on " + path);
        if (!st.ok()) return void(*rc = Fail(st));
      }
      std::printf("exported %s (%zu files) to %s\n", k->str().c_str(), v->files.size(),
                  dest->c_str());
    });
  }
  // cat
  {
    auto* c = app.add_subcommand("cat", "write one file of a version to stdout");
    auto store = std::make_shared<std::string>(), ver = std::make_shared<std::string>(),
         file = std::make_shared<std::string>();
    c->add_option("STORE", *store)->required();
    c->add_option("MODEL/VERSION", *ver)->required();
    c->add_option("FILE", *file)->required();
    c->callback([=] {
      auto o = OpenStore(*store, true);
      if (!o.ok()) return void(*rc = Fail(o.status()));
      auto k = VersionKey::Parse(*ver);
      if (!k.ok()) return void(*rc = Fail(k.status()));
      auto v = o->lineage->GetVersion(*k);
      if (!v.ok()) return void(*rc = Fail(v.status()));
      auto it = v->files.find(*file);
      if (it == v->files.end()) return void(*rc = Fail(k->str() + " has no file " + *file));
      Status st = CopyOut(*o->store, it->second, stdout, k->str() + "/" + *file);
      if (!st.ok()) return void(*rc = Fail(st));
    });
  }
  // fsck
  {
    auto* c = app.add_subcommand("fsck", "verify every chunk, object and reference");
    auto store = std::make_shared<std::string>();
    auto as_json = std::make_shared<bool>(false);
    c->add_option("STORE", *store)->required();
    c->add_flag("--json", *as_json);
    c->callback([=] {
      auto o = OpenStore(*store, true);
      if (!o.ok()) return void(*rc = Fail(o.status()));
      FsckReport rep;
      Status s = Fsck(*o->store, &rep);
      if (!s.ok()) return void(*rc = Fail(s));
      // The lineage tables against each other and the file records' counts.
      lineage::LineageCheck lc;
      Status ls = lineage::CheckLineage(*o->store, &lc);
      if (!ls.ok()) return void(*rc = Fail(ls));
      rep.errors.insert(rep.errors.end(), lc.errors.begin(), lc.errors.end());
      // Lineage: every version's files exist; name what bad chunks damage.
      std::vector<std::string> damaged;
      auto models = o->lineage->ListModels();
      if (!models.ok()) return void(*rc = Fail(models.status()));
      uint64_t versions = 0;
      for (const auto& m : *models) {
        auto model = o->lineage->GetModel(m);
        if (!model.ok()) {
          rep.errors.push_back("model " + m + ": " + model.status().ToString());
          damaged.push_back(m);
          continue;
        }
        // One version at a time: a damaged record names its version and
        // leaves the others checked.
        std::vector<lineage::Version> vs;
        for (const auto& vn : model->versions) {
          auto v = o->lineage->GetVersion({m, vn});
          if (!v.ok()) {
            rep.errors.push_back(m + "/" + vn + ": " + v.status().ToString());
            damaged.push_back(m + "/" + vn);
            continue;
          }
          vs.push_back(std::move(*v));
        }
        for (const auto& v : vs) {
          versions++;
          for (const auto& [name, fe] : v.files) {
            auto f = LoadFile(*o->store, fe.digest);
            if (!f.ok()) {
              rep.errors.push_back(v.key.str() + "/" + name + ": " + f.status().ToString());
              damaged.push_back(v.key.str() + "/" + name);
            } else if (rep.damaged_files.count(fe.digest)) {
              damaged.push_back(v.key.str() + "/" + name);
            }
          }
        }
      }
      if (*as_json) {
        json j = {{"ok", rep.ok()},
                  {"packs", rep.packs_checked},
                  {"chunks", rep.chunks_checked},
                  {"tensors", rep.tensors_checked},
                  {"files", rep.files_checked},
                  {"versions", versions},
                  {"errors", rep.errors},
                  {"damaged", damaged}};
        std::printf("%s\n", j.dump(2).c_str());
      } else {
        std::printf("checked %lu packs, %lu chunks, %lu tensors, %lu files, %lu versions\n",
                    (unsigned long)rep.packs_checked, (unsigned long)rep.chunks_checked,
                    (unsigned long)rep.tensors_checked, (unsigned long)rep.files_checked,
                    (unsigned long)versions);
        for (const auto& e : rep.errors) std::printf("error: %s\n", e.c_str());
        for (const auto& d : damaged) std::printf("damaged: %s\n", d.c_str());
        std::printf("%s\n", rep.ok() ? "store is consistent" : "store has problems");
      }
      if (!rep.ok()) *rc = kExitFailure;
    });
  }
  // backup
  {
    auto* c = app.add_subcommand(
        "backup", "consistent copy of a store; run again to bring a copy up to date");
    auto store = std::make_shared<std::string>(), dest = std::make_shared<std::string>();
    c->add_option("STORE", *store)->required();
    c->add_option("DEST", *dest)->required();
    c->callback([=] {
      auto o = OpenStore(*store, true);
      if (!o.ok()) return void(*rc = Fail(o.status()));
      Env* env = o->store->env();
      // Writers and gc wait while the index and the packs it names are copied.
      auto lock = env->Lock(*store + "/LOCK");
      if (!lock.ok()) return void(*rc = Fail(lock.status()));
      std::error_code ec;
      for (const char* d : {"", "/packs", "/staging"}) fs::create_directories(*dest + d, ec);
      std::string tmp = *dest + "/index.new";
      fs::remove_all(tmp, ec);
      fs::create_directories(tmp, ec);
      Status s = o->store->db().CopyTo(tmp);
      if (!s.ok()) return void(*rc = Fail(s));
      std::map<uint64_t, uint64_t> packs;
      {
        ReadTxn txn(o->store->db());
        s = txn.Scan(Table::kPacks, "", [&](std::string_view k, std::string_view v) {
          auto p = PackEntry::Decode(v);
          if (p.ok()) packs[DecodeKeyU64(k)] = p->length;
          return true;
        });
        if (!s.ok()) return void(*rc = Fail(s));
      }
      uint64_t copied = 0, skipped = 0, bytes = 0;
      std::string buf(8 << 20, '\0');
      for (const auto& [id, len] : packs) {
        std::string from = o->store->PackPath(id), to = *dest + "/packs/" + PackFileName(id);
        uint64_t have = fs::exists(to, ec) ? fs::file_size(to, ec) : 0;
        if (have == len) {
          skipped++;  // sealed packs never change: already there
          continue;
        }
        if (have > len) have = 0;  // not ours: copy it whole
        auto in = env->OpenRandomAccess(from);
        if (!in.ok()) return void(*rc = Fail(in.status()));
        auto out = env->OpenAppendable(to, have);
        if (!out.ok()) return void(*rc = Fail(out.status()));
        for (uint64_t off = have; off < len;) {
          size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), len - off));
          s = (*in)->ReadExact(off, n, buf.data());
          if (s.ok()) s = (*out)->Append(std::string_view(buf.data(), n));
          if (!s.ok()) return void(*rc = Fail(s));
          off += n;
          bytes += n;
        }
        s = (*out)->Sync();
        if (s.ok()) s = (*out)->Close();
        if (!s.ok()) return void(*rc = Fail(s));
        copied++;
      }
      s = env->SyncDir(*dest + "/packs");
      if (!s.ok()) return void(*rc = Fail(s));
      // Swap the index in last: a backup interrupted before this point still
      // holds its previous consistent index (whose packs are all present).
      fs::remove_all(*dest + "/index.old", ec);
      if (fs::exists(*dest + "/index", ec)) fs::rename(*dest + "/index", *dest + "/index.old", ec);
      fs::rename(tmp, *dest + "/index", ec);
      if (ec) return void(*rc = Fail("cannot install the new index: " + ec.message()));
      fs::remove_all(*dest + "/index.old", ec);
      // Only now may packs gc removed since the last backup go.
      for (const auto& e : fs::directory_iterator(*dest + "/packs", ec)) {
        std::string n = e.path().filename().string();
        uint64_t id = std::strtoull(n.substr(0, 16).c_str(), nullptr, 16);
        if (n.size() == 21 && !packs.count(id)) fs::remove(e.path(), ec);
      }
      std::printf("backup of %s in %s: %lu pack(s) copied (%s), %lu unchanged\n", store->c_str(),
                  dest->c_str(), (unsigned long)copied, HumanBytes(bytes).c_str(),
                  (unsigned long)skipped);
    });
  }
  // gc
  {
    auto* c = app.add_subcommand("gc", "compact packs holding dead chunks");
    auto store = std::make_shared<std::string>();
    auto frac = std::make_shared<double>(0.5);
    c->add_option("STORE", *store)->required();
    c->add_option("--min-live", *frac, "rewrite packs whose live fraction is below this")
        ->capture_default_str();
    c->callback([=] {
      auto o = OpenStore(*store);
      if (!o.ok()) return void(*rc = Fail(o.status()));
      GcStats st;
      Status s = o->store->Gc(GcOptions{*frac}, &st);
      if (!s.ok()) return void(*rc = Fail(s));
      std::printf("gc: %lu pack(s) rewritten, %lu removed, %s reclaimed, %lu orphan file(s)\n",
                  (unsigned long)st.packs_rewritten, (unsigned long)st.packs_deleted,
                  HumanBytes(st.bytes_reclaimed).c_str(), (unsigned long)st.orphan_files_removed);
    });
  }
}

}  // namespace lfs::cli
