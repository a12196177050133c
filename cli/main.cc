// lineagefs: one binary, git-style subcommands; the store path comes first.
#include <malloc.h>

#include <cstdio>

#include "cli/cli.h"
#include "store/log.h"

int main(int argc, char** argv) {
  // Imports churn through 1 MiB buffers: keep them in the heap instead of
  // mmap'ing (and zero-faulting) each one; at most 64 MiB stays free on top.
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 64 << 20);
  mallopt(M_ARENA_MAX, 1);
  CLI::App app{"lineagefs: a filesystem for families of ML models", "lineagefs"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "lineagefs 0.1");
  std::string log_level = "warn";
  app.add_option("--log-level", log_level, "debug, info, warn or error")->capture_default_str();
  int rc = lfs::cli::kExitOk;
  lfs::cli::RegisterStoreCommands(app, &rc);
  lfs::cli::RegisterLineageCommands(app, &rc);
  lfs::cli::RegisterMountCommand(app, &rc);
  lfs::cli::RegisterWorkflowCommands(app, &rc);
  lfs::cli::RegisterSyncCommands(app, &rc);
  app.parse_complete_callback([&] {
    lfs::LogLevel lvl;
    if (lfs::ParseLogLevel(log_level, &lvl)) lfs::SetLogLevel(lvl);
  });
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? 0 : lfs::cli::kExitUsage;
  } catch (const std::exception& e) {  // a bug, but never an abort with mounts left behind
    return lfs::cli::Fail(std::string("internal error: ") + e.what());
  }
  return rc;
}
