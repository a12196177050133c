// Session set-up: options, store opening (after daemonizing: an LMDB
// environment must not cross fork), the ops table, readahead, signals.
#include "fs/fuse_daemon.h"

#include <malloc.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>
#include <vector>

#include "fs/fuse_internal.h"
#include "store/log.h"

namespace lfs::fs {

bool ParseMountOptions(const std::string& opts, MountOptions* o, std::string* error) {
  std::stringstream ss(opts);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (item.empty()) continue;
    std::string key = item, val;
    size_t eq = item.find('=');
    if (eq != std::string::npos) {
      key = item.substr(0, eq);
      val = item.substr(eq + 1);
    }
    try {
      if (key == "ro")
        o->read_only = true;
      else if (key == "rw")
        o->read_only = false;
      else if (key == "allow_other")
        o->allow_other = true;
      else if (key == "shared")
        o->shared = true;
      else if (key == "auto_unmount")
        o->auto_unmount = true;
      else if (key == "no_auto_unmount")
        o->auto_unmount = false;
      else if (key == "cache_mb")
        o->cache_mb = std::stoul(val);
      else if (key == "threads")
        o->threads = std::stoi(val);
      else if (key == "read_ahead_kb")
        o->read_ahead_kb = std::stoi(val);
      else if (key == "log_file")
        o->log_file = val;
      else if (key == "log_level")
        o->log_level = val;
      else if (key == "debug")
        o->debug = true;
      else if (key == "fsname" || key == "subtype" || key == "_netdev" || key == "noauto" ||
               key == "user" || key == "nofail" || key == "defaults" || key == "dev" ||
               key == "suid" || key == "nodev" || key == "nosuid" || key == "exec" ||
               key == "noexec" || key == "atime" || key == "noatime" ||
               key == "x-systemd.automount") {
        // Accepted from /etc/fstab and mount(8); nothing to do.
      } else {
        *error = "unknown mount option '" + key + "'";
        return false;
      }
    } catch (const std::exception&) {
      *error = "bad value for mount option '" + key + "'";
      return false;
    }
  }
  return true;
}

namespace {

void op_init(void* userdata, fuse_conn_info* conn) {
  auto* d = static_cast<Daemon*>(userdata);
  // 1 MiB requests (the kernel's max_pages follows max_write).
  conn->max_write = 1 << 20;
  conn->max_readahead = 1 << 20;
  if (conn->capable & FUSE_CAP_SPLICE_WRITE) conn->want |= FUSE_CAP_SPLICE_WRITE;
  if (conn->capable & FUSE_CAP_ASYNC_READ) conn->want |= FUSE_CAP_ASYNC_READ;
  if (conn->capable & FUSE_CAP_CACHE_SYMLINKS) conn->want |= FUSE_CAP_CACHE_SYMLINKS;
  // Writes go through the page cache; size and mtime stay ours.
  conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
  (void)d;
}

// Raises the mount's readahead once the mount is live (reads of /sys
// attributes for our own st_dev would otherwise wait on ourselves).
void TuneReadahead(std::string mountpoint, int kb) {
  struct stat st;
  if (::stat(mountpoint.c_str(), &st) != 0) return;
  std::string p = "/sys/class/bdi/" + std::to_string(major(st.st_dev)) + ":" +
                  std::to_string(minor(st.st_dev)) + "/read_ahead_kb";
  std::ofstream f(p);
  if (f) {
    f << kb;
    LogInfo("read_ahead_kb=" + std::to_string(kb) + " on " + p);
  } else {
    LogInfo("cannot set " + p + " (needs root); kernel readahead stays at its default");
  }
}

Status OpenAll(Daemon& d) {
  StoreOptions so;
  so.cache_bytes = d.opts.cache_mb << 20;
  // -o ro never writes: not even the recovery of another mount's spool files
  // (a live read-write mount may be writing them right now).
  so.read_only = d.opts.read_only;
  LFS_ASSIGN_OR_RETURN(d.store, Store::Open(d.opts.store, so));
  d.lineage = std::make_unique<lineage::Lineage>(*d.store);
  Namespace::Options no;
  no.uid = d.uid;
  no.gid = d.gid;
  no.shared = d.opts.shared;
  d.ns = std::make_unique<Namespace>(*d.store, *d.lineage, no);
  d.drafts = std::make_unique<Drafts>(*d.store, *d.lineage, d.ns.get());
  d.ns->SetDrafts(d.drafts.get());
  return d.opts.read_only ? Status::OK() : d.drafts->Recover();
}

}  // namespace

int RunMount(const MountOptions& opts) {
  // One arena: chunks are decoded on the store's few decoder threads and freed
  // by whichever thread evicts them; with two arenas one grew while the other
  // sat on freed chunks (cache 256 MiB: +85 MiB RssAnon over the cache; one
  // arena: +19 MiB, the same for 16, 64 and 256 MiB caches).
  mallopt(M_ARENA_MAX, 1);
  // Decoded chunks are ~1 MiB: kept in the heap (not mmap'd one by one) and
  // not trimmed back eagerly, a freed chunk's memory is reused by the next
  // decode instead of being faulted in and zeroed again (that was ~15% of
  // the daemon's time on a cold sequential read). Bounded: at most the trim
  // threshold sits free on top of the cache.
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 64 << 20);
  LogLevel lvl;
  if (ParseLogLevel(opts.log_level, &lvl)) SetLogLevel(lvl);
  Daemon d;
  d.opts = opts;
  d.uid = ::getuid();
  d.gid = ::getgid();
  char real[PATH_MAX];
  if (!::realpath(opts.mountpoint.c_str(), real)) {
    std::fprintf(stderr, "lineagefs: mount point %s: %s\n", opts.mountpoint.c_str(),
                 std::strerror(errno));
    return 1;
  }
  d.opts.mountpoint = real;
  if (::realpath(opts.store.c_str(), real)) d.opts.store = real;
  {
    // Fail early, before daemonizing, when the store cannot be opened.
    auto probe = Store::Open(d.opts.store, StoreOptions{});
    if (!probe.ok()) {
      std::fprintf(stderr, "lineagefs: %s\n", probe.status().ToString().c_str());
      return 1;
    }
  }
  fuse_lowlevel_ops ops;
  std::memset(&ops, 0, sizeof ops);
  ops.init = op_init;
  AddReadOps(&ops);
  AddFileOps(&ops);
  AddWriteOps(&ops);

  std::vector<std::string> argv_s = {"lineagefs"};
  std::string o = "fsname=lineagefs:" + d.opts.store + ",subtype=lineagefs";
  if (opts.allow_other) o += ",allow_other,default_permissions";
  if (opts.auto_unmount) o += ",auto_unmount";
  if (opts.read_only) o += ",ro";
  argv_s.push_back("-o");
  argv_s.push_back(o);
  if (opts.debug) argv_s.push_back("-d");
  std::vector<char*> argv;
  for (auto& s : argv_s) argv.push_back(s.data());
  fuse_args args = FUSE_ARGS_INIT(static_cast<int>(argv.size()), argv.data());
  fuse_session* se = fuse_session_new(&args, &ops, sizeof ops, &d);
  if (!se) {
    std::fprintf(stderr, "lineagefs: cannot create a FUSE session\n");
    return 1;
  }
  int rc = 1;
  if (fuse_set_signal_handlers(se) == 0) {
    if (fuse_session_mount(se, d.opts.mountpoint.c_str()) == 0) {
      std::string log_file = opts.log_file;
      if (!opts.foreground && log_file.empty()) log_file = d.opts.store + "/lineagefs.log";
      if (fuse_daemonize(opts.foreground ? 1 : 0) == 0) {
        if (!log_file.empty()) SetLogFile(log_file);
        Status s = OpenAll(d);
        if (!s.ok()) {
          LogError("cannot open the store: " + s.ToString());
        } else {
          LogInfo("serving " + d.opts.store + " on " + d.opts.mountpoint);
          if (opts.read_ahead_kb > 0) {
            std::thread(TuneReadahead, d.opts.mountpoint, opts.read_ahead_kb).detach();
          }
          fuse_loop_config* cfg = fuse_loop_cfg_create();
          fuse_loop_cfg_set_clone_fd(cfg, 1);
          fuse_loop_cfg_set_max_threads(cfg, static_cast<unsigned>(std::max(2, opts.threads)));
          fuse_loop_cfg_set_idle_threads(cfg, static_cast<unsigned>(std::max(1, opts.threads / 2)));
          rc = fuse_session_loop_mt(se, cfg) == 0 ? 0 : 1;
          fuse_loop_cfg_destroy(cfg);
        }
      }
      fuse_session_unmount(se);
    }
    fuse_remove_signal_handlers(se);
  }
  fuse_session_destroy(se);
  fuse_opt_free_args(&args);
  return rc;
}

}  // namespace lfs::fs
