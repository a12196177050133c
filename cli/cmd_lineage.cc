// Lineage subcommands: models, log, show, tree, ancestors, stale, find, diff,
// graph, du, draft, commit, rm, tag, untag, model.
#include <cmath>
#include <cstdio>
#include <ctime>
#include <functional>
#include <set>

#include "cli/cli.h"
#include "lineage/diff.h"
#include "lineage/usage.h"
#include "lineage/workflow.h"

namespace lfs::cli {

using lineage::Lineage;
using lineage::Relation;
using lineage::Version;
using lineage::VersionKey;

namespace {

std::string ShapeStr(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); i++) out += (i ? "," : "") + std::to_string(s[i]);
  return out + "]";
}

json VersionJson(const Version& v, Lineage& lin) {
  json parents = json::array();
  for (const auto& p : v.parents) {
    parents.push_back({{"parent", p.parent.str()},
                       {"relation", lineage::RelationName(p.relation)},
                       {"tombstone", p.tombstone},
                       {"content_id", p.content_id}});
  }
  json files = json::object();
  uint64_t logical = 0;
  for (const auto& [n, f] : v.files) {
    files[n] = {{"size", f.size}, {"digest", f.digest.Hex()}};
    logical += f.size;
  }
  json stale = json::array();
  auto sr = lin.StaleReasons(v.key);
  if (sr.ok()) {
    for (const auto& s : *sr) stale.push_back({{"ancestor", s.ancestor.str()}, {"newer", s.newer}});
  }
  return {{"model", v.key.model},
          {"version", v.key.version},
          {"state", v.committed() ? "committed" : "draft"},
          {"created", lineage::IsoTime(v.created_ns)},
          {"committed", v.committed() ? json(lineage::IsoTime(v.committed_ns)) : json(nullptr)},
          {"author", v.author},
          {"message", v.message},
          {"predecessor", v.predecessor ? json(*v.predecessor) : json(nullptr)},
          {"parents", parents},
          {"files", files},
          {"bytes_logical", logical},
          {"content_id", v.ContentId().Hex()},
          {"stale", stale},
          {"metadata", json::parse(v.metadata_json, nullptr, false)}};
}

int Check(const Status& s) { return s.ok() ? kExitOk : Fail(s); }

}  // namespace

void RegisterLineageCommands(CLI::App& app, int* rc) {
  auto store = std::make_shared<std::string>();
  auto as_json = std::make_shared<bool>(false);

  // models
  {
    auto body = std::make_shared<Body>();
    auto* c = Cmd(app, rc, "models", "list models", store, true, body);
    c->add_flag("--json", *as_json);
    *body = [=](Opened& o) {
      auto ms = o.lineage->ListModels();
      if (!ms.ok()) return Fail(ms.status());
      json j = json::array();
      for (const auto& m : *ms) {
        auto mm = o.lineage->GetModel(m);
        auto latest = o.lineage->Latest(m);
        std::string l = latest.ok() && *latest ? **latest : "-";
        size_t n = mm.ok() ? mm->versions.size() : 0;
        if (*as_json) {
          j.push_back({{"model", m}, {"versions", n}, {"latest", l}});
        } else {
          std::printf("%-32s %4zu version(s)  latest %s\n", m.c_str(), n, l.c_str());
        }
      }
      if (*as_json) std::printf("%s\n", j.dump(2).c_str());
      return kExitOk;
    };
  }
  // log
  {
    auto model = std::make_shared<std::string>();
    auto body = std::make_shared<Body>();
    auto* c = Cmd(app, rc, "log", "versions of a model, oldest first", store, true, body);
    c->add_option("MODEL", *model)->required();
    c->add_flag("--json", *as_json);
    *body = [=](Opened& o) {
      auto vs = o.lineage->ListVersions(*model);
      if (!vs.ok()) return Fail(vs.status());
      json j = json::array();
      for (const auto& v : *vs) {
        if (*as_json) {
          j.push_back(VersionJson(v, *o.lineage));
          continue;
        }
        std::string parents;
        for (const auto& p : v.parents) {
          parents += " <-" + std::string(lineage::RelationName(p.relation)) + "- " +
                     p.parent.str() + (p.tombstone ? " (removed)" : "");
        }
        uint64_t size = 0;
        for (const auto& [n, f] : v.files) size += f.size;
        std::printf("%-12s %-9s %s %10s%s%s%s\n", v.key.version.c_str(),
                    v.committed() ? "committed" : "draft", lineage::IsoTime(v.mtime_ns()).c_str(),
                    HumanBytes(size).c_str(), parents.c_str(), v.message.empty() ? "" : "  ",
                    v.message.c_str());
      }
      if (*as_json) std::printf("%s\n", j.dump(2).c_str());
      return kExitOk;
    };
  }
  // show
  {
    auto ver = std::make_shared<std::string>();
    auto body = std::make_shared<Body>();
    auto* c =
        Cmd(app, rc, "show", "a version's metadata, parents, files and tensors", store, true, body);
    c->add_option("MODEL/VERSION", *ver)->required();
    c->add_flag("--json", *as_json);
    *body = [=](Opened& o) {
      auto k = VersionKey::Parse(*ver);
      if (!k.ok()) return Fail(k.status());
      auto v = o.lineage->GetVersion(*k);
      if (!v.ok()) return Fail(v.status());
      json j = VersionJson(*v, *o.lineage);
      auto idx = o.lineage->TensorIndex(*v);
      if (!idx.ok()) return Fail(idx.status());
      auto kids = o.lineage->Children(*k);
      json children = json::array();
      if (kids.ok()) {
        for (const auto& [c2, r] : *kids) {
          children.push_back({{"child", c2.str()}, {"relation", lineage::RelationName(r)}});
        }
      }
      j["children"] = children;
      j["tensors"] = idx->size();
      if (*as_json) {
        std::printf("%s\n", j.dump(2).c_str());
        return kExitOk;
      }
      std::printf("version   %s (%s)\n", k->str().c_str(), j["state"].get<std::string>().c_str());
      std::printf("created   %s\n", lineage::IsoTime(v->created_ns).c_str());
      if (v->committed()) std::printf("committed %s\n", lineage::IsoTime(v->committed_ns).c_str());
      if (!v->author.empty()) std::printf("author    %s\n", v->author.c_str());
      if (!v->message.empty()) std::printf("message   %s\n", v->message.c_str());
      std::printf("content   %s\n", v->ContentId().Hex().c_str());
      if (v->predecessor)
        std::printf("previous  %s/%s\n", k->model.c_str(), v->predecessor->c_str());
      for (const auto& p : v->parents) {
        std::printf("parent    %s (%s)%s\n", p.parent.str().c_str(),
                    lineage::RelationName(p.relation), p.tombstone ? " [removed]" : "");
      }
      for (const auto& ch : children) {
        std::printf("child     %s (%s)\n", ch["child"].get<std::string>().c_str(),
                    ch["relation"].get<std::string>().c_str());
      }
      for (const auto& s : j["stale"]) {
        std::printf("stale     %s has a newer version %s\n",
                    s["ancestor"].get<std::string>().c_str(),
                    s["newer"].get<std::string>().c_str());
      }
      json md = json::parse(v->metadata_json, nullptr, false);
      if (md.is_object()) md.erase("tests");  // shown below, one line each
      std::printf("metadata  %s\n", md.dump().c_str());
      auto recorded = lineage::TestResults(*v);
      std::map<std::string, lineage::TestResult> results;
      if (recorded.ok()) results = std::move(*recorded);
      std::set<std::string> names;
      for (const auto& [n, r] : results) names.insert(n);
      auto applicable = lineage::TestsFor(*o.store, *v);
      if (applicable.ok()) {
        for (const auto& t : *applicable) names.insert(t.name);
      }
      for (const auto& n : names) {
        auto it = results.find(n);
        if (it == results.end()) {
          std::printf("test      %-16s pending\n", n.c_str());
          continue;
        }
        const lineage::TestResult& r = it->second;
        std::string metrics;
        for (const auto& [k, val] : r.metrics) {
          char buf[64];
          std::snprintf(buf, sizeof buf, "%.4g", val);
          metrics += " " + k + "=" + buf;
        }
        std::printf("test      %-16s %s %s%s%s\n", n.c_str(), r.passed ? "pass" : "FAIL",
                    lineage::IsoTime(r.time_ns).c_str(), metrics.c_str(),
                    r.passed ? "" : ("  (" + r.reason + ")").c_str());
      }
      std::printf("files     %zu, %s, %zu tensors\n", v->files.size(),
                  HumanBytes(j["bytes_logical"].get<uint64_t>()).c_str(), idx->size());
      for (const auto& [n, f] : v->files) {
        std::printf("  %-40s %12s  %s\n", n.c_str(), HumanBytes(f.size).c_str(),
                    f.digest.ShortHex().c_str());
      }
      return kExitOk;
    };
  }
  // tree
  {
    auto ver = std::make_shared<std::string>();
    auto body = std::make_shared<Body>();
    auto* c = Cmd(app, rc, "tree", "derived versions as an indented tree", store, true, body);
    c->add_option("MODEL/VERSION", *ver, "root (default: every version without parents)");
    c->add_flag("--json", *as_json);
    *body = [=](Opened& o) {
      std::vector<VersionKey> roots;
      if (!ver->empty()) {
        auto k = VersionKey::Parse(*ver);
        if (!k.ok()) return Fail(k.status());
        auto v = o.lineage->GetVersion(*k);
        if (!v.ok()) return Fail(v.status());
        roots.push_back(*k);
      } else {
        auto ms = o.lineage->ListModels();
        if (!ms.ok()) return Fail(ms.status());
        for (const auto& m : *ms) {
          auto vs = o.lineage->ListVersions(m);
          if (!vs.ok()) return Fail(vs.status());
          for (const auto& v : *vs) {
            bool live_parent = false;
            for (const auto& p : v.parents) live_parent |= !p.tombstone;
            if (!live_parent) roots.push_back(v.key);
          }
        }
      }
      std::set<VersionKey> printed;
      std::function<json(const VersionKey&, Relation, int, bool)> walk =
          [&](const VersionKey& k, Relation rel, int depth, bool has_rel) -> json {
        json node = {{"version", k.str()}};
        if (has_rel) node["relation"] = lineage::RelationName(rel);
        bool again = !printed.insert(k).second;
        if (!*as_json) {
          std::printf("%*s%s%s%s\n", depth * 2, "", k.str().c_str(),
                      has_rel ? (std::string(" (") + lineage::RelationName(rel) + ")").c_str() : "",
                      again ? " (see above)" : "");
        }
        if (again) return node;
        auto kids = o.lineage->Children(k);
        json cj = json::array();
        if (kids.ok()) {
          for (const auto& [c2, r] : *kids) cj.push_back(walk(c2, r, depth + 1, true));
        }
        node["children"] = cj;
        return node;
      };
      json all = json::array();
      for (const auto& r : roots) all.push_back(walk(r, Relation::kOther, 0, false));
      if (*as_json) std::printf("%s\n", all.dump(2).c_str());
      return kExitOk;
    };
  }
  // ancestors
  {
    auto ver = std::make_shared<std::string>();
    auto body = std::make_shared<Body>();
    auto* c = Cmd(app, rc, "ancestors", "provenance ancestors, nearest first", store, true, body);
    c->add_option("MODEL/VERSION", *ver)->required();
    c->add_flag("--json", *as_json);
    *body = [=](Opened& o) {
      auto k = VersionKey::Parse(*ver);
      if (!k.ok()) return Fail(k.status());
      auto a = o.lineage->Ancestors(*k);
      if (!a.ok()) return Fail(a.status());
      json j = json::array();
      for (const auto& [ak, r] : *a) {
        j.push_back({{"version", ak.str()}, {"relation", lineage::RelationName(r)}});
        if (!*as_json) std::printf("%s (%s)\n", ak.str().c_str(), lineage::RelationName(r));
      }
      if (*as_json) std::printf("%s\n", j.dump(2).c_str());
      return kExitOk;
    };
  }
  // stale
  {
    auto body = std::make_shared<Body>();
    auto* c = Cmd(app, rc, "stale", "versions derived from an ancestor that has moved on", store,
                  true, body);
    c->add_flag("--json", *as_json);
    *body = [=](Opened& o) {
      auto ms = o.lineage->ListModels();
      if (!ms.ok()) return Fail(ms.status());
      // What a cascade would rebuild: versions a cascade has rebuilt already
      // are not stale any more.
      auto rebuilt = lineage::RebuiltVersions(*o.lineage);
      if (!rebuilt.ok()) return Fail(rebuilt.status());
      json j = json::array();
      for (const auto& m : *ms) {
        auto vs = o.lineage->ListVersions(m);
        if (!vs.ok()) return Fail(vs.status());
        for (const auto& v : *vs) {
          if (!v.committed() || rebuilt->count(v.key)) continue;
          auto sr = o.lineage->StaleReasons(v.key);
          if (!sr.ok()) return Fail(sr.status());
          json md = json::parse(v.metadata_json, nullptr, false);
          bool recipe = md.is_object() && md.contains("recipe") && md["recipe"].is_string() &&
                        !md["recipe"].get<std::string>().empty();
          for (const auto& s : *sr) {
            j.push_back({{"version", v.key.str()},
                         {"ancestor", s.ancestor.str()},
                         {"newer", s.ancestor.model + "/" + s.newer},
                         {"recipe", recipe}});
            if (!*as_json) {
              std::printf("%s: derived from %s, which has a newer version %s/%s%s\n",
                          v.key.str().c_str(), s.ancestor.str().c_str(), s.ancestor.model.c_str(),
                          s.newer.c_str(), recipe ? "" : " (no recipe: cannot be rebuilt)");
            }
          }
        }
      }
      if (*as_json) std::printf("%s\n", j.dump(2).c_str());
      return kExitOk;
    };
  }
  // find
  {
    auto relation = std::make_shared<std::string>(), since = std::make_shared<std::string>(),
         model = std::make_shared<std::string>(), state = std::make_shared<std::string>();
    auto body = std::make_shared<Body>();
    auto* c = Cmd(app, rc, "find", "versions matching filters", store, true, body);
    c->add_option("--relation", *relation, "has a parent edge with this relation");
    c->add_option("--since", *since, "created at or after (YYYY-MM-DD or unix seconds)");
    c->add_option("--model", *model, "of this model");
    c->add_option("--state", *state, "draft or committed");
    c->add_flag("--json", *as_json);
    *body = [=](Opened& o) {
      std::optional<Relation> rel;
      if (!relation->empty()) {
        rel = lineage::ParseRelation(*relation);
        if (!rel) return Fail("unknown relation " + *relation);
      }
      int64_t since_ns = 0;
      if (!since->empty()) {
        std::tm tm{};
        if (strptime(since->c_str(), "%Y-%m-%d", &tm)) {
          since_ns = static_cast<int64_t>(timegm(&tm)) * 1000000000;
        } else {
          since_ns = std::stoll(*since) * 1000000000;
        }
      }
      auto ms = o.lineage->ListModels();
      if (!ms.ok()) return Fail(ms.status());
      json j = json::array();
      for (const auto& m : *ms) {
        if (!model->empty() && m != *model) continue;
        auto vs = o.lineage->ListVersions(m);
        if (!vs.ok()) return Fail(vs.status());
        for (const auto& v : *vs) {
          if (v.created_ns < since_ns) continue;
          if (!state->empty() && (*state == "draft") == v.committed()) continue;
          if (rel) {
            bool hit = false;
            for (const auto& p : v.parents) hit |= p.relation == *rel;
            if (!hit) continue;
          }
          j.push_back(v.key.str());
          if (!*as_json) std::printf("%s\n", v.key.str().c_str());
        }
      }
      if (*as_json) std::printf("%s\n", j.dump(2).c_str());
      return kExitOk;
    };
  }
  // diff
  {
    auto a = std::make_shared<std::string>(), b = std::make_shared<std::string>();
    auto no_stats = std::make_shared<bool>(false), all = std::make_shared<bool>(false);
    auto body = std::make_shared<Body>();
    auto* c = Cmd(app, rc, "diff", "what changed between two versions, tensor by tensor", store,
                  true, body);
    c->add_option("A", *a)->required();
    c->add_option("B", *b)->required();
    c->add_flag("--no-stats", *no_stats, "skip per-tensor statistics (no data read)");
    c->add_flag("--all", *all, "also list identical tensors");
    c->add_flag("--json", *as_json);
    *body = [=](Opened& o) {
      auto ka = VersionKey::Parse(*a), kb = VersionKey::Parse(*b);
      if (!ka.ok()) return Fail(ka.status());
      if (!kb.ok()) return Fail(kb.status());
      auto va = o.lineage->GetVersion(*ka), vb = o.lineage->GetVersion(*kb);
      if (!va.ok()) return Fail(va.status());
      if (!vb.ok()) return Fail(vb.status());
      auto d = lineage::Diff(*o.lineage, *va, *vb, !*no_stats);
      if (!d.ok()) return Fail(d.status());
      std::map<std::string, int> counts;
      json tj = json::array(), fj = json::array();
      for (const auto& f : d->files) {
        fj.push_back({{"file", f.name},
                      {"change", lineage::FileDiffKindName(f.kind)},
                      {"size_a", f.size_a},
                      {"size_b", f.size_b}});
      }
      for (const auto& t : d->tensors) {
        counts[lineage::TensorDiffKindName(t.kind)]++;
        json e = {{"tensor", t.name}, {"change", lineage::TensorDiffKindName(t.kind)}};
        if (t.kind != lineage::TensorDiff::Kind::kAdded) {
          e["dtype_a"] = formats::DTypeName(t.dtype_a);
          e["shape_a"] = t.shape_a;
        }
        if (t.kind != lineage::TensorDiff::Kind::kRemoved) {
          e["dtype_b"] = formats::DTypeName(t.dtype_b);
          e["shape_b"] = t.shape_b;
        }
        if (t.has_stats) {
          e["max_abs_delta"] = t.max_abs_delta;
          e["rel_l2"] = std::isfinite(t.rel_l2) ? json(t.rel_l2) : json(nullptr);
          e["frac_changed"] = t.frac_changed;
        }
        tj.push_back(e);
      }
      if (*as_json) {
        std::printf("%s\n", json({{"a", ka->str()},
                                  {"b", kb->str()},
                                  {"files", fj},
                                  {"tensors", tj},
                                  {"summary", counts}})
                                .dump(2)
                                .c_str());
        return kExitOk;
      }
      std::printf("diff %s %s\n", ka->str().c_str(), kb->str().c_str());
      for (const auto& f : d->files) {
        if (f.kind == lineage::FileDiff::Kind::kIdentical) continue;
        std::printf("file   %-9s %s (%s -> %s)\n", lineage::FileDiffKindName(f.kind),
                    f.name.c_str(), HumanBytes(f.size_a).c_str(), HumanBytes(f.size_b).c_str());
      }
      for (const auto& t : d->tensors) {
        if (t.kind == lineage::TensorDiff::Kind::kIdentical && !*all) continue;
        std::printf("tensor %-13s %s", lineage::TensorDiffKindName(t.kind), t.name.c_str());
        if (t.kind == lineage::TensorDiff::Kind::kShapeChanged) {
          std::printf(" %s%s -> %s%s", formats::DTypeName(t.dtype_a), ShapeStr(t.shape_a).c_str(),
                      formats::DTypeName(t.dtype_b), ShapeStr(t.shape_b).c_str());
        }
        if (t.has_stats) {
          std::printf("  max|d|=%.3g relL2=%.3g changed=%.1f%%", t.max_abs_delta, t.rel_l2,
                      100 * t.frac_changed);
        }
        std::printf("\n");
      }
      std::printf("summary:");
      for (const auto& [k, n] : counts) std::printf(" %d %s", n, k.c_str());
      std::printf("\n");
      return kExitOk;
    };
  }
  // du
  {
    auto filter = std::make_shared<std::string>();
    auto body = std::make_shared<Body>();
    auto* c = Cmd(app, rc, "du", "logical, stored and unique bytes per version", store, true, body);
    c->add_option("MODEL[/VERSION]", *filter);
    c->add_flag("--json", *as_json);
    *body = [=](Opened& o) {
      auto rep = lineage::ComputeUsage(*o.lineage);
      if (!rep.ok()) return Fail(rep.status());
      json j = json::array();
      uint64_t logical = 0;
      double stored = 0;
      if (!*as_json) {
        std::printf("%-40s %12s %12s %12s %8s\n", "version", "logical", "stored", "unique",
                    "ratio");
      }
      for (const auto& u : rep->versions) {
        if (!filter->empty() && u.key.model != *filter && u.key.str() != *filter) continue;
        logical += u.logical;
        stored += u.stored;
        double ratio = u.stored > 0 ? static_cast<double>(u.logical) / u.stored : 0;
        j.push_back({{"version", u.key.str()},
                     {"logical", u.logical},
                     {"stored", static_cast<uint64_t>(u.stored)},
                     {"unique", u.unique}});
        if (!*as_json) {
          std::printf("%-40s %12s %12s %12s %7.1fx\n", u.key.str().c_str(),
                      HumanBytes(u.logical).c_str(),
                      HumanBytes(static_cast<uint64_t>(u.stored)).c_str(),
                      HumanBytes(u.unique).c_str(), ratio);
        }
      }
      if (*as_json) {
        std::printf("%s\n", json({{"versions", j},
                                  {"logical", logical},
                                  {"stored", static_cast<uint64_t>(stored)},
                                  {"pack_bytes", rep->pack_bytes},
                                  {"live_bytes", rep->live_bytes}})
                                .dump(2)
                                .c_str());
      } else {
        std::printf("%-40s %12s %12s %12s %7.1fx\n", "total", HumanBytes(logical).c_str(),
                    HumanBytes(static_cast<uint64_t>(stored)).c_str(), "",
                    stored > 0 ? static_cast<double>(logical) / stored : 0.0);
        std::printf("packs on disk: %s (%s live)\n", HumanBytes(rep->pack_bytes).c_str(),
                    HumanBytes(rep->live_bytes).c_str());
      }
      return kExitOk;
    };
  }
  // graph
  {
    auto format = std::make_shared<std::string>("dot");
    auto body = std::make_shared<Body>();
    auto* c = Cmd(app, rc, "graph", "the lineage graph as Graphviz dot or JSON", store, true, body);
    c->add_option("--format", *format, "dot or json")->capture_default_str();
    *body = [=](Opened& o) {
      auto rep = lineage::ComputeUsage(*o.lineage);
      if (!rep.ok()) return Fail(rep.status());
      std::map<std::string, lineage::VersionUsage> usage;
      for (const auto& u : rep->versions) usage[u.key.str()] = u;
      auto ms = o.lineage->ListModels();
      if (!ms.ok()) return Fail(ms.status());
      json nodes = json::array(), edges = json::array();
      std::string dot =
          "digraph lineage {\n  rankdir=LR;\n  node [shape=box, style=\"rounded,filled\", "
          "fillcolor=\"#eef4ff\", fontname=\"Helvetica\"];\n  edge [fontname=\"Helvetica\", "
          "fontsize=10];\n";
      auto id = [](const VersionKey& k) {
        json s = k.str();
        return s.dump();  // quoted and escaped
      };
      for (const auto& m : *ms) {
        auto vs = o.lineage->ListVersions(m);
        if (!vs.ok()) return Fail(vs.status());
        json mname = "cluster_" + m;
        dot += "  subgraph " + mname.dump() + " {\n    label=" + json(m).dump() +
               ";\n    style=dashed;\n";
        for (const auto& v : *vs) {
          const auto& u = usage[v.key.str()];
          double saved =
              u.logical > 0 ? 100.0 * (1.0 - u.stored / static_cast<double>(u.logical)) : 0;
          char label[256];
          std::snprintf(label, sizeof label, "%s\\n%s logical\\n%s stored (%.0f%% saved)%s",
                        v.key.version.c_str(), HumanBytes(u.logical).c_str(),
                        HumanBytes(static_cast<uint64_t>(u.stored)).c_str(), saved,
                        v.committed() ? "" : "\\ndraft");
          dot += "    " + id(v.key) + " [label=\"" + label + "\"" +
                 (v.committed() ? "" : ", fillcolor=\"#fff4d6\"") + "];\n";
          nodes.push_back({{"id", v.key.str()},
                           {"model", m},
                           {"version", v.key.version},
                           {"state", v.committed() ? "committed" : "draft"},
                           {"logical", u.logical},
                           {"stored", static_cast<uint64_t>(u.stored)}});
        }
        dot += "  }\n";
        for (const auto& v : *vs) {
          if (v.predecessor) {
            VersionKey pk{m, *v.predecessor};
            dot += "  " + id(pk) + " -> " + id(v.key) + " [style=dotted, color=gray];\n";
            edges.push_back({{"from", pk.str()}, {"to", v.key.str()}, {"relation", "version"}});
          }
          for (const auto& p : v.parents) {
            dot += "  " + id(p.parent) + " -> " + id(v.key) +
                   " [label=" + json(lineage::RelationName(p.relation)).dump() +
                   (p.tombstone ? ", style=dashed, color=red" : "") + "];\n";
            edges.push_back({{"from", p.parent.str()},
                             {"to", v.key.str()},
                             {"relation", lineage::RelationName(p.relation)},
                             {"tombstone", p.tombstone}});
          }
        }
      }
      dot += "}\n";
      if (*format == "json") {
        std::printf("%s\n", json({{"nodes", nodes}, {"edges", edges}}).dump(2).c_str());
      } else if (*format == "dot") {
        std::fputs(dot.c_str(), stdout);
      } else {
        std::fprintf(stderr, "lineagefs graph: --format is dot or json\n");
        return kExitUsage;
      }
      return kExitOk;
    };
  }
  // draft
  {
    auto model = std::make_shared<std::string>(), name = std::make_shared<std::string>(),
         relation = std::make_shared<std::string>("finetune"),
         message = std::make_shared<std::string>();
    auto parents = std::make_shared<std::vector<std::string>>();
    auto body = std::make_shared<Body>();
    auto* c =
        Cmd(app, rc, "draft", "create a draft version (the model too, if new)", store, false, body);
    c->add_option("MODEL", *model)->required();
    c->add_option("--version", *name);
    c->add_option("--parent", *parents);
    c->add_option("--relation", *relation)->capture_default_str();
    c->add_option("-m,--message", *message);
    *body = [=](Opened& o) {
      Lineage::DraftOptions d;
      if (!name->empty()) d.name = *name;
      d.message = *message;
      d.create_model = true;
      auto rel = lineage::ParseRelation(*relation);
      if (!rel) return Fail("unknown relation " + *relation);
      for (const auto& p : *parents) {
        auto k = VersionKey::Parse(p);
        if (!k.ok()) return Fail(k.status());
        d.parents.push_back({*k, *rel});
      }
      auto v = o.lineage->CreateDraft(*model, d);
      if (!v.ok()) return Fail(v.status());
      std::printf("%s\n", v->key.str().c_str());
      return kExitOk;
    };
  }
  // parents: set (or, with none given, clear) the parents of a draft
  {
    auto ver = std::make_shared<std::string>(),
         relation = std::make_shared<std::string>("finetune");
    auto parents = std::make_shared<std::vector<std::string>>();
    auto body = std::make_shared<Body>();
    auto* c = Cmd(app, rc, "parents", "set the parents of a draft (none given: clear them)", store,
                  false, body);
    c->add_option("MODEL/VERSION", *ver)->required();
    c->add_option("--parent", *parents, "parent MODEL/VERSION (repeatable)");
    c->add_option("--relation", *relation)->capture_default_str();
    *body = [=](Opened& o) {
      auto k = VersionKey::Parse(*ver);
      if (!k.ok()) return Fail(k.status());
      auto rel = lineage::ParseRelation(*relation);
      if (!rel) return Fail("unknown relation " + *relation);
      std::vector<lineage::ParentSpec> ps;
      for (const auto& p : *parents) {
        auto pk = VersionKey::Parse(p);
        if (!pk.ok()) return Fail(pk.status());
        ps.push_back({*pk, *rel});
      }
      return Check(o.lineage->SetParents(*k, ps));
    };
  }
  // rmfile / mvfile: edit the files of a draft (add files with `import --version` or `add`)
  {
    auto ver = std::make_shared<std::string>(), name = std::make_shared<std::string>(),
         to = std::make_shared<std::string>();
    auto body = std::make_shared<Body>();
    auto* c = Cmd(app, rc, "rmfile", "remove a file from a draft", store, false, body);
    c->add_option("MODEL/VERSION", *ver)->required();
    c->add_option("NAME", *name)->required();
    *body = [=](Opened& o) {
      auto k = VersionKey::Parse(*ver);
      if (!k.ok()) return Fail(k.status());
      return Check(o.lineage->RemoveFile(*k, *name));
    };
    auto body2 = std::make_shared<Body>();
    auto* c2 = Cmd(app, rc, "mvfile", "rename a file of a draft", store, false, body2);
    c2->add_option("MODEL/VERSION", *ver)->required();
    c2->add_option("NAME", *name)->required();
    c2->add_option("NEW_NAME", *to)->required();
    *body2 = [=](Opened& o) {
      auto k = VersionKey::Parse(*ver);
      if (!k.ok()) return Fail(k.status());
      return Check(o.lineage->RenameFile(*k, *name, *to));
    };
  }
  // commit
  {
    auto ver = std::make_shared<std::string>();
    auto body = std::make_shared<Body>();
    auto* c = Cmd(app, rc, "commit", "make a draft immutable", store, false, body);
    c->add_option("MODEL/VERSION", *ver)->required();
    *body = [=](Opened& o) {
      auto k = VersionKey::Parse(*ver);
      if (!k.ok()) return Fail(k.status());
      int r = Check(o.lineage->Commit(*k));
      if (r == kExitOk) std::printf("committed %s\n", k->str().c_str());
      return r;
    };
  }
  // rm
  {
    auto ver = std::make_shared<std::string>();
    auto force = std::make_shared<bool>(false);
    auto body = std::make_shared<Body>();
    auto* c = Cmd(app, rc, "rm", "remove a version (its children keep a tombstone with --force)",
                  store, false, body);
    c->add_option("MODEL/VERSION", *ver)->required();
    c->add_flag("--force", *force);
    *body = [=](Opened& o) {
      auto k = VersionKey::Parse(*ver);
      if (!k.ok()) return Fail(k.status());
      return Check(o.lineage->RemoveVersion(*k, *force));
    };
  }
  // tag / untag
  {
    auto ver = std::make_shared<std::string>(), tag = std::make_shared<std::string>();
    auto body = std::make_shared<Body>();
    auto* c = Cmd(app, rc, "tag", "name a version", store, false, body);
    c->add_option("MODEL/VERSION", *ver)->required();
    c->add_option("TAG", *tag)->required();
    *body = [=](Opened& o) {
      auto k = VersionKey::Parse(*ver);
      if (!k.ok()) return Fail(k.status());
      return Check(o.lineage->Tag(k->model, *tag, k->version));
    };
  }
  {
    auto model = std::make_shared<std::string>(), tag = std::make_shared<std::string>();
    auto body = std::make_shared<Body>();
    auto* c = Cmd(app, rc, "untag", "remove a tag", store, false, body);
    c->add_option("MODEL", *model)->required();
    c->add_option("TAG", *tag)->required();
    *body = [=](Opened& o) { return Check(o.lineage->Untag(*model, *tag)); };
  }
  // model create|rename|rm
  {
    auto action = std::make_shared<std::string>(), a = std::make_shared<std::string>(),
         b = std::make_shared<std::string>();
    auto body = std::make_shared<Body>();
    auto* c = Cmd(app, rc, "model", "create, rename or remove a model", store, false, body);
    c->add_option("ACTION", *action, "create, rename or rm")->required();
    c->add_option("NAME", *a)->required();
    c->add_option("NEW_NAME", *b);
    *body = [=](Opened& o) {
      if (*action == "create") return Check(o.lineage->CreateModel(*a));
      if (*action == "rm") return Check(o.lineage->RemoveModel(*a));
      if (*action == "rename" && !b->empty()) return Check(o.lineage->RenameModel(*a, *b));
      std::fprintf(stderr, "lineagefs model: create NAME | rename NAME NEW_NAME | rm NAME\n");
      return kExitUsage;
    };
  }
}

}  // namespace lfs::cli
