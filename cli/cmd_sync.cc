// clone, push, pull: versions travel between stores (lineage/sync.h).
#include <unistd.h>

#include <cstdio>
#include <filesystem>

#include "cli/cli.h"
#include "lineage/sync.h"

namespace lfs::cli {

namespace fs = std::filesystem;
using lineage::StoreRemote;
using lineage::SyncOptions;
using lineage::SyncStats;

namespace {

struct SyncArgs {
  std::string a, b;  // clone: SRC DST; push/pull: STORE REMOTE
  std::string model;
  bool dry_run = false, json = false;
};

// "1 290": groups of three digits read at a glance in a summary line.
std::string Count(uint64_t n) {
  std::string s = std::to_string(n);
  for (int i = static_cast<int>(s.size()) - 3; i > 0; i -= 3) s.insert(static_cast<size_t>(i), " ");
  return s;
}

json StatsJson(const SyncStats& st, const std::string& verb, const std::string& from,
               const std::string& to, bool dry_run) {
  json renamed = json::array();
  for (const auto& [a, b] : st.renamed) renamed.push_back({{"from", a}, {"to", b}});
  json matched = json::array();
  for (const auto& [a, b] : st.matched) matched.push_back({{"from", a}, {"to", b}});
  return {{"command", verb},
          {"from", from},
          {"to", to},
          {"dry_run", dry_run},
          {"versions_selected", st.versions_selected},
          {"versions_sent", st.versions_sent},
          {"versions_present", st.versions_present},
          {"drafts_skipped", st.drafts_skipped},
          {"sent", st.sent},
          {"renamed", renamed},
          {"matched", matched},
          {"chunks_needed", st.chunks_needed},
          {"chunks_present", st.chunks_present},
          {"chunks_sent", st.chunks_sent},
          {"frame_bytes", st.frame_bytes},
          {"record_bytes", st.record_bytes},
          {"bytes_moved", st.frame_bytes + st.record_bytes},
          {"files_sent", st.files_sent},
          {"tensors_sent", st.tensors_sent},
          {"test_results_merged", st.test_results_merged},
          {"test_definitions_added", st.test_defs_added},
          {"test_definition_clashes", st.test_def_clashes},
          {"tags_added", st.tags_added},
          {"tag_clashes", st.tag_clashes}};
}

void PrintStats(const SyncStats& st, const std::string& verb, bool dry_run) {
  std::printf("%s%s %s version%s, %s chunk%s (%s) of %s needed; %s already present\n",
              dry_run ? "would have " : "", verb.c_str(), Count(st.versions_sent).c_str(),
              st.versions_sent == 1 ? "" : "s", Count(st.chunks_sent).c_str(),
              st.chunks_sent == 1 ? "" : "s", HumanBytes(st.frame_bytes).c_str(),
              Count(st.chunks_needed).c_str(), Count(st.chunks_present).c_str());
  std::printf("  %s version(s) already there, %s of records, %lu draft(s) not sent\n",
              Count(st.versions_present).c_str(), HumanBytes(st.record_bytes).c_str(),
              (unsigned long)st.drafts_skipped);
  for (const auto& [a, b] : st.renamed) {
    std::printf("  name clash: %s stored as %s (the receiver's %s holds other content)\n",
                a.c_str(), b.c_str(), a.c_str());
  }
  for (const auto& [a, b] : st.matched) {
    std::printf("  same version under another name: %s is %s here\n", a.c_str(), b.c_str());
  }
  if (st.test_results_merged || st.test_defs_added) {
    std::printf("  tests: %lu definition(s) added, %lu result(s) merged\n",
                (unsigned long)st.test_defs_added, (unsigned long)st.test_results_merged);
  }
  for (const auto& n : st.test_def_clashes) {
    std::printf("  test definition clash: %s (the receiver kept its own)\n", n.c_str());
  }
  for (const auto& n : st.tag_clashes) {
    std::printf("  tag clash: %s (the receiver kept its own)\n", n.c_str());
  }
}

int RunSync(const std::string& verb, const std::string& from_path, const std::string& to_path,
            const SyncArgs& a) {
  std::error_code ec;
  if (fs::equivalent(from_path, to_path, ec)) return Fail("both sides are the same store");
  auto from = StoreRemote::Open(from_path, true);
  if (!from.ok()) return Fail(from.status());
  auto to = StoreRemote::Open(to_path, a.dry_run);
  if (!to.ok()) return Fail(to.status());
  SyncOptions opts;
  if (!a.model.empty()) opts.model = a.model;
  opts.dry_run = a.dry_run;
  if (!a.json) opts.log = [](const std::string& m) { std::fprintf(stderr, "%s\n", m.c_str()); };
  auto st = lineage::Sync(**from, **to, opts);
  if (!st.ok()) {
    Fail(st.status());
    std::fprintf(stderr,
                 "lineagefs: %s is consistent (only whole versions arrived); run the command "
                 "again to resume\n",
                 to_path.c_str());
    return kExitFailure;
  }
  if (a.json) {
    std::printf("%s\n", StatsJson(*st, verb, from_path, to_path, a.dry_run).dump(2).c_str());
  } else {
    PrintStats(*st, verb, a.dry_run);
  }
  return kExitOk;
}

CLI::App* AddSyncCommand(CLI::App& app, const char* name, const char* help, const char* a_name,
                         const char* b_name, std::shared_ptr<SyncArgs> args) {
  auto* c = app.add_subcommand(name, help);
  c->add_option(a_name, args->a)->required();
  c->add_option(b_name, args->b)->required();
  c->add_option("--model", args->model, "only this model's committed versions and their ancestors");
  c->add_flag("--dry-run", args->dry_run, "say what would move; change nothing");
  c->add_flag("--json", args->json, "print JSON");
  return c;
}

}  // namespace

void RegisterSyncCommands(CLI::App& app, int* rc) {
  {
    auto args = std::make_shared<SyncArgs>();
    auto* c = AddSyncCommand(app, "clone", "create DST as a copy of SRC's committed versions",
                             "SRC", "DST", args);
    c->callback([=] {
      std::string dst = args->b;
      std::string tmp;
      if (args->dry_run) {
        // Plan against an empty store that is thrown away.
        std::string tmpl = (fs::temp_directory_path() / "lineagefs-clone-XXXXXX").string();
        if (!::mkdtemp(tmpl.data())) return void(*rc = Fail("cannot create a temporary store"));
        tmp = dst = tmpl;
      }
      Status s = Store::Create(dst);
      if (!s.ok()) {
        if (s.code() == Status::Code::kAlreadyExists) {
          return void(*rc = Fail(s.message() + "; to bring it up to date: lineagefs pull " +
                                 args->b + " " + args->a));
        }
        return void(*rc = Fail(s));
      }
      *rc = RunSync("cloned", args->a, dst, *args);
      if (!tmp.empty()) {
        std::error_code ec;
        fs::remove_all(tmp, ec);
      }
    });
  }
  {
    auto args = std::make_shared<SyncArgs>();
    auto* c = AddSyncCommand(app, "push", "send STORE's committed versions that REMOTE lacks",
                             "STORE", "REMOTE", args);
    c->callback([=] { *rc = RunSync("pushed", args->a, args->b, *args); });
  }
  {
    auto args = std::make_shared<SyncArgs>();
    auto* c = AddSyncCommand(app, "pull", "fetch REMOTE's committed versions that STORE lacks",
                             "STORE", "REMOTE", args);
    c->callback([=] { *rc = RunSync("pulled", args->b, args->a, *args); });
  }
}

}  // namespace lfs::cli
