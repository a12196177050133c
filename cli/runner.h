// Process plumbing for workflows: a private read-only mount of the store for
// the duration of a command, and running shell commands with a deadline.
#pragma once

#include <sys/types.h>

#include <map>
#include <memory>
#include <string>

#include "store/status.h"

namespace lfs::cli {

// A mount of STORE in a fresh temp dir served by a child `lineagefs mount -f
// -o ro` (a separate process: it holds its own LMDB environment while this
// process writes). Unmounted (fusermount3 -u, then lazily) and the child
// reaped on destruction, whatever happened in between.
class PrivateMount {
 public:
  static Result<std::unique_ptr<PrivateMount>> Start(const std::string& store);
  ~PrivateMount();
  const std::string& path() const { return dir_; }

 private:
  PrivateMount() = default;
  std::string dir_;
  pid_t pid_ = -1;
};

// The mount a workflow reads: an existing one (--mount) or a private one.
class MountRef {
 public:
  static Result<MountRef> Open(const std::string& store, const std::string& existing);
  const std::string& path() const { return path_; }
  std::string VersionPath(const std::string& model, const std::string& version) const {
    return path_ + "/" + model + "/" + version;
  }

 private:
  std::string path_;
  std::shared_ptr<PrivateMount> owned_;
};

struct CommandResult {
  int exit_code = -1;  // 128+N when killed by signal N; -1 when it could not start
  bool timed_out = false;
  bool interrupted = false;  // we were asked to stop (SIGINT/SIGTERM/SIGHUP)
  std::string output;        // the last 1 MiB of stdout
  std::string stderr_tail;
  double duration_s = 0;
};

// SIGINT, SIGTERM and SIGHUP set a flag instead of killing the CLI, so that
// running commands are stopped, drafts removed and mounts unmounted on the
// way out. Workflows check Interrupted() between steps.
void InstallInterruptHandlers();
bool Interrupted();

// Runs `sh -c cmd` in its own process group with extra environment
// variables. When the command exits, on timeout and on interruption the
// whole group is killed (a test must not leave processes holding the
// mount); output still in flight is read for a bounded time.
CommandResult RunCommand(const std::string& cmd, double timeout_s,
                         const std::map<std::string, std::string>& env,
                         const std::string& cwd = "");

// A fresh private temp directory ($TMPDIR or /tmp); removed recursively by
// the returned guard's destructor.
class TempDir {
 public:
  static Result<std::unique_ptr<TempDir>> Make(const std::string& prefix);
  ~TempDir();
  const std::string& path() const { return path_; }
  void Keep() { keep_ = true; }

 private:
  std::string path_;
  bool keep_ = false;
};

}  // namespace lfs::cli
