#include "lineage/workflow.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>

namespace lfs::lineage {

using json = nlohmann::json;

namespace {
constexpr char kTestKeyPrefix[] = "test:";
// std::regex recurses per character: cap what it sees on hostile output.
constexpr size_t kMaxRegexLine = 1024;
constexpr size_t kMaxRegexBytes = 64 << 10;  // the user regex sees the output's tail only
// Metrics end up in the version record and an xattr: keep them small.
constexpr int kMaxJsonDepth = 16;
constexpr size_t kMaxMetrics = 256;
constexpr size_t kMaxMetricName = 128;

std::string Trim(std::string_view s) {
  size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string_view::npos) return "";
  size_t e = s.find_last_not_of(" \t\r\n");
  return std::string(s.substr(b, e - b + 1));
}

Status MutateMeta(Store& store, const std::function<Status(WriteTxn&)>& fn) {
  LFS_ASSIGN_OR_RETURN(auto batch, store.BeginWrite());
  return batch->Commit(fn);
}

bool ParseDouble(const std::string& s, double* out) {
  if (s.empty()) return false;
  char* end = nullptr;
  double v = std::strtod(s.c_str(), &end);
  if (end != s.c_str() + s.size() || !std::isfinite(v)) return false;
  *out = v;
  return true;
}
void Flatten(const json& j, const std::string& prefix, int depth,
             std::map<std::string, double>* out) {
  if (depth > kMaxJsonDepth) return;
  for (const auto& [k, v] : j.items()) {
    if (out->size() >= kMaxMetrics) return;
    std::string name = prefix.empty() ? k : prefix + "." + k;
    if (name.size() > kMaxMetricName) continue;
    if (v.is_number()) {
      (*out)[name] = v.get<double>();
    } else if (v.is_boolean()) {
      (*out)[name] = v.get<bool>() ? 1 : 0;
    } else if (v.is_object()) {
      Flatten(v, name, depth + 1, out);
    }
  }
}

// JSON parse with a depth limit (nlohmann's parser itself recurses per level).
json ParseShallowJson(std::string_view s) {
  int depth = 0, max_depth = 0;
  bool in_str = false, esc = false;
  for (char c : s) {
    if (in_str) {
      if (esc) {
        esc = false;
      } else if (c == '\\') {
        esc = true;
      } else if (c == '"') {
        in_str = false;
      }
    } else if (c == '"') {
      in_str = true;
    } else if (c == '{' || c == '[') {
      max_depth = std::max(max_depth, ++depth);
      if (max_depth > kMaxJsonDepth) return json::value_t::discarded;
    } else if (c == '}' || c == ']') {
      depth--;
    }
  }
  return json::parse(s, nullptr, false);
}

bool IsNameChar(char c, bool first) {
  return std::isalpha(static_cast<unsigned char>(c)) || c == '_' ||
         (!first &&
          (std::isdigit(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '/'));
}

// "name=value" or "name: value" (spaces allowed around), by hand: a regex
// here backtracks quadratically on hostile lines.
bool ParsePair(std::string_view line, std::string* name, double* value) {
  std::string t = Trim(line);
  if (t.empty() || !IsNameChar(t[0], true)) return false;
  size_t i = 1;
  while (i < t.size() && IsNameChar(t[i], false)) i++;
  if (i > kMaxMetricName) return false;
  size_t j = i;
  while (j < t.size() && (t[j] == ' ' || t[j] == '\t')) j++;
  if (j >= t.size() || (t[j] != '=' && t[j] != ':')) return false;
  std::string num = Trim(std::string_view(t).substr(j + 1));
  if (num.empty() || num.size() > 64) return false;
  *name = t.substr(0, i);
  return ParseDouble(num, value);
}

}  // namespace

// ---------------------------------------------------------------------------
// Tests

bool TestScope::Matches(const Version& v) const {
  switch (kind) {
    case Kind::kAll: return true;
    case Kind::kModel: return v.key.model == value;
    case Kind::kRelation:
      for (const auto& p : v.parents) {
        if (RelationName(p.relation) == value) return true;
      }
      return false;
  }
  return false;
}

std::string TestScope::str() const {
  switch (kind) {
    case Kind::kAll: return "all";
    case Kind::kModel: return "model=" + value;
    case Kind::kRelation: return "relation=" + value;
  }
  return "?";
}

std::string EncodeTestDef(const TestDef& t) {
  const char* kind = t.scope.kind == TestScope::Kind::kAll     ? "all"
                     : t.scope.kind == TestScope::Kind::kModel ? "model"
                                                               : "relation";
  json j = {{"format", 1},
            {"name", t.name},
            {"cmd", t.cmd},
            {"scope", kind},
            {"scope_value", t.scope.value},
            {"metric_regex", t.metric_regex},
            {"pass_if", t.pass_if},
            {"timeout_s", t.timeout_s},
            {"created_ns", t.created_ns}};
  return j.dump();
}

Result<TestDef> DecodeTestDef(std::string_view s) {
  json j = json::parse(s, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return Status::Corruption("test record is not JSON");
  try {
    TestDef t;
    t.name = j.at("name").get<std::string>();
    t.cmd = j.at("cmd").get<std::string>();
    std::string kind = j.at("scope").get<std::string>();
    t.scope.kind = kind == "all"     ? TestScope::Kind::kAll
                   : kind == "model" ? TestScope::Kind::kModel
                                     : TestScope::Kind::kRelation;
    if (kind != "all" && kind != "model" && kind != "relation") {
      return Status::Corruption("test " + t.name + ": unknown scope " + kind);
    }
    t.scope.value = j.value("scope_value", "");
    t.metric_regex = j.value("metric_regex", "");
    t.pass_if = j.value("pass_if", "");
    t.timeout_s = j.value("timeout_s", 600.0);
    t.created_ns = j.value("created_ns", int64_t{0});
    return t;
  } catch (const json::exception& e) {
    return Status::Corruption(std::string("test record: ") + e.what());
  }
}

Status PutTest(Store& store, const TestDef& t, bool replace) {
  LFS_RETURN_IF_ERROR(ValidateName("test", t.name));
  if (t.cmd.empty()) return Status::InvalidArgument("test " + t.name + ": empty command");
  if (!t.pass_if.empty()) LFS_RETURN_IF_ERROR(Condition::Parse(t.pass_if).status());
  if (!t.metric_regex.empty()) {
    try {
      std::regex re(t.metric_regex);
      if (re.mark_count() < 1 || re.mark_count() > 2) {
        return Status::InvalidArgument(
            "--metric-regex needs one group (the value) or two (name, value)");
      }
    } catch (const std::regex_error& e) {
      return Status::InvalidArgument("--metric-regex: " + std::string(e.what()));
    }
  }
  if (t.scope.kind == TestScope::Kind::kRelation && !ParseRelation(t.scope.value)) {
    return Status::InvalidArgument("unknown relation '" + t.scope.value + "'");
  }
  TestDef rec = t;
  if (rec.scope.kind == TestScope::Kind::kRelation) {
    rec.scope.value = RelationName(*ParseRelation(t.scope.value));  // canonical name
  }
  return MutateMeta(store, [&](WriteTxn& txn) -> Status {
    std::string key = kTestKeyPrefix + t.name;
    LFS_ASSIGN_OR_RETURN(auto old, txn.Get(Table::kMeta, key));
    if (old && !replace) {
      return Status::AlreadyExists("a test named '" + t.name + "' exists (use --replace)");
    }
    return txn.Put(Table::kMeta, key, EncodeTestDef(rec));
  });
}

Status RemoveTest(Store& store, const std::string& name) {
  return MutateMeta(store, [&](WriteTxn& txn) -> Status {
    std::string key = kTestKeyPrefix + name;
    LFS_ASSIGN_OR_RETURN(auto old, txn.Get(Table::kMeta, key));
    if (!old) return Status::NotFound("no test named '" + name + "'");
    return txn.Del(Table::kMeta, key);
  });
}

Result<std::optional<TestDef>> GetTest(const Store& store, const std::string& name) {
  ReadTxn txn(store.db());
  LFS_RETURN_IF_ERROR(txn.begin_status());
  LFS_ASSIGN_OR_RETURN(auto v, txn.Get(Table::kMeta, kTestKeyPrefix + name));
  if (!v) return std::optional<TestDef>();
  LFS_ASSIGN_OR_RETURN(TestDef t, DecodeTestDef(*v));
  return std::optional<TestDef>(std::move(t));
}

Result<std::vector<TestDef>> ListTests(const Store& store) {
  std::vector<TestDef> out;
  Status err;
  ReadTxn txn(store.db());
  LFS_RETURN_IF_ERROR(txn.begin_status());
  LFS_RETURN_IF_ERROR(
      txn.ScanPrefix(Table::kMeta, kTestKeyPrefix, [&](std::string_view, std::string_view v) {
        auto t = DecodeTestDef(v);
        if (!t.ok()) {
          err = t.status();
          return false;
        }
        out.push_back(std::move(*t));
        return true;
      }));
  LFS_RETURN_IF_ERROR(err);
  return out;
}

Result<std::vector<TestDef>> TestsFor(const Store& store, const Version& v) {
  LFS_ASSIGN_OR_RETURN(auto all, ListTests(store));
  std::vector<TestDef> out;
  for (auto& t : all) {
    if (t.scope.Matches(v)) out.push_back(std::move(t));
  }
  return out;
}

Result<Condition> Condition::Parse(std::string_view text) {
  Condition c;
  // Split on "&&", " and " and ",".
  std::string s(text);
  for (const char* sep : {"&&", " and ", ","}) {
    size_t pos;
    while ((pos = s.find(sep)) != std::string::npos) s.replace(pos, std::strlen(sep), "\x1f");
  }
  size_t start = 0;
  while (start <= s.size()) {
    size_t end = s.find('\x1f', start);
    if (end == std::string::npos) end = s.size();
    std::string term = Trim(std::string_view(s).substr(start, end - start));
    start = end + 1;
    if (term.empty()) continue;
    static const char* kOps[] = {">=", "<=", "==", "!=", ">", "<"};
    Term t;
    size_t at = std::string::npos;
    for (const char* op : kOps) {
      at = term.find(op);
      if (at != std::string::npos) {
        t.op = op;
        break;
      }
    }
    if (at == std::string::npos || at == 0) {
      return Status::InvalidArgument("condition '" + term + "': expected METRIC OP NUMBER");
    }
    t.metric = Trim(term.substr(0, at));
    std::string num = Trim(term.substr(at + t.op.size()));
    if (!ParseDouble(num, &t.value)) {
      return Status::InvalidArgument("condition '" + term + "': '" + num + "' is not a number");
    }
    c.terms.push_back(std::move(t));
  }
  if (c.terms.empty()) return Status::InvalidArgument("empty condition");
  return c;
}

bool Condition::Eval(const std::map<std::string, double>& metrics, std::string* why) const {
  for (const auto& t : terms) {
    auto it = metrics.find(t.metric);
    if (it == metrics.end()) {
      *why = "metric '" + t.metric + "' was not reported";
      return false;
    }
    double v = it->second;
    bool ok = t.op == ">="   ? v >= t.value
              : t.op == "<=" ? v <= t.value
              : t.op == "==" ? v == t.value
              : t.op == "!=" ? v != t.value
              : t.op == ">"  ? v > t.value
                             : v < t.value;
    if (!ok) {
      char cond[200];
      std::snprintf(cond, sizeof cond, "%s=%.6g fails %s%s%.6g", t.metric.c_str(), v,
                    t.metric.c_str(), t.op.c_str(), t.value);
      *why = cond;
      return false;
    }
  }
  return true;
}

Result<std::map<std::string, double>> ParseMetrics(std::string_view out,
                                                   const std::string& metric_regex,
                                                   const std::string& test_name) {
  std::map<std::string, double> m;
  json whole = ParseShallowJson(out);
  if (!whole.is_discarded() && whole.is_object()) {
    Flatten(whole, "", 0, &m);
    return m;
  }
  std::optional<std::regex> user;
  if (!metric_regex.empty()) {
    try {
      user.emplace(metric_regex);
    } catch (const std::regex_error& e) {
      return Status::InvalidArgument("metric regex: " + std::string(e.what()));
    }
  }
  const size_t regex_from = out.size() > kMaxRegexBytes ? out.size() - kMaxRegexBytes : 0;
  size_t pos = 0;
  while (pos < out.size() && m.size() < kMaxMetrics) {
    size_t nl = out.find('\n', pos);
    if (nl == std::string_view::npos) nl = out.size();
    std::string_view line = out.substr(pos, nl - pos);
    size_t line_start = pos;
    pos = nl + 1;
    std::string t = Trim(line);
    if (!t.empty() && t.front() == '{') {
      json j = ParseShallowJson(t);
      if (!j.is_discarded() && j.is_object()) {
        Flatten(j, "", 0, &m);
        continue;
      }
    }
    if (user && line_start >= regex_from) {
      std::string capped(line.substr(0, kMaxRegexLine));
      std::smatch sm;
      if (std::regex_search(capped, sm, *user)) {
        double v;
        if (sm.size() == 3 && sm[1].length() <= static_cast<long>(kMaxMetricName) &&
            ParseDouble(sm[2].str(), &v)) {
          m[sm[1].str()] = v;
        } else if (sm.size() == 2 && ParseDouble(sm[1].str(), &v)) {
          m[test_name] = v;
        }
        continue;
      }
    }
    std::string name;
    double v;
    if (ParsePair(line, &name, &v)) m[name] = v;
  }
  return m;
}

std::string EncodeTestResult(const TestResult& r) {
  json metrics = json::object();
  for (const auto& [k, v] : r.metrics) metrics[k] = v;
  json j = {{"passed", r.passed},
            {"exit_code", r.exit_code},
            {"timed_out", r.timed_out},
            {"metrics", metrics},
            {"duration_s", std::round(r.duration_s * 1000) / 1000},
            {"cmd", r.cmd},
            {"reason", r.reason},
            {"output_tail", r.output_tail},
            {"time", IsoTime(r.time_ns)},
            {"time_ns", r.time_ns}};
  // Test output is arbitrary bytes: never let invalid UTF-8 throw.
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

Result<TestResult> DecodeTestResult(std::string_view s) {
  json j = json::parse(s, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return Status::Corruption("test result is not JSON");
  TestResult r;
  r.passed = j.value("passed", false);
  r.exit_code = j.value("exit_code", 0);
  r.timed_out = j.value("timed_out", false);
  if (j.contains("metrics") && j["metrics"].is_object()) Flatten(j["metrics"], "", 0, &r.metrics);
  r.duration_s = j.value("duration_s", 0.0);
  r.cmd = j.value("cmd", "");
  r.reason = j.value("reason", "");
  r.output_tail = j.value("output_tail", "");
  r.time_ns = j.value("time_ns", int64_t{0});
  return r;
}

void Judge(const TestDef& def, TestResult* r) {
  r->passed = false;
  if (r->timed_out) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "timed out after %.0f s", def.timeout_s);
    r->reason = buf;
    return;
  }
  if (r->exit_code != 0) {
    r->reason =
        r->exit_code < 0 ? "could not start" : "exit status " + std::to_string(r->exit_code);
    return;
  }
  if (!def.pass_if.empty()) {
    auto c = Condition::Parse(def.pass_if);
    if (!c.ok()) {
      r->reason = c.status().message();
      return;
    }
    std::string why;
    if (!c->Eval(r->metrics, &why)) {
      r->reason = why;
      return;
    }
  }
  r->passed = true;
  r->reason.clear();
}

Status RecordTestResult(Lineage& lin, const VersionKey& key, const std::string& test,
                        const TestResult& r) {
  return lin.UpdateMetadata(key, [&](std::string* md_text) -> Status {
    json md = json::parse(*md_text, nullptr, false);
    if (!md.is_object()) md = json::object();
    if (!md.contains("tests") || !md["tests"].is_object()) md["tests"] = json::object();
    md["tests"][test] = json::parse(EncodeTestResult(r));
    *md_text = md.dump(-1, ' ', false, json::error_handler_t::replace);
    return Status::OK();
  });
}

Result<std::map<std::string, TestResult>> TestResults(const Version& v) {
  std::map<std::string, TestResult> out;
  json md = json::parse(v.metadata_json, nullptr, false);
  if (!md.is_object() || !md.contains("tests") || !md["tests"].is_object()) return out;
  for (const auto& [name, val] : md["tests"].items()) {
    auto r = DecodeTestResult(val.dump());
    if (r.ok()) out[name] = std::move(*r);
  }
  return out;
}

std::string EnvName(const std::string& placeholder) {
  std::string name = "LINEAGEFS_";
  for (char c : placeholder) {
    name += std::isalnum(static_cast<unsigned char>(c))
                ? static_cast<char>(std::toupper(static_cast<unsigned char>(c)))
                : '_';
  }
  return name;
}

std::map<std::string, std::string> EnvFor(const std::map<std::string, std::string>& vars) {
  std::map<std::string, std::string> env;
  for (const auto& [k, v] : vars) env[EnvName(k)] = v;
  return env;
}

std::string SubstituteCommand(const std::string& cmd,
                              const std::map<std::string, std::string>& vars) {
  // A placeholder's shell context decides how a reference is written:
  // bare "${X}", inside double quotes ${X}, inside single quotes '"${X}"'.
  enum class Ctx { kBare, kDouble, kSingle } ctx = Ctx::kBare;
  auto render = [&](const std::string& name, const std::string& v) -> std::string {
    bool plain = !v.empty() && std::all_of(v.begin(), v.end(), [](unsigned char c) {
      return std::isalnum(c) || std::strchr("_./:@%+=,-", c) != nullptr;
    });
    if (plain) return v;
    std::string ref = "${" + EnvName(name) + "}";
    switch (ctx) {
      case Ctx::kBare: return "\"" + ref + "\"";
      case Ctx::kDouble: return ref;
      case Ctx::kSingle: return "'\"" + ref + "\"'";
    }
    return ref;
  };
  std::string out;
  size_t i = 0;
  while (i < cmd.size()) {
    char c = cmd[i];
    if (c == '{') {
      size_t close = cmd.find('}', i + 1);
      if (close != std::string::npos) {
        auto it = vars.find(cmd.substr(i + 1, close - i - 1));
        if (it != vars.end()) {
          out += render(it->first, it->second);
          i = close + 1;
          continue;
        }
      }
    }
    if (c == '\\' && ctx != Ctx::kSingle && i + 1 < cmd.size()) {
      out += cmd.substr(i, 2);  // an escaped character changes no context
      i += 2;
      continue;
    }
    if (c == '\'' && ctx != Ctx::kDouble) ctx = ctx == Ctx::kSingle ? Ctx::kBare : Ctx::kSingle;
    if (c == '"' && ctx != Ctx::kSingle) ctx = ctx == Ctx::kDouble ? Ctx::kBare : Ctx::kDouble;
    out += c;
    i++;
  }
  return out;
}

// ---------------------------------------------------------------------------
// Bisect

Result<std::vector<VersionKey>> LineagePath(const Lineage& lin, const VersionKey& good,
                                            const VersionKey& bad) {
  LFS_RETURN_IF_ERROR(lin.GetVersion(good).status());
  LFS_RETURN_IF_ERROR(lin.GetVersion(bad).status());
  // BFS upwards from bad through provenance edges and, failing those, the
  // predecessor (successive checkpoints of one training run).
  std::map<VersionKey, VersionKey> down;  // ancestor -> the version it was reached from
  std::set<VersionKey> seen{bad};
  std::deque<VersionKey> q{bad};
  bool found = bad == good;
  while (!q.empty() && !found) {
    VersionKey k = q.front();
    q.pop_front();
    auto got = lin.GetVersion(k);
    if (!got.ok() && got.status().code() == Status::Code::kNotFound) continue;  // removed
    LFS_ASSIGN_OR_RETURN(Version v, std::move(got));
    std::vector<VersionKey> ups;
    for (const auto& p : v.parents) {
      if (!p.tombstone) ups.push_back(p.parent);
    }
    if (v.predecessor) ups.push_back({v.key.model, *v.predecessor});
    for (const auto& u : ups) {
      if (!seen.insert(u).second) continue;
      down[u] = k;
      if (u == good) {
        found = true;
        break;
      }
      q.push_back(u);
    }
  }
  if (!found) return Status::NotFound(bad.str() + " does not derive from " + good.str());
  std::vector<VersionKey> path{good};
  while (!(path.back() == bad)) path.push_back(down.at(path.back()));
  return path;
}

Result<BisectOutcome> Bisect(const std::vector<VersionKey>& path,
                             const std::function<Result<bool>(const VersionKey&)>& passes,
                             std::optional<bool> good_known) {
  if (path.size() < 2) return Status::InvalidArgument("bisect needs two distinct versions");
  BisectOutcome out;
  auto run = [&](size_t i) -> Result<bool> {
    LFS_ASSIGN_OR_RETURN(bool ok, passes(path[i]));
    out.runs++;
    out.log.push_back({path[i], ok});
    return ok;
  };
  LFS_ASSIGN_OR_RETURN(bool bad_passes, run(path.size() - 1));
  if (bad_passes) return out;
  size_t lo = 0, hi = path.size() - 1;  // invariant: lo passes, hi fails
  while (hi - lo > 1) {
    size_t mid = lo + (hi - lo) / 2;
    LFS_ASSIGN_OR_RETURN(bool ok, run(mid));
    (ok ? lo : hi) = mid;
  }
  if (lo == 0) {
    // Everything tested failed: make sure GOOD really passes.
    bool good = good_known.has_value() ? *good_known : false;
    if (!good_known.has_value()) {
      LFS_ASSIGN_OR_RETURN(good, run(0));
    }
    if (!good) {
      return Status::InvalidArgument(path[0].str() + " fails the test too: pick a passing " +
                                     "ancestor (or fix the test)");
    }
  }
  out.first_bad = path[hi];
  out.last_good = path[lo];
  return out;
}

// ---------------------------------------------------------------------------
// Cascade

std::string CascadeMetadata(const VersionKey& rebuilt_from, const VersionKey& old_parent,
                            const VersionKey& new_parent) {
  return json({{"rebuilt_from", rebuilt_from.str()},
               {"old_parent", old_parent.str()},
               {"new_parent", new_parent.str()}})
      .dump();
}

Result<std::multimap<VersionKey, VersionKey>> RebuiltVersions(const Lineage& lin) {
  std::multimap<VersionKey, VersionKey> out;
  LFS_ASSIGN_OR_RETURN(auto models, lin.ListModels());
  for (const auto& m : models) {
    LFS_ASSIGN_OR_RETURN(auto vs, lin.ListVersions(m));
    for (const auto& v : vs) {
      if (!v.committed()) continue;
      json md = json::parse(v.metadata_json, nullptr, false);
      if (!md.is_object() || !md.contains("cascade") || !md["cascade"].is_object()) continue;
      auto from = VersionKey::Parse(md["cascade"].value("rebuilt_from", ""));
      if (from.ok()) out.emplace(*from, v.key);
    }
  }
  return out;
}

Result<CascadePlan> PlanCascade(const Lineage& lin, const VersionKey& old_version,
                                const VersionKey& new_version) {
  LFS_ASSIGN_OR_RETURN(Version oldv, lin.GetVersion(old_version));
  LFS_ASSIGN_OR_RETURN(Version newv, lin.GetVersion(new_version));
  if (!oldv.committed() || !newv.committed()) {
    return Status::InvalidArgument("cascade needs two committed versions");
  }
  if (old_version == new_version) return Status::InvalidArgument("OLD and NEW are the same");
  LFS_ASSIGN_OR_RETURN(auto desc, lin.Descendants(old_version));
  LFS_ASSIGN_OR_RETURN(auto rebuilt, RebuiltVersions(lin));
  // Never rebuild something that already derives from NEW (a previous
  // cascade's output, or a version made by hand against NEW).
  LFS_ASSIGN_OR_RETURN(auto new_desc, lin.Descendants(new_version));
  std::set<VersionKey> under_new(new_desc.begin(), new_desc.end());
  under_new.insert(new_version);  // NEW may itself derive from OLD
  if (under_new.count(old_version)) {
    return Status::InvalidArgument(old_version.str() + " derives from " + new_version.str() +
                                   ": a cascade goes from an older version to a newer one");
  }

  CascadePlan plan{old_version, new_version, {}};
  std::map<VersionKey, size_t> index;
  std::vector<Version> targets;
  for (const auto& d : desc) {
    if (under_new.count(d)) continue;
    LFS_ASSIGN_OR_RETURN(Version v, lin.GetVersion(d));
    if (!v.committed()) continue;
    index[d] = targets.size();
    targets.push_back(std::move(v));
  }
  // Waves: 1 + the deepest wave among rebuilt parents (OLD's children: 1).
  std::vector<size_t> wave(targets.size(), 0);
  bool changed = true;
  for (size_t iter = 0; changed && iter <= targets.size(); iter++) {
    changed = false;
    for (size_t i = 0; i < targets.size(); i++) {
      size_t w = 1;
      for (const auto& p : targets[i].parents) {
        auto it = index.find(p.parent);
        if (it != index.end()) w = std::max(w, wave[it->second] + 1);
      }
      if (w != wave[i]) {
        wave[i] = w;
        changed = true;
      }
    }
  }
  std::vector<size_t> order(targets.size());
  for (size_t i = 0; i < order.size(); i++) order[i] = i;
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return wave[a] < wave[b]; });
  std::map<VersionKey, size_t> step_of;
  for (size_t i : order) {
    const Version& v = targets[i];
    CascadeStep s;
    s.target = v.key;
    s.wave = wave[i];
    json md = json::parse(v.metadata_json, nullptr, false);
    if (md.is_object() && md.contains("recipe") && md["recipe"].is_string()) {
      s.recipe = md["recipe"].get<std::string>();
    }
    for (const auto& p : v.parents) {
      if (p.tombstone) continue;  // gone: the rebuild cannot derive from it
      CascadeStep::Parent cp{p.parent, p.relation, p.parent == old_version, std::nullopt};
      auto it = step_of.find(p.parent);
      if (it != step_of.end()) {
        cp.rebuilt_by = it->second;
        const CascadeStep& ps = plan.steps[it->second];
        if (!ps.skip_reason.empty() && s.skip_reason.empty()) {
          s.skip_reason = "its parent " + ps.target.str() + " is not rebuilt";
        }
      }
      s.parents.push_back(cp);
    }
    if (s.skip_reason.empty() && s.recipe.empty()) s.skip_reason = "no recipe recorded";
    auto [first, last] = rebuilt.equal_range(v.key);
    for (auto it = first; it != last; ++it) {
      if (under_new.count(it->second)) {
        s.already_rebuilt = it->second;
        s.skip_reason.clear();
      }
    }
    step_of[v.key] = plan.steps.size();
    plan.steps.push_back(std::move(s));
  }
  return plan;
}

}  // namespace lfs::lineage
