#include "cli/runner.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <thread>
#include <vector>

#include "store/log.h"

namespace lfs::cli {

namespace {
constexpr size_t kOutputCap = 1 << 20;  // keep 1 MiB of a test's stdout
constexpr size_t kTailCap = 4096;

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::string SelfExe() {
  char buf[4096];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return "lineagefs";
  return std::string(buf, static_cast<size_t>(n));
}

bool IsMountPoint(const std::string& dir) {
  struct stat a, b;
  if (::stat(dir.c_str(), &a) != 0) return false;
  if (::stat((dir + "/..").c_str(), &b) != 0) return false;
  return a.st_dev != b.st_dev;
}

// Appends to a capped buffer keeping the head and the most recent bytes.
void AppendCapped(std::string* buf, const char* data, size_t n, size_t cap) {
  buf->append(data, n);
  if (buf->size() > cap) buf->erase(0, buf->size() - cap);
}
}  // namespace

Result<std::unique_ptr<TempDir>> TempDir::Make(const std::string& prefix) {
  const char* t = std::getenv("TMPDIR");
  std::string tmpl = std::string(t && *t ? t : "/tmp") + "/" + prefix + "XXXXXX";
  std::vector<char> b(tmpl.begin(), tmpl.end());
  b.push_back('\0');
  if (::mkdtemp(b.data()) == nullptr) {
    return Status::FromErrno(errno, "mkdtemp " + tmpl);
  }
  auto d = std::unique_ptr<TempDir>(new TempDir());
  d->path_ = b.data();
  return d;
}

TempDir::~TempDir() {
  if (keep_) return;
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

Result<std::unique_ptr<PrivateMount>> PrivateMount::Start(const std::string& store) {
  LFS_ASSIGN_OR_RETURN(auto dir, TempDir::Make("lineagefs-mnt-"));
  std::string mnt = dir->path();
  dir->Keep();  // removed below, only once unmounted
  auto m = std::unique_ptr<PrivateMount>(new PrivateMount());
  m->dir_ = mnt;
  std::string exe = SelfExe();
  pid_t pid = ::fork();
  if (pid < 0) return Status::FromErrno(errno, "fork");
  if (pid == 0) {
    int devnull = ::open("/dev/null", O_RDWR);
    if (devnull >= 0) ::dup2(devnull, 0);
    ::execl(exe.c_str(), exe.c_str(), "mount", store.c_str(), mnt.c_str(), "-f", "-o",
            "ro,log_level=error", static_cast<char*>(nullptr));
    ::_exit(127);
  }
  m->pid_ = pid;
  // Ready when the directory is a mount point; give up when the child dies.
  double deadline = Now() + 30;
  while (!IsMountPoint(mnt)) {
    int st;
    if (::waitpid(pid, &st, WNOHANG) == pid) {
      m->pid_ = -1;
      return Status::IOError("the private mount of " + store + " exited (status " +
                             std::to_string(WIFEXITED(st) ? WEXITSTATUS(st) : 128) + ")");
    }
    if (Now() > deadline) return Status::IOError("the private mount did not come up in 30 s");
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return m;
}

PrivateMount::~PrivateMount() {
  if (pid_ > 0) {
    std::string cmd =
        "fusermount3 -u " + dir_ + " 2>/dev/null || fusermount3 -uz " + dir_ + " 2>/dev/null";
    if (std::system(cmd.c_str()) != 0) LogWarn("could not unmount " + dir_);
    double deadline = Now() + 10;
    int st;
    while (::waitpid(pid_, &st, WNOHANG) == 0) {
      if (Now() > deadline) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, &st, 0);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  ::rmdir(dir_.c_str());
}

Result<MountRef> MountRef::Open(const std::string& store, const std::string& existing) {
  MountRef r;
  if (!existing.empty()) {
    if (!IsMountPoint(existing)) return Status::InvalidArgument(existing + " is not a mount point");
    r.path_ = existing;
    return r;
  }
  LFS_ASSIGN_OR_RETURN(auto m, PrivateMount::Start(store));
  r.path_ = m->path();
  r.owned_ = std::move(m);
  return r;
}

CommandResult RunCommand(const std::string& cmd, double timeout_s,
                         const std::map<std::string, std::string>& env, const std::string& cwd) {
  CommandResult r;
  int out_pipe[2], err_pipe[2];
  if (::pipe2(out_pipe, O_CLOEXEC) != 0) return r;
  if (::pipe2(err_pipe, O_CLOEXEC) != 0) {
    ::close(out_pipe[0]);
    ::close(out_pipe[1]);
    return r;
  }
  double start = Now();
  pid_t pid = ::fork();
  if (pid < 0) {
    for (int fd : {out_pipe[0], out_pipe[1], err_pipe[0], err_pipe[1]}) ::close(fd);
    return r;
  }
  if (pid == 0) {
    ::setpgid(0, 0);  // a timeout kills the command and everything it started
    int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull >= 0) ::dup2(devnull, 0);
    ::dup2(out_pipe[1], 1);
    ::dup2(err_pipe[1], 2);
    for (const auto& [k, v] : env) ::setenv(k.c_str(), v.c_str(), 1);
    if (!cwd.empty() && ::chdir(cwd.c_str()) != 0) ::_exit(127);
    ::execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::setpgid(pid, pid);
  ::close(out_pipe[1]);
  ::close(err_pipe[1]);
  pollfd fds[2] = {{out_pipe[0], POLLIN, 0}, {err_pipe[0], POLLIN, 0}};
  int open_fds = 2;
  char buf[65536];
  bool killed = false;
  while (open_fds > 0) {
    double left = start + timeout_s - Now();
    if (left <= 0 && !killed) {
      ::kill(-pid, SIGKILL);
      r.timed_out = killed = true;
    }
    int pr = ::poll(fds, 2, killed ? 1000 : static_cast<int>(std::min(left, 1.0) * 1000) + 1);
    if (pr < 0 && errno != EINTR) break;
    for (int i = 0; i < 2; i++) {
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      ssize_t n = ::read(fds[i].fd, buf, sizeof buf);
      if (n > 0) {
        if (i == 0) {
          AppendCapped(&r.output, buf, static_cast<size_t>(n), kOutputCap);
        } else {
          AppendCapped(&r.stderr_tail, buf, static_cast<size_t>(n), kTailCap);
        }
      } else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
        ::close(fds[i].fd);
        fds[i].fd = -1;
        open_fds--;
      }
    }
    if (killed && pr == 0) break;  // a grandchild holds the pipe open: stop waiting
  }
  for (auto& f : fds) {
    if (f.fd >= 0) ::close(f.fd);
  }
  int st = 0;
  if (killed) {
    ::kill(-pid, SIGKILL);
    ::waitpid(pid, &st, 0);
  } else {
    // The command may close its output and keep running: the deadline holds.
    while (::waitpid(pid, &st, WNOHANG) == 0) {
      if (Now() > start + timeout_s) {
        ::kill(-pid, SIGKILL);
        r.timed_out = true;
        ::waitpid(pid, &st, 0);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }
  r.duration_s = Now() - start;
  if (WIFEXITED(st)) {
    r.exit_code = WEXITSTATUS(st);
  } else if (WIFSIGNALED(st)) {
    r.exit_code = 128 + WTERMSIG(st);
  }
  return r;
}

}  // namespace lfs::cli
