// Shared state of the FUSE handlers. Every handler follows one shape: a
// do_<op>() that returns an errno (0 on success) and fills its reply data,
// and a thin <op>() that replies exactly once. Nothing throws across libfuse.
#pragma once

#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>

#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "fs/drafts.h"
#include "fs/errno_map.h"
#include "fs/fuse_daemon.h"
#include "fs/inode_table.h"
#include "fs/namespace.h"
#include "lineage/lineage.h"
#include "store/store.h"

namespace lfs::fs {

struct Daemon {
  MountOptions opts;
  std::unique_ptr<Store> store;
  std::unique_ptr<lineage::Lineage> lineage;
  std::unique_ptr<Namespace> ns;
  std::unique_ptr<Drafts> drafts;
  InodeTable inodes;
  uid_t uid = 0;
  gid_t gid = 0;
  // Open file handles by inode (fuse_ops_file.cc): an unlinked file stays
  // usable through its descriptors, as on a disk file system.
  std::mutex open_mu;
  std::multimap<fuse_ino_t, void*> open_files;
};

inline Daemon* GetDaemon(fuse_req_t req) { return static_cast<Daemon*>(fuse_req_userdata(req)); }

// Kernel cache timeouts: committed content never changes.
constexpr double kImmutableTimeout = 86400.0;
constexpr double kMutableTimeout = 1.0;

std::string JoinPath(const std::string& dir, const std::string& name);
void FillStat(const Attr& a, struct stat* st);
// Looks up parent/name, remembers the inode, fills e. Returns errno.
int LookupEntry(Daemon& d, const std::string& path, fuse_entry_param* e);
// Attributes of an open file whose path is gone (unlinked or replaced while
// open): nlink 0 and the size its handle sees. False when none is open.
bool OpenFileAttr(Daemon& d, fuse_ino_t ino, Attr* a);
// ftruncate of such a file through one of its writable handles. Returns errno.
int TruncateOpenFile(Daemon& d, fuse_ino_t ino, uint64_t size);
// Logs why an errno is returned (at info level; EIO at error).
int LogErrno(const char* op, const std::string& path, const Status& s);

// The op families (fuse_ops_read.cc, fuse_ops_write.cc) fill in the table.
void AddReadOps(fuse_lowlevel_ops* ops);
void AddFileOps(fuse_lowlevel_ops* ops);
void AddWriteOps(fuse_lowlevel_ops* ops);

}  // namespace lfs::fs
