// `lineagefs mount`: serves a store over FUSE (low-level API, multithreaded).
#pragma once

#include <string>

namespace lfs::fs {

struct MountOptions {
  std::string store;
  std::string mountpoint;
  bool foreground = false;
  bool read_only = false;    // refuse every write (drafts too)
  bool allow_other = false;  // other users may enter; default_permissions then applies
  bool shared = false;       // root and model folders 01777: others may add drafts of their own
  bool auto_unmount = true;  // a dead daemon leaves no stale mount
  size_t cache_mb = 256;     // decoded-chunk cache
  int threads = 8;           // max idle worker threads
  int read_ahead_kb = 1024;  // kernel readahead for the mount (0: leave the default)
  std::string log_file;      // empty: stderr (foreground) or STORE/lineagefs.log
  std::string log_level = "warn";
  bool debug = false;  // libfuse request tracing
};

// Parses "-o" style options ("ro,allow_other,cache_mb=512,threads=4,...").
bool ParseMountOptions(const std::string& opts, MountOptions* out, std::string* error);

// Mounts and serves until unmounted or signalled. Returns a process exit code.
int RunMount(const MountOptions& opts);

}  // namespace lfs::fs
