// Workflows over the lineage graph: registered tests and their results,
// bisection along a lineage path, and update-cascade plans. Everything here is
// pure bookkeeping over the lineage tables; running commands (and mounting the
// store they read) is the CLI's job, so the logic is unit-testable without a
// mount or a subprocess.
//
// Storage: a test definition is a JSON record in table `meta` under key
// `test:<name>`; a version's results live in its metadata under "tests"
// (name -> result), which the mount shows as user.lineage.test.<name>.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "lineage/lineage.h"

namespace lfs::lineage {

// Which versions a test applies to. Scopes are evaluated when tests run, so a
// test registered on a model or a relation covers versions added later.
struct TestScope {
  enum class Kind { kAll, kModel, kRelation };
  Kind kind = Kind::kAll;
  std::string value;  // model name, or relation name
  bool Matches(const Version& v) const;
  std::string str() const;  // "all", "model=M", "relation=R"
};

struct TestDef {
  std::string name;
  std::string cmd;  // {path} {model} {version} {parent_path} are substituted
  TestScope scope;
  std::string metric_regex;  // optional: group 1 = name, 2 = value (or 1 = value)
  std::string pass_if;       // optional: "acc>=0.8 && loss<1"
  double timeout_s = 600;
  int64_t created_ns = 0;
};

std::string EncodeTestDef(const TestDef& t);
Result<TestDef> DecodeTestDef(std::string_view s);

Status PutTest(Store& store, const TestDef& t, bool replace);
Status RemoveTest(Store& store, const std::string& name);
Result<std::optional<TestDef>> GetTest(const Store& store, const std::string& name);
Result<std::vector<TestDef>> ListTests(const Store& store);
// The registered tests that apply to v, by name.
Result<std::vector<TestDef>> TestsFor(const Store& store, const Version& v);

// A pass-if condition: comparisons of metrics with numbers joined by "&&"
// (or "and", ","). Parsed once so a typo fails at `test add`, not at run time.
struct Condition {
  struct Term {
    std::string metric;
    std::string op;  // >= <= > < == !=
    double value = 0;
  };
  std::vector<Term> terms;
  static Result<Condition> Parse(std::string_view s);
  // True when every term holds; a missing metric fails with a reason.
  bool Eval(const std::map<std::string, double>& metrics, std::string* why) const;
};

// Metrics from a test's stdout: a JSON object (the whole output or any line
// that is one: numeric members, nested objects flattened with '.'), lines of
// `name=value` / `name: value`, and metric_regex matches per line.
Result<std::map<std::string, double>> ParseMetrics(std::string_view stdout_text,
                                                   const std::string& metric_regex,
                                                   const std::string& test_name);

struct TestResult {
  bool passed = false;
  int exit_code = 0;  // 128+N when killed by signal N; -1 when it could not start
  bool timed_out = false;
  std::map<std::string, double> metrics;
  double duration_s = 0;
  std::string cmd;     // as run, after substitution
  std::string reason;  // why it failed (empty when passed)
  std::string output_tail;
  int64_t time_ns = 0;  // when it finished
};
std::string EncodeTestResult(const TestResult& r);  // JSON object
Result<TestResult> DecodeTestResult(std::string_view json_text);

// Exit status + metrics + condition -> pass/fail with a reason.
void Judge(const TestDef& def, TestResult* r);

// Records a result under metadata "tests"/<name> (annotation: allowed on
// committed versions).
Status RecordTestResult(Lineage& lin, const VersionKey& key, const std::string& test,
                        const TestResult& r);
Result<std::map<std::string, TestResult>> TestResults(const Version& v);

// Commands run via `sh -c`. Each placeholder {name} is also exported as
// LINEAGEFS_<NAME> ('.' -> '_'): EnvName("parent_path.1") is
// "LINEAGEFS_PARENT_PATH_1". SubstituteCommand puts a value in verbatim when
// it is made of characters no shell interprets, and otherwise a reference
// to LINEAGEFS_<NAME> quoted for where the placeholder stands (bare, inside
// "…" or inside '…'), which the shell expands once and never re-parses: a
// hostile model name cannot inject commands. Unknown placeholders stay.
std::string EnvName(const std::string& placeholder);
std::map<std::string, std::string> EnvFor(const std::map<std::string, std::string>& vars);
std::string SubstituteCommand(const std::string& cmd,
                              const std::map<std::string, std::string>& vars);

// --- Bisect ---------------------------------------------------------------
// The provenance path from ancestor `good` down to descendant `bad` (both
// included), shortest by edges; NotFound when bad does not derive from good.
Result<std::vector<VersionKey>> LineagePath(const Lineage& lin, const VersionKey& good,
                                            const VersionKey& bad);

struct BisectOutcome {
  std::optional<VersionKey> first_bad;  // nullopt: `bad` passed, nothing to find
  std::optional<VersionKey> last_good;
  int runs = 0;
  std::vector<std::pair<VersionKey, bool>> log;  // (version, passed) in run order
};
// path.back() is tested first (it must fail), then binary search over the
// versions between: at most ceil(log2(n-1)) + 1 runs for a path of n
// versions. path[0] is taken to pass on the user's word (`good_known`: e.g.
// a recorded result) unless every version tested fails: then it is tested
// too, and a failing path[0] is an error (a test broken everywhere must not
// name a culprit). `passes` returns Status on infrastructure errors.
Result<BisectOutcome> Bisect(const std::vector<VersionKey>& path,
                             const std::function<Result<bool>(const VersionKey&)>& passes,
                             std::optional<bool> good_known = std::nullopt);

// --- Cascade --------------------------------------------------------------
struct CascadeStep {
  VersionKey target;  // the existing descendant to rebuild
  // Its parents after the rebuild: rebuilt ones replaced (by step index until
  // they exist), the rest unchanged.
  struct Parent {
    VersionKey original;
    Relation relation = Relation::kFinetune;
    bool is_old = false;               // OLD itself: becomes NEW
    std::optional<size_t> rebuilt_by;  // index of the step producing it
  };
  std::vector<Parent> parents;
  std::string recipe;  // empty: cannot be rebuilt (its branch stops)
  std::string skip_reason;
  std::optional<VersionKey> already_rebuilt;  // by an earlier (interrupted) cascade run
  size_t wave = 0;                            // steps of one wave depend only on earlier waves
};
struct CascadePlan {
  VersionKey old_version, new_version;
  std::vector<CascadeStep> steps;  // topological (breadth-first) order
};
// Every committed descendant of old that an earlier cascade has not rebuilt
// already, breadth-first, a merge child after all of its rebuilt parents.
// Descendants of a step that cannot be rebuilt are skipped with a reason.
Result<CascadePlan> PlanCascade(const Lineage& lin, const VersionKey& old_version,
                                const VersionKey& new_version);

// Metadata written on a rebuilt version under "cascade".
std::string CascadeMetadata(const VersionKey& rebuilt_from, const VersionKey& old_parent,
                            const VersionKey& new_parent);
// Versions already rebuilt by a cascade: "rebuilt_from" -> each rebuild
// (committed ones only).
Result<std::multimap<VersionKey, VersionKey>> RebuiltVersions(const Lineage& lin);

}  // namespace lfs::lineage
