#include "lineage/workflow.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "store/formats/format.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace lfs::lineage {
namespace {

using TempDirGuard = testing::TempDir;

// Single quotes for building the test's own shell command line.
std::string ShellQuoteForTest(const std::string& v) {
  std::string out = "'";
  for (char c : v) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

class WorkflowTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_OK(Store::Create(dir_.path()));
    auto s = Store::Open(dir_.path());
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    store_ = std::move(s).value();
    lin_ = std::make_unique<Lineage>(*store_);
  }
  // A committed version with one small file and optional recipe.
  VersionKey Make(const std::string& model, std::vector<ParentSpec> parents = {},
                  const std::string& recipe = "", const std::string& content = "x") {
    Lineage::DraftOptions o;
    o.parents = std::move(parents);
    o.create_model = true;
    nlohmann::json md = nlohmann::json::object();
    if (!recipe.empty()) md["recipe"] = recipe;
    o.metadata_json = md.dump();
    auto v = lin_->CreateDraft(model, o);
    EXPECT_TRUE(v.ok()) << v.status().ToString();
    EXPECT_OK(lin_->AddFile(v->key, "f.bin", formats::MemoryAccess(content + model)).status());
    EXPECT_OK(lin_->Commit(v->key));
    return v->key;
  }
  ParentSpec P(const VersionKey& k, Relation r = Relation::kFinetune) { return {k, r}; }

  testing::TempDir dir_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<Lineage> lin_;
};

TEST_F(WorkflowTest, TestDefinitionsRoundTripAndValidate) {
  TestDef t;
  t.name = "acc";
  t.cmd = "python3 eval.py {path}";
  t.scope = {TestScope::Kind::kRelation, "quantized"};
  t.pass_if = "acc>=0.8 && loss < 1.5";
  t.metric_regex = R"(^(\w+)\s*=\s*(\S+)$)";
  ASSERT_OK(PutTest(*store_, t, false));
  EXPECT_CODE(PutTest(*store_, t, false), kAlreadyExists);
  ASSERT_OK(PutTest(*store_, t, true));
  ASSERT_OK_AND_ASSIGN(auto got, GetTest(*store_, "acc"));
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->cmd, t.cmd);
  EXPECT_EQ(got->scope.value, "quantize");  // canonical relation name
  EXPECT_EQ(got->pass_if, t.pass_if);

  TestDef bad = t;
  bad.name = "b1";
  bad.pass_if = "acc >= high";
  EXPECT_CODE(PutTest(*store_, bad, false), kInvalidArgument);
  bad.pass_if = "";
  bad.metric_regex = "(unclosed";
  EXPECT_CODE(PutTest(*store_, bad, false), kInvalidArgument);
  bad.metric_regex = "";
  bad.scope = {TestScope::Kind::kRelation, "fermentation"};
  EXPECT_CODE(PutTest(*store_, bad, false), kInvalidArgument);
  bad.scope = {};
  bad.name = "../x";
  EXPECT_CODE(PutTest(*store_, bad, false), kInvalidArgument);

  ASSERT_OK_AND_ASSIGN(auto all, ListTests(*store_));
  ASSERT_EQ(all.size(), 1u);
  ASSERT_OK(RemoveTest(*store_, "acc"));
  EXPECT_CODE(RemoveTest(*store_, "acc"), kNotFound);
}

TEST_F(WorkflowTest, ScopesApplyToVersionsAddedLater) {
  TestDef by_rel{"q", "true", {TestScope::Kind::kRelation, "quantize"}, "", "", 60, 0};
  TestDef by_model{"m", "true", {TestScope::Kind::kModel, "base"}, "", "", 60, 0};
  TestDef every{"e", "true", {}, "", "", 60, 0};
  ASSERT_OK(PutTest(*store_, by_rel, false));
  ASSERT_OK(PutTest(*store_, by_model, false));
  ASSERT_OK(PutTest(*store_, every, false));
  VersionKey base = Make("base");
  VersionKey q = Make("q8", {P(base, Relation::kQuantize)});
  VersionKey ft = Make("ft", {P(base)});
  auto names = [&](const VersionKey& k) {
    std::set<std::string> out;
    auto v = lin_->GetVersion(k);
    EXPECT_TRUE(v.ok());
    auto ts = TestsFor(*store_, *v);
    EXPECT_TRUE(ts.ok());
    for (const auto& t : *ts) out.insert(t.name);
    return out;
  };
  EXPECT_EQ(names(base), (std::set<std::string>{"e", "m"}));
  EXPECT_EQ(names(q), (std::set<std::string>{"e", "q"}));
  EXPECT_EQ(names(ft), (std::set<std::string>{"e"}));
}

TEST(ConditionTest, ParsesAndEvaluates) {
  ASSERT_OK_AND_ASSIGN(auto c, Condition::Parse("acc>=0.8 && loss<1, f1 != 0 and n==3"));
  ASSERT_EQ(c.terms.size(), 4u);
  std::string why;
  EXPECT_TRUE(c.Eval({{"acc", 0.8}, {"loss", 0.5}, {"f1", 0.2}, {"n", 3}}, &why)) << why;
  EXPECT_FALSE(c.Eval({{"acc", 0.79}, {"loss", 0.5}, {"f1", 0.2}, {"n", 3}}, &why));
  EXPECT_NE(why.find("acc=0.79"), std::string::npos) << why;
  EXPECT_FALSE(c.Eval({{"acc", 0.9}, {"f1", 0.2}, {"n", 3}}, &why));
  EXPECT_NE(why.find("loss"), std::string::npos) << why;
  EXPECT_CODE(Condition::Parse("acc"), kInvalidArgument);
  EXPECT_CODE(Condition::Parse(">= 3"), kInvalidArgument);
  EXPECT_CODE(Condition::Parse(""), kInvalidArgument);
  EXPECT_CODE(Condition::Parse("acc >= 0.8x"), kInvalidArgument);
}

TEST(MetricsTest, JsonLinesAndRegex) {
  ASSERT_OK_AND_ASSIGN(
      auto m, ParseMetrics(R"({"acc": 0.9, "eval": {"loss": 0.25}, "ok": true})", "", "t"));
  EXPECT_DOUBLE_EQ(m["acc"], 0.9);
  EXPECT_DOUBLE_EQ(m["eval.loss"], 0.25);
  EXPECT_DOUBLE_EQ(m["ok"], 1);
  ASSERT_OK_AND_ASSIGN(m, ParseMetrics("loading...\nacc=0.75\nloss: 1e-3\nnot a=metric x\n"
                                       "{\"f1\": 0.5}\n",
                                       "", "t"));
  EXPECT_EQ(m.size(), 3u);
  EXPECT_DOUBLE_EQ(m["acc"], 0.75);
  EXPECT_DOUBLE_EQ(m["loss"], 0.001);
  EXPECT_DOUBLE_EQ(m["f1"], 0.5);
  ASSERT_OK_AND_ASSIGN(m, ParseMetrics("Accuracy: 93.5%\n", R"(Accuracy: ([0-9.]+)%)", "acc"));
  EXPECT_DOUBLE_EQ(m["acc"], 93.5);
  // A JSON line longer than the regex cap still counts.
  std::string big = "{\"acc\": 0.5, \"pad\": \"" + std::string(5000, 'p') + "\"}\n";
  ASSERT_OK_AND_ASSIGN(m, ParseMetrics("log line\n" + big, "", "t"));
  EXPECT_DOUBLE_EQ(m["acc"], 0.5);
}

TEST(MetricsTest, HostileOutputIsBounded) {
  // 1 MiB of nesting: refused, not a stack overflow.
  std::string deep;
  for (int i = 0; i < 200000; i++) deep += "{\"a\":";
  ASSERT_OK_AND_ASSIGN(auto m, ParseMetrics(deep, "", "t"));
  EXPECT_TRUE(m.empty());
  // Quadratic-backtracking bait for a regex: parsed by hand, linear.
  std::string bait;
  for (int i = 0; i < 256; i++) bait += "x=" + std::string(4000, '1') + "z\n";
  ASSERT_OK_AND_ASSIGN(m, ParseMetrics(bait, "", "t"));
  EXPECT_TRUE(m.empty());
  // A flood of metrics is capped.
  std::string flood;
  for (int i = 0; i < 100000; i++) flood += "m" + std::to_string(i) + "=1\n";
  ASSERT_OK_AND_ASSIGN(m, ParseMetrics(flood, "", "t"));
  EXPECT_LE(m.size(), 256u);
  EXPECT_GT(m.size(), 0u);
  // A user regex over a megabyte line neither crashes nor matches past its cap.
  std::string huge(1 << 20, 'a');
  ASSERT_OK_AND_ASSIGN(m, ParseMetrics(huge + "=1\n", R"((a+)=(\d))", "t"));
  EXPECT_TRUE(m.empty());
}

TEST(JudgeTest, ExitStatusTimeoutAndCondition) {
  TestDef d{"t", "x", {}, "", "acc>=0.5", 5, 0};
  TestResult r;
  r.metrics = {{"acc", 0.6}};
  Judge(d, &r);
  EXPECT_TRUE(r.passed) << r.reason;
  r.exit_code = 3;
  Judge(d, &r);
  EXPECT_FALSE(r.passed);
  EXPECT_EQ(r.reason, "exit status 3");
  r.exit_code = 0;
  r.timed_out = true;
  Judge(d, &r);
  EXPECT_FALSE(r.passed);
  r.timed_out = false;
  r.metrics = {{"acc", 0.4}};
  Judge(d, &r);
  EXPECT_FALSE(r.passed);
  EXPECT_NE(r.reason.find("acc=0.4"), std::string::npos);
}

TEST(SubstituteTest, HostileValuesNeverReachTheShellParser) {
  TempDirGuard tmp;
  const std::string pwned = tmp.path() + "/pwned";
  std::map<std::string, std::string> vars = {
      {"path", "/mnt/m/v1"},
      {"model", "m$(touch " + pwned + ")`touch " + pwned + "`'\"; touch " + pwned},
      {"parent_path.1", "/mnt/p q"}};
  EXPECT_EQ(SubstituteCommand("eval \"{path}\" {path}/model.pt {unknown}", vars),
            "eval \"/mnt/m/v1\" /mnt/m/v1/model.pt {unknown}");
  EXPECT_EQ(SubstituteCommand("x {parent_path.1}", vars), "x \"${LINEAGEFS_PARENT_PATH_1}\"");
  EXPECT_EQ(SubstituteCommand("x \"a {parent_path.1}\"", vars),
            "x \"a ${LINEAGEFS_PARENT_PATH_1}\"");
  EXPECT_EQ(SubstituteCommand("x 'a {parent_path.1}'", vars),
            "x 'a '\"${LINEAGEFS_PARENT_PATH_1}\"''");
  EXPECT_EQ(EnvName("parent_path.1"), "LINEAGEFS_PARENT_PATH_1");
  // Run it for real, bare and inside double quotes: the name arrives intact
  // and nothing it contains is executed.
  for (const char* tmpl :
       {"printf '%s|' {model}", "printf '%s|' \"{model}\"", "printf '%s|' '{model}'"}) {
    std::string cmd;
    for (const auto& [k, v] : EnvFor(vars)) cmd += k + "=" + ShellQuoteForTest(v) + " ";
    cmd += "sh -c " + ShellQuoteForTest(SubstituteCommand(tmpl, vars));
    FILE* f = ::popen(cmd.c_str(), "r");
    ASSERT_NE(f, nullptr);
    char buf[512] = {};
    size_t n = std::fread(buf, 1, sizeof buf - 1, f);
    ::pclose(f);
    EXPECT_EQ(std::string(buf, n), vars["model"] + "|") << tmpl;
    EXPECT_FALSE(std::filesystem::exists(pwned)) << tmpl;
  }
}

TEST_F(WorkflowTest, ResultsAreRecordedOnCommittedVersions) {
  VersionKey v = Make("base");
  TestResult r;
  r.passed = true;
  r.metrics = {{"acc", 0.91}};
  r.time_ns = 1234;
  r.cmd = "true";
  ASSERT_OK_AND_ASSIGN(Version before, lin_->GetVersion(v));
  ASSERT_OK(RecordTestResult(*lin_, v, "acc", r));
  r.passed = false;
  r.reason = "exit status 1";
  ASSERT_OK(RecordTestResult(*lin_, v, "smoke", r));
  ASSERT_OK_AND_ASSIGN(Version got, lin_->GetVersion(v));
  EXPECT_TRUE(got.committed());
  ASSERT_OK_AND_ASSIGN(auto res, TestResults(got));
  ASSERT_EQ(res.size(), 2u);
  EXPECT_TRUE(res["acc"].passed);
  EXPECT_DOUBLE_EQ(res["acc"].metrics["acc"], 0.91);
  EXPECT_FALSE(res["smoke"].passed);
  EXPECT_EQ(res["smoke"].reason, "exit status 1");
  EXPECT_EQ(got.ContentId(), before.ContentId());  // annotation does not change content
  // Output that is not UTF-8 (a progress bar cut mid-character) is stored.
  r.output_tail = std::string("\xe2\x96") + "\xff tail";
  ASSERT_OK(RecordTestResult(*lin_, v, "bytes", r));
  ASSERT_OK_AND_ASSIGN(got, lin_->GetVersion(v));
  ASSERT_OK_AND_ASSIGN(res, TestResults(got));
  EXPECT_EQ(res.count("bytes"), 1u);
}

TEST_F(WorkflowTest, BisectFindsFirstBadWithinLogRuns) {
  // A chain base -> c1 -> ... -> c15 (16 versions); the bad one is planted at
  // every position in turn.
  std::vector<VersionKey> chain{Make("base")};
  for (int i = 1; i < 16; i++) {
    chain.push_back(Make("c" + std::to_string(i), {P(chain.back())}));
  }
  ASSERT_OK_AND_ASSIGN(auto path, LineagePath(*lin_, chain.front(), chain.back()));
  ASSERT_EQ(path.size(), chain.size());
  const int bound = 1 + static_cast<int>(std::ceil(std::log2(path.size())));
  for (size_t bad = 1; bad < chain.size(); bad++) {
    ASSERT_OK_AND_ASSIGN(auto out, Bisect(path, [&](const VersionKey& k) -> Result<bool> {
                           size_t i = std::find(chain.begin(), chain.end(), k) - chain.begin();
                           return i < bad;
                         }));
    ASSERT_TRUE(out.first_bad.has_value());
    EXPECT_EQ(*out.first_bad, chain[bad]);
    EXPECT_EQ(*out.last_good, chain[bad - 1]);
    EXPECT_LE(out.runs, bound) << "bad at " << bad;
  }
  // Nothing to find when the end passes.
  ASSERT_OK_AND_ASSIGN(auto none,
                       Bisect(path, [](const VersionKey&) -> Result<bool> { return true; }));
  EXPECT_FALSE(none.first_bad.has_value());
  EXPECT_EQ(none.runs, 1);
  // A test failing everywhere does not name a culprit: GOOD is checked.
  int runs = 0;
  EXPECT_CODE(Bisect(path,
                     [&](const VersionKey&) -> Result<bool> {
                       runs++;
                       return false;
                     })
                  .status(),
              kInvalidArgument);
  EXPECT_LE(runs, bound + 1);
  // ... unless a recorded result vouches for it (no extra run).
  ASSERT_OK_AND_ASSIGN(
      auto vouched,
      Bisect(
          path, [&](const VersionKey& k) -> Result<bool> { return k == chain[0]; }, true));
  EXPECT_EQ(*vouched.first_bad, chain[1]);
  EXPECT_LE(vouched.runs, bound);
  // Errors of the runner stop the bisection.
  EXPECT_CODE(
      Bisect(path, [](const VersionKey&) -> Result<bool> { return Status::IOError("mount gone"); })
          .status(),
      kIOError);
}

TEST_F(WorkflowTest, LineagePathFollowsParentsThenPredecessors) {
  VersionKey base = Make("base");
  VersionKey ft1 = Make("ft", {P(base)});
  VersionKey ft2 = Make("ft", {}, "", "y");  // next checkpoint: predecessor only
  VersionKey q = Make("q", {P(ft2, Relation::kQuantize)});
  ASSERT_OK_AND_ASSIGN(auto path, LineagePath(*lin_, base, q));
  std::vector<VersionKey> want{base, ft1, ft2, q};
  EXPECT_EQ(path, want);
  VersionKey other = Make("other");
  EXPECT_CODE(LineagePath(*lin_, other, q).status(), kNotFound);
}

TEST_F(WorkflowTest, CascadePlanOrdersMergesAfterAllRebuiltParents) {
  VersionKey base1 = Make("base", {}, "", "1");
  VersionKey ft = Make("ft", {P(base1)}, "train {parent_path} {out_path}");
  VersionKey q = Make("q", {P(ft, Relation::kQuantize)}, "quant {parent_path} {out_path}");
  VersionKey other = Make("other");
  VersionKey merged = Make("merged", {P(q, Relation::kMerge), P(other, Relation::kMerge)},
                           "merge {parent_path.0} {parent_path.1} {out_path}");
  VersionKey norecipe = Make("adapter", {P(base1, Relation::kAdapter)});
  VersionKey below = Make("below", {P(norecipe)}, "x");
  VersionKey base2 = Make("base", {}, "", "2");

  ASSERT_OK_AND_ASSIGN(auto plan, PlanCascade(*lin_, base1, base2));
  std::map<std::string, const CascadeStep*> by;
  for (const auto& s : plan.steps) by[s.target.str()] = &s;
  ASSERT_EQ(by.size(), 5u);
  EXPECT_EQ(by[ft.str()]->wave, 1u);
  EXPECT_EQ(by[q.str()]->wave, 2u);
  EXPECT_EQ(by[merged.str()]->wave, 3u);
  EXPECT_TRUE(by[ft.str()]->parents[0].is_old);
  ASSERT_TRUE(by[q.str()]->parents[0].rebuilt_by.has_value());
  EXPECT_EQ(plan.steps[*by[q.str()]->parents[0].rebuilt_by].target, ft);
  // The merge keeps its other parent unchanged.
  EXPECT_TRUE(by[merged.str()]->parents[0].rebuilt_by.has_value());
  EXPECT_FALSE(by[merged.str()]->parents[1].rebuilt_by.has_value());
  EXPECT_FALSE(by[merged.str()]->parents[1].is_old);
  EXPECT_EQ(by[norecipe.str()]->skip_reason, "no recipe recorded");
  EXPECT_NE(by[below.str()]->skip_reason.find("not rebuilt"), std::string::npos);
  // Steps come in wave order.
  for (size_t i = 1; i < plan.steps.size(); i++) {
    EXPECT_LE(plan.steps[i - 1].wave, plan.steps[i].wave);
  }

  // A rebuild recorded by an earlier (interrupted) run is reused, not redone.
  Lineage::DraftOptions o;
  o.parents = {P(base2)};
  o.metadata_json =
      nlohmann::json({{"cascade", nlohmann::json::parse(CascadeMetadata(ft, base1, base2))}})
          .dump();
  ASSERT_OK_AND_ASSIGN(Version ft2, lin_->CreateDraft("ft", o));
  ASSERT_OK(lin_->AddFile(ft2.key, "f.bin", formats::MemoryAccess("rebuilt")).status());
  ASSERT_OK(lin_->Commit(ft2.key));
  ASSERT_OK_AND_ASSIGN(auto again, PlanCascade(*lin_, base1, base2));
  bool saw = false;
  for (const auto& s : again.steps) {
    EXPECT_NE(s.target, ft2.key);  // derives from NEW: never a target
    if (s.target == ft) {
      ASSERT_TRUE(s.already_rebuilt.has_value());
      EXPECT_EQ(*s.already_rebuilt, ft2.key);
      saw = true;
    }
  }
  EXPECT_TRUE(saw);
  EXPECT_CODE(PlanCascade(*lin_, base1, base1).status(), kInvalidArgument);
  EXPECT_CODE(PlanCascade(*lin_, ft, base1).status(), kInvalidArgument);  // backwards
}

TEST_F(WorkflowTest, CascadeNeverTargetsNewAndDropsTombstonedParents) {
  VersionKey old_base = Make("base", {}, "", "1");
  VersionKey gone = Make("gone");
  VersionKey ft = Make("ft", {P(old_base), P(gone, Relation::kMerge)}, "r");
  // NEW imported as a child of OLD: a descendant of OLD, never a target.
  VersionKey new_base = Make("base", {P(old_base)}, "r2", "2");
  ASSERT_OK(lin_->RemoveVersion(gone, /*force=*/true));
  ASSERT_OK_AND_ASSIGN(auto plan, PlanCascade(*lin_, old_base, new_base));
  ASSERT_EQ(plan.steps.size(), 1u);
  EXPECT_EQ(plan.steps[0].target, ft);
  ASSERT_EQ(plan.steps[0].parents.size(), 1u);  // the tombstone is not carried over
  EXPECT_TRUE(plan.steps[0].parents[0].is_old);
}

}  // namespace
}  // namespace lfs::lineage
