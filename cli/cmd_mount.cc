// mount: serve a store as a filesystem.
#include "cli/cli.h"
#include "fs/fuse_daemon.h"

namespace lfs::cli {

void RegisterMountCommand(CLI::App& app, int* rc) {
  auto* c = app.add_subcommand("mount", "mount a store (fusermount3 -u MNT unmounts)");
  auto mo = std::make_shared<fs::MountOptions>();
  auto opts = std::make_shared<std::string>();
  c->add_option("STORE", mo->store, "store directory")->required();
  c->add_option("MNT", mo->mountpoint, "mount point")->required();
  c->add_flag("-f,--foreground", mo->foreground, "stay in the foreground");
  c->add_option("-o", *opts,
                "ro, allow_other, shared, cache_mb=N, threads=N, read_ahead_kb=N, log_file=F, "
                "log_level=L, debug, no_auto_unmount");
  c->callback([=] {
    fs::MountOptions m = *mo;
    std::string err;
    if (!fs::ParseMountOptions(*opts, &m, &err)) {
      std::fprintf(stderr, "lineagefs mount: %s\n", err.c_str());
      *rc = kExitUsage;
      return;
    }
    *rc = fs::RunMount(m);
  });
}

}  // namespace lfs::cli
