// Workflow subcommands: test (add, list, rm, run), bisect, cascade. The
// bookkeeping is lineage/workflow.h; this file runs commands against a
// read-only mount of the store and writes results and rebuilt versions.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <mutex>
#include <set>
#include <thread>

#include "cli/cli.h"
#include "cli/runner.h"
#include "lineage/workflow.h"
#include "store/log.h"

namespace lfs::cli {

using lineage::CascadePlan;
using lineage::CascadeStep;
using lineage::Lineage;
using lineage::TestDef;
using lineage::TestResult;
using lineage::TestScope;
using lineage::Version;
using lineage::VersionKey;

namespace {

constexpr size_t kOutputTailBytes = 2048;

// Placeholders and environment of a command run against `v` in the mount.
std::map<std::string, std::string> VarsFor(const MountRef& mnt, const Version& v) {
  std::map<std::string, std::string> vars = {{"path", mnt.VersionPath(v.key.model, v.key.version)},
                                             {"model", v.key.model},
                                             {"version", v.key.version},
                                             {"mount", mnt.path()},
                                             {"parent_path", ""}};
  for (size_t i = 0; i < v.parents.size(); i++) {
    std::string p = mnt.VersionPath(v.parents[i].parent.model, v.parents[i].parent.version);
    if (i == 0) vars["parent_path"] = p;
    vars["parent_path." + std::to_string(i)] = p;
  }
  return vars;
}

// The last n bytes, starting on a UTF-8 character boundary.
std::string Tail(const std::string& s, size_t n) {
  if (s.size() <= n) return s;
  size_t from = s.size() - n;
  while (from < s.size() && (static_cast<unsigned char>(s[from]) & 0xC0) == 0x80) from++;
  return "…" + s.substr(from);
}

TestResult RunTest(const TestDef& def, const MountRef& mnt, const Version& v, bool* interrupted) {
  auto vars = VarsFor(mnt, v);
  TestResult r;
  r.cmd = lineage::SubstituteCommand(def.cmd, vars);
  CommandResult cr = RunCommand(r.cmd, def.timeout_s, lineage::EnvFor(vars));
  *interrupted = cr.interrupted;
  r.exit_code = cr.exit_code;
  r.timed_out = cr.timed_out;
  r.duration_s = cr.duration_s;
  auto m = lineage::ParseMetrics(cr.output, def.metric_regex, def.name);
  if (m.ok()) r.metrics = std::move(*m);
  r.output_tail = Tail(cr.output + cr.stderr_tail, kOutputTailBytes);
  r.time_ns = lineage::NowNs();
  lineage::Judge(def, &r);
  return r;
}

std::string MetricsStr(const std::map<std::string, double>& m) {
  std::string s;
  for (const auto& [k, v] : m) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.4g", v);
    s += (s.empty() ? "" : " ") + k + "=" + buf;
  }
  return s;
}

json ResultJson(const VersionKey& k, const std::string& test, const TestResult& r) {
  json j = json::parse(lineage::EncodeTestResult(r));
  j["version"] = k.str();
  j["test"] = test;
  return j;
}

void PrintResult(const VersionKey& k, const std::string& test, const TestResult& r) {
  std::printf("%-4s %-28s %-16s %6.1fs  %s%s%s\n", r.passed ? "PASS" : "FAIL", k.str().c_str(),
              test.c_str(), r.duration_s, MetricsStr(r.metrics).c_str(),
              r.passed ? "" : (r.metrics.empty() ? "" : "  "),
              r.passed ? "" : ("(" + r.reason + ")").c_str());
  std::fflush(stdout);
}

struct Job {
  TestDef def;
  Version version;
};

// Runs jobs on up to `parallel` threads; results are recorded (one writer at
// a time) and printed as they finish. Returns the number that failed.
Result<int> RunJobs(Lineage& lin, const MountRef& mnt, const std::vector<Job>& jobs, int parallel,
                    bool quiet, json* out) {
  std::atomic<size_t> next{0};
  std::mutex mu;
  Status first_error;
  int failed = 0;
  auto worker = [&] {
    for (size_t i = next++; i < jobs.size() && !Interrupted(); i = next++) {
      try {
        bool interrupted = false;
        TestResult r = RunTest(jobs[i].def, mnt, jobs[i].version, &interrupted);
        std::lock_guard<std::mutex> l(mu);
        if (interrupted) {
          if (first_error.ok()) first_error = Status::Busy("interrupted");
          continue;  // not a verdict on the version: nothing recorded
        }
        Status s = lineage::RecordTestResult(lin, jobs[i].version.key, jobs[i].def.name, r);
        if (!s.ok() && first_error.ok()) first_error = s;
        if (!r.passed) failed++;
        if (!quiet) PrintResult(jobs[i].version.key, jobs[i].def.name, r);
        if (out) out->push_back(ResultJson(jobs[i].version.key, jobs[i].def.name, r));
      } catch (const std::exception& e) {  // never let a worker take the process down
        std::lock_guard<std::mutex> l(mu);
        if (first_error.ok()) first_error = Status::IOError(std::string("test run: ") + e.what());
      }
    }
  };
  std::vector<std::thread> threads;
  int n = std::max(1, std::min<int>(parallel, static_cast<int>(jobs.size())));
  for (int t = 0; t < n; t++) threads.emplace_back(worker);
  for (auto& t : threads) t.join();
  if (Interrupted() && first_error.ok()) first_error = Status::Busy("interrupted");
  LFS_RETURN_IF_ERROR(first_error);
  return failed;
}

Result<std::vector<Version>> AllCommitted(const Lineage& lin) {
  std::vector<Version> out;
  LFS_ASSIGN_OR_RETURN(auto models, lin.ListModels());
  for (const auto& m : models) {
    LFS_ASSIGN_OR_RETURN(auto vs, lin.ListVersions(m));
    for (auto& v : vs) {
      if (v.committed()) out.push_back(std::move(v));
    }
  }
  return out;
}

// `a..b` or `a b`.
Result<std::pair<VersionKey, VersionKey>> ParseRange(const std::vector<std::string>& args) {
  std::string a, b;
  if (args.size() == 1 && args[0].find("..") != std::string::npos) {
    a = args[0].substr(0, args[0].find(".."));
    b = args[0].substr(args[0].find("..") + 2);
  } else if (args.size() == 2) {
    a = args[0];
    b = args[1];
  } else {
    return Status::InvalidArgument("expected GOOD..BAD (two model/version names)");
  }
  LFS_ASSIGN_OR_RETURN(VersionKey ka, VersionKey::Parse(a));
  LFS_ASSIGN_OR_RETURN(VersionKey kb, VersionKey::Parse(b));
  return std::make_pair(ka, kb);
}

// Metadata of a rebuilt version: the original's, minus what belongs to the
// original only (its test results, its own cascade record).
std::string RebuiltMetadata(const Version& target, const VersionKey& old_parent,
                            const VersionKey& new_parent) {
  json md = json::parse(target.metadata_json, nullptr, false);
  if (!md.is_object()) md = json::object();
  md.erase("tests");
  md["cascade"] = json::parse(lineage::CascadeMetadata(target.key, old_parent, new_parent));
  return md.dump();
}

struct CascadeOptions {
  bool dry_run = false;
  bool keep_failed = false;
  bool as_json = false;
  int parallel = 1;
  double recipe_timeout_s = 3600;
  std::string mount;
};

void PrintPlan(const CascadePlan& plan) {
  std::printf("cascade %s -> %s: %zu descendant(s)\n", plan.old_version.str().c_str(),
              plan.new_version.str().c_str(), plan.steps.size());
  for (const auto& s : plan.steps) {
    std::string parents;
    for (const auto& p : s.parents) {
      std::string now = p.is_old       ? plan.new_version.str()
                        : p.rebuilt_by ? "(rebuilt " + plan.steps[*p.rebuilt_by].target.model + ")"
                                       : p.original.str();
      parents +=
          (parents.empty() ? "" : ", ") + now + " [" + lineage::RelationName(p.relation) + "]";
    }
    if (s.already_rebuilt) {
      std::printf("  wave %zu  %-24s done already as %s\n", s.wave, s.target.str().c_str(),
                  s.already_rebuilt->str().c_str());
    } else if (!s.skip_reason.empty()) {
      std::printf("  wave %zu  %-24s skip: %s\n", s.wave, s.target.str().c_str(),
                  s.skip_reason.c_str());
    } else {
      std::printf("  wave %zu  %-24s rebuild as a new %s version from %s\n    recipe: %s\n", s.wave,
                  s.target.str().c_str(), s.target.model.c_str(), parents.c_str(),
                  s.recipe.c_str());
    }
  }
}

json PlanJson(const CascadePlan& plan) {
  json steps = json::array();
  for (const auto& s : plan.steps) {
    json parents = json::array();
    for (const auto& p : s.parents) {
      parents.push_back({{"original", p.original.str()},
                         {"relation", lineage::RelationName(p.relation)},
                         {"replaced_by_new", p.is_old},
                         {"rebuilt", p.rebuilt_by.has_value()}});
    }
    steps.push_back(
        {{"target", s.target.str()},
         {"wave", s.wave},
         {"recipe", s.recipe},
         {"skip", s.skip_reason},
         {"already_rebuilt", s.already_rebuilt ? json(s.already_rebuilt->str()) : json(nullptr)},
         {"parents", parents}});
  }
  return {{"old", plan.old_version.str()}, {"new", plan.new_version.str()}, {"steps", steps}};
}

// Removes a draft on scope exit unless released: a cascade never leaves a
// half-made rebuild behind, whatever path it leaves by.
class DraftGuard {
 public:
  DraftGuard(Lineage& lin, VersionKey key) : lin_(lin), key_(std::move(key)) {}
  ~DraftGuard() {
    if (key_) (void)lin_.RemoveVersion(*key_, false);
  }
  void Release() { key_.reset(); }

 private:
  Lineage& lin_;
  std::optional<VersionKey> key_;
};

// Drafts a killed cascade run left behind (they carry "cascade" metadata).
Status RemoveAbandonedRebuilds(Lineage& lin, const CascadePlan& plan) {
  std::set<std::string> models;
  for (const auto& s : plan.steps) models.insert(s.target.model);
  for (const auto& m : models) {
    LFS_ASSIGN_OR_RETURN(auto vs, lin.ListVersions(m));
    for (const auto& v : vs) {
      if (v.committed()) continue;
      json md = json::parse(v.metadata_json, nullptr, false);
      if (md.is_object() && md.contains("cascade")) {
        LogWarn("removing " + v.key.str() + ", a rebuild an interrupted cascade left as a draft");
        LFS_RETURN_IF_ERROR(lin.RemoveVersion(v.key, false));
      }
    }
  }
  return Status::OK();
}

int RunCascade(Opened& o, const VersionKey& old_v, const VersionKey& new_v,
               const CascadeOptions& opt) {
  Lineage& lin = *o.lineage;
  auto plan = lineage::PlanCascade(lin, old_v, new_v);
  if (!plan.ok()) return Fail(plan.status());
  if (opt.dry_run) {
    if (opt.as_json) {
      std::printf("%s\n", PlanJson(*plan).dump(2).c_str());
    } else {
      PrintPlan(*plan);
    }
    return kExitOk;
  }
  if (!opt.as_json) PrintPlan(*plan);
  Status cleaned = RemoveAbandonedRebuilds(lin, *plan);
  if (!cleaned.ok()) return Fail(cleaned);
  auto mnt = MountRef::Open(o.store->path(), opt.mount);
  if (!mnt.ok()) return Fail(mnt.status());

  const size_t n = plan->steps.size();
  std::vector<std::optional<VersionKey>> made(n);
  std::vector<std::string> failure(n);  // why a step produced nothing
  size_t max_wave = 0;
  for (size_t i = 0; i < n; i++) {
    max_wave = std::max(max_wave, plan->steps[i].wave);
    if (plan->steps[i].already_rebuilt) made[i] = plan->steps[i].already_rebuilt;
  }
  json report = json::array();
  int rebuilt = 0, failed = 0, skipped = 0;
  for (size_t wave = 1; wave <= max_wave; wave++) {
    struct Work {
      size_t step;
      std::vector<lineage::ParentSpec> parents;
      VersionKey old_parent, new_parent;
      std::unique_ptr<TempDir> out;
      CommandResult recipe;
      std::string cmd;
    };
    std::vector<Work> work;
    for (size_t i = 0; i < n; i++) {
      const CascadeStep& s = plan->steps[i];
      if (s.wave != wave || made[i]) continue;
      std::string why = s.skip_reason;
      Work w{i, {}, {}, {}, nullptr, {}, {}};
      for (const auto& p : s.parents) {
        lineage::ParentSpec ps{p.original, p.relation};
        if (p.is_old) {
          ps.parent = new_v;
        } else if (p.rebuilt_by) {
          if (!made[*p.rebuilt_by]) {
            if (why.empty())
              why = "its parent " + plan->steps[*p.rebuilt_by].target.str() + " failed";
            continue;
          }
          ps.parent = *made[*p.rebuilt_by];
        }
        if ((p.is_old || p.rebuilt_by) && w.new_parent.model.empty()) {
          w.old_parent = p.original;
          w.new_parent = ps.parent;
        }
        w.parents.push_back(ps);
      }
      if (!why.empty()) {
        failure[i] = why;
        skipped++;
        report.push_back({{"target", s.target.str()}, {"status", "skipped"}, {"reason", why}});
        if (!opt.as_json) std::printf("skip %s: %s\n", s.target.str().c_str(), why.c_str());
        continue;
      }
      auto out = TempDir::Make("lineagefs-cascade-");
      if (!out.ok()) return Fail(out.status());
      w.out = std::move(*out);
      work.push_back(std::move(w));
    }
    // Recipes of one wave run in parallel; ingest and tests follow one by one.
    std::atomic<size_t> next{0};
    auto worker = [&] {
      for (size_t k = next++; k < work.size(); k = next++) {
        Work& w = work[k];
        const CascadeStep& s = plan->steps[w.step];
        std::map<std::string, std::string> vars = {
            {"out_path", w.out->path()},
            {"model", s.target.model},
            {"version", s.target.version},
            {"mount", mnt->path()},
            {"path", mnt->VersionPath(s.target.model, s.target.version)},
            {"old_parent_path", mnt->VersionPath(w.old_parent.model, w.old_parent.version)}};
        for (size_t pi = 0; pi < w.parents.size(); pi++) {
          std::string p =
              mnt->VersionPath(w.parents[pi].parent.model, w.parents[pi].parent.version);
          if (pi == 0) vars["parent_path"] = p;
          vars["parent_path." + std::to_string(pi)] = p;
        }
        w.cmd = lineage::SubstituteCommand(s.recipe, vars);
        w.recipe = RunCommand(w.cmd, opt.recipe_timeout_s, lineage::EnvFor(vars), w.out->path());
      }
    };
    std::vector<std::thread> threads;
    int nt = std::max(1, std::min<int>(opt.parallel, static_cast<int>(work.size())));
    for (int t = 0; t < nt; t++) threads.emplace_back(worker);
    for (auto& t : threads) t.join();

    if (Interrupted()) return Fail("interrupted: nothing of this wave was committed");
    for (Work& w : work) {
      const CascadeStep& s = plan->steps[w.step];
      json entry = {{"target", s.target.str()}, {"recipe", w.cmd}};
      auto fail = [&](const std::string& why) {
        failure[w.step] = why;
        failed++;
        entry["status"] = "failed";
        entry["reason"] = why;
        report.push_back(entry);
        if (!opt.as_json) std::printf("FAIL %s: %s\n", s.target.str().c_str(), why.c_str());
      };
      if (w.recipe.exit_code != 0 || w.recipe.timed_out) {
        fail(std::string("recipe ") +
             (w.recipe.timed_out ? "timed out"
                                 : "exited with status " + std::to_string(w.recipe.exit_code)) +
             (w.recipe.stderr_tail.empty() ? "" : ": " + Tail(w.recipe.stderr_tail, 400)));
        continue;
      }
      auto target = lin.GetVersion(s.target);
      if (!target.ok()) return Fail(target.status());
      ImportRequest req;
      req.path = w.out->path();
      req.model = s.target.model;
      req.parent_specs = w.parents;
      req.message = "cascade: " + s.target.str() + " rebuilt against " + w.new_parent.str() +
                    " (was " + w.old_parent.str() + ")";
      req.author = target->author;
      req.metadata = RebuiltMetadata(*target, w.old_parent, w.new_parent);
      req.predecessor = s.target.version;  // the version it replaces, also a delta base
      req.draft = true;                    // committed only once its tests pass
      auto imported = ImportOne(lin, req, true);
      if (!imported.ok()) {
        fail("importing the recipe's output: " + imported.status().ToString());
        continue;
      }
      VersionKey key{(*imported)["model"].get<std::string>(),
                     (*imported)["version"].get<std::string>()};
      DraftGuard guard(lin, key);
      auto draft = lin.GetVersion(key);
      if (!draft.ok()) return Fail(draft.status());
      auto tests = lineage::TestsFor(*o.store, *draft);
      if (!tests.ok()) return Fail(tests.status());
      std::vector<Job> jobs;
      for (const auto& t : *tests) jobs.push_back({t, *draft});
      json test_results = json::array();
      auto nfail = RunJobs(lin, *mnt, jobs, opt.parallel, opt.as_json, &test_results);
      if (!nfail.ok()) return Fail(nfail.status());
      entry["tests"] = test_results;
      entry["bytes_stored_new"] = (*imported)["bytes_stored_new"];
      if (*nfail > 0) {
        std::string why = std::to_string(*nfail) + " test(s) failed on the rebuilt draft";
        if (opt.keep_failed) {
          why += "; kept as draft " + key.str();
          guard.Release();
        }
        fail(why);
        continue;
      }
      Status c = lin.Commit(key);
      if (!c.ok()) {
        fail("commit: " + c.ToString());
        continue;
      }
      guard.Release();
      made[w.step] = key;
      rebuilt++;
      entry["status"] = "rebuilt";
      entry["version"] = key.str();
      report.push_back(entry);
      if (!opt.as_json) {
        std::printf("rebuilt %s as %s (%s new in the store, %zu test(s) passed)\n",
                    s.target.str().c_str(), key.str().c_str(),
                    HumanBytes((*imported)["bytes_stored_new"].get<uint64_t>()).c_str(),
                    jobs.size());
      }
    }
  }
  if (opt.as_json) {
    json j = PlanJson(*plan);
    j["results"] = report;
    j["rebuilt"] = rebuilt;
    j["failed"] = failed;
    j["skipped"] = skipped;
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    std::printf("cascade done: %d rebuilt, %d failed, %d skipped\n", rebuilt, failed, skipped);
  }
  return failed ? kExitFailure : kExitOk;
}

// Versions a `test run` selects: VERSION (even a draft), --descendants (the
// committed ones), or every committed version.
Result<std::vector<Version>> SelectVersions(const Lineage& lin, const std::string& version,
                                            const std::string& descendants) {
  if (version.empty() && descendants.empty()) return AllCommitted(lin);
  LFS_ASSIGN_OR_RETURN(VersionKey k, VersionKey::Parse(version.empty() ? descendants : version));
  std::vector<VersionKey> keys{k};
  if (!descendants.empty()) {
    LFS_ASSIGN_OR_RETURN(auto d, lin.Descendants(k));
    keys.insert(keys.end(), d.begin(), d.end());
  }
  std::vector<Version> out;
  for (const auto& key : keys) {
    LFS_ASSIGN_OR_RETURN(Version v, lin.GetVersion(key));
    if (v.committed() || key == k) out.push_back(std::move(v));
  }
  return out;
}

int TestRun(Opened& o, const std::string& version, const std::string& descendants, bool all,
            const std::string& only, int parallel, const std::string& mount, bool as_json) {
  Lineage& lin = *o.lineage;
  auto versions = SelectVersions(lin, version, descendants);
  if (!versions.ok()) return Fail(versions.status());
  const bool pending_only = version.empty() && descendants.empty() && !all;
  std::vector<Job> jobs;
  for (const auto& v : *versions) {
    auto ts = lineage::TestsFor(*o.store, v);
    if (!ts.ok()) return Fail(ts.status());
    auto done = lineage::TestResults(v);
    for (const auto& t : *ts) {
      if (!only.empty() && t.name != only) continue;
      if (pending_only && done.ok() && done->count(t.name)) continue;
      jobs.push_back({t, v});
    }
  }
  if (!only.empty() && jobs.empty()) {
    auto t = lineage::GetTest(*o.store, only);
    if (t.ok() && !*t) return Fail("no test named '" + only + "'");
  }
  if (jobs.empty()) {
    std::printf(as_json ? "{\"results\": [], \"failed\": 0}\n" : "nothing to run\n");
    return kExitOk;
  }
  auto mnt = MountRef::Open(o.store->path(), mount);
  if (!mnt.ok()) return Fail(mnt.status());
  json results = json::array();
  auto failed = RunJobs(lin, *mnt, jobs, parallel, as_json, &results);
  if (!failed.ok()) return Fail(failed.status());
  if (as_json) {
    std::printf("%s\n", json({{"results", results}, {"failed", *failed}}).dump(2).c_str());
  } else {
    std::printf("%zu run, %d failed\n", jobs.size(), *failed);
  }
  return *failed ? kExitFailure : kExitOk;
}

int BisectCmd(Opened& o, const std::vector<std::string>& range, const std::string& test_name,
              const std::string& mount, bool as_json) {
  Lineage& lin = *o.lineage;
  auto ends = ParseRange(range);
  if (!ends.ok()) return Fail(ends.status());
  auto def = lineage::GetTest(*o.store, test_name);
  if (!def.ok()) return Fail(def.status());
  if (!*def) return Fail("no test named '" + test_name + "'");
  auto path = lineage::LineagePath(lin, ends->first, ends->second);
  if (!path.ok()) return Fail(path.status());
  auto mnt = MountRef::Open(o.store->path(), mount);
  if (!mnt.ok()) return Fail(mnt.status());
  if (!as_json) {
    std::printf("bisecting %zu versions from %s to %s with test %s\n", path->size(),
                ends->first.str().c_str(), ends->second.str().c_str(), test_name.c_str());
  }
  // GOOD's recorded result, if any, saves a run when GOOD must be checked.
  std::optional<bool> good_known;
  if (auto gv = lin.GetVersion(ends->first); gv.ok()) {
    auto recorded = lineage::TestResults(*gv);
    if (recorded.ok() && recorded->count(test_name)) good_known = recorded->at(test_name).passed;
  }
  auto outcome = lineage::Bisect(
      *path,
      [&](const VersionKey& k) -> Result<bool> {
        LFS_ASSIGN_OR_RETURN(Version v, lin.GetVersion(k));
        bool interrupted = false;
        TestResult r = RunTest(**def, *mnt, v, &interrupted);
        if (interrupted) return Status::Busy("interrupted");
        LFS_RETURN_IF_ERROR(lineage::RecordTestResult(lin, k, (*def)->name, r));
        if (!as_json) PrintResult(k, (*def)->name, r);
        return r.passed;
      },
      good_known);
  if (!outcome.ok()) return Fail(outcome.status());
  if (as_json) {
    json path_j = json::array(), log = json::array();
    for (const auto& k : *path) path_j.push_back(k.str());
    for (const auto& [k, ok] : outcome->log) log.push_back({{"version", k.str()}, {"passed", ok}});
    auto name = [](const std::optional<VersionKey>& k) { return k ? json(k->str()) : json(); };
    json j = {{"path", path_j},
              {"first_bad", name(outcome->first_bad)},
              {"last_good", name(outcome->last_good)},
              {"runs", outcome->runs},
              {"log", log}};
    std::printf("%s\n", j.dump(2).c_str());
  } else if (!outcome->first_bad) {
    std::printf("%s passes: nothing to bisect (%d run)\n", ends->second.str().c_str(),
                outcome->runs);
  } else {
    std::printf("first failing version: %s (its parent %s passes); %d test runs for %zu versions\n",
                outcome->first_bad->str().c_str(), outcome->last_good->str().c_str(), outcome->runs,
                path->size());
  }
  return kExitOk;
}

}  // namespace

void RegisterWorkflowCommands(CLI::App& app, int* rc) {
  auto store = std::make_shared<std::string>();
  auto as_json = std::make_shared<bool>(false);
  auto mount = std::make_shared<std::string>();
  const char* kMountHelp = "use this existing mount of STORE (default: a private one)";
  auto* test = app.add_subcommand("test", "tests over the lineage graph: add, list, rm, run");
  test->require_subcommand(1);
  // test add
  {
    auto def = std::make_shared<TestDef>();
    auto model = std::make_shared<std::string>(), relation = std::make_shared<std::string>();
    auto all = std::make_shared<bool>(false), replace = std::make_shared<bool>(false);
    auto body = std::make_shared<Body>();
    auto* c = Cmd(*test, rc, "add", "register a test (runs against each version's path)", store,
                  false, body);
    c->add_option("NAME", def->name, "test name")->required();
    c->add_option("--cmd", def->cmd,
                  "shell command; {path} {model} {version} {parent_path} {mount} are "
                  "substituted (also in $LINEAGEFS_PATH ...)")
        ->required();
    auto* om = c->add_option("--model", *model, "applies to this model's versions");
    auto* orl = c->add_option("--relation", *relation,
                              "applies to versions with a parent edge of this relation");
    auto* oa = c->add_flag("--all", *all, "applies to every version (the default)");
    om->excludes(orl)->excludes(oa);
    orl->excludes(oa);
    c->add_option("--metric-regex", def->metric_regex,
                  "regex over stdout lines: groups (name, value) or (value)");
    c->add_option("--pass-if", def->pass_if, "condition on metrics, e.g. 'acc>=0.8 && loss<1'");
    c->add_option("--timeout", def->timeout_s, "seconds")->capture_default_str();
    c->add_flag("--replace", *replace, "replace a test of that name");
    *body = [=](Opened& o) {
      TestDef d = *def;
      if (!model->empty()) d.scope = {TestScope::Kind::kModel, *model};
      if (!relation->empty()) d.scope = {TestScope::Kind::kRelation, *relation};
      d.created_ns = lineage::NowNs();
      Status s = lineage::PutTest(*o.store, d, *replace);
      if (!s.ok()) return Fail(s);
      std::printf("test %s registered for %s\n", d.name.c_str(), d.scope.str().c_str());
      return kExitOk;
    };
  }
  // test list
  {
    auto body = std::make_shared<Body>();
    auto* c = Cmd(*test, rc, "list", "registered tests", store, true, body);
    c->add_flag("--json", *as_json, "print JSON");
    *body = [=](Opened& o) {
      auto ts = lineage::ListTests(*o.store);
      if (!ts.ok()) return Fail(ts.status());
      json j = json::array();
      for (const auto& t : *ts) {
        j.push_back(json::parse(lineage::EncodeTestDef(t)));
        if (!*as_json) {
          std::printf("%-20s %-22s %s%s\n", t.name.c_str(), t.scope.str().c_str(), t.cmd.c_str(),
                      t.pass_if.empty() ? "" : ("  [pass if " + t.pass_if + "]").c_str());
        }
      }
      if (*as_json) std::printf("%s\n", j.dump(2).c_str());
      return kExitOk;
    };
  }
  // test rm
  {
    auto name = std::make_shared<std::string>();
    auto body = std::make_shared<Body>();
    auto* c = Cmd(*test, rc, "rm", "unregister a test (recorded results stay)", store, false, body);
    c->add_option("NAME", *name, "test name")->required();
    *body = [=](Opened& o) {
      Status s = lineage::RemoveTest(*o.store, *name);
      return s.ok() ? kExitOk : Fail(s);
    };
  }
  // test run
  {
    auto version = std::make_shared<std::string>(), descendants = std::make_shared<std::string>(),
         only = std::make_shared<std::string>();
    auto all = std::make_shared<bool>(false);
    auto parallel = std::make_shared<int>(1);
    auto body = std::make_shared<Body>();
    auto* c = Cmd(*test, rc, "run",
                  "run tests: on VERSION, on --descendants, on --all versions, or (default) "
                  "wherever an applicable test has no result yet",
                  store, false, body);
    c->add_option("VERSION", *version, "model/version");
    c->add_option("--descendants", *descendants, "this version and every version derived from it");
    c->add_flag("--all", *all, "every committed version");
    c->add_option("--test", *only, "only this test");
    c->add_option("-j,--jobs", *parallel, "tests run in parallel")->capture_default_str();
    c->add_option("--mount", *mount, kMountHelp);
    c->add_flag("--json", *as_json, "print JSON");
    *body = [=](Opened& o) {
      return TestRun(o, *version, *descendants, *all, *only, *parallel, *mount, *as_json);
    };
  }
  // bisect
  {
    auto test_name = std::make_shared<std::string>();
    auto range = std::make_shared<std::vector<std::string>>();
    auto body = std::make_shared<Body>();
    auto* c = Cmd(app, rc, "bisect", "find the first failing version on the lineage path GOOD..BAD",
                  store, false, body);
    c->add_option("RANGE", *range, "GOOD..BAD (a passing ancestor and a failing descendant)")
        ->required()
        ->expected(1, 2);
    c->add_option("--test", *test_name, "registered test to run")->required();
    c->add_option("--mount", *mount, kMountHelp);
    c->add_flag("--json", *as_json, "print JSON");
    *body = [=](Opened& o) { return BisectCmd(o, *range, *test_name, *mount, *as_json); };
  }
  // cascade
  {
    auto old_s = std::make_shared<std::string>(), new_s = std::make_shared<std::string>();
    auto opt = std::make_shared<CascadeOptions>();
    auto body = std::make_shared<Body>();
    auto* c = Cmd(app, rc, "cascade",
                  "rebuild every descendant of OLD against NEW with its recorded recipe, test, "
                  "commit",
                  store, false, body);
    c->add_option("OLD", *old_s, "model/version the descendants derive from")->required();
    c->add_option("NEW", *new_s, "its replacement (usually a newer version of the same model)")
        ->required();
    c->add_flag("--dry-run", opt->dry_run, "print the plan only");
    c->add_option("-j,--jobs", opt->parallel, "recipes and tests run in parallel")
        ->capture_default_str();
    c->add_flag("--keep-failed", opt->keep_failed, "keep a rebuild whose tests fail as a draft");
    c->add_option("--recipe-timeout", opt->recipe_timeout_s, "seconds per recipe")
        ->capture_default_str();
    c->add_option("--mount", opt->mount, kMountHelp);
    c->add_flag("--json", opt->as_json, "print JSON");
    *body = [=](Opened& o) {
      auto ko = VersionKey::Parse(*old_s);
      if (!ko.ok()) return Fail(ko.status());
      auto kn = VersionKey::Parse(*new_s);
      if (!kn.ok()) return Fail(kn.status());
      return RunCascade(o, *ko, *kn, *opt);
    };
  }
}

}  // namespace lfs::cli
