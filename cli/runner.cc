#include "cli/runner.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
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

// Keeps the most recent `cap` bytes (trimming in amortised O(1) per byte).
void AppendCapped(std::string* buf, const char* data, size_t n, size_t cap) {
  buf->append(data, n);
  if (buf->size() > 2 * cap) buf->erase(0, buf->size() - cap);
}
// fusermount3 -u [-z] DIR, without a shell. Returns its exit status.
int Unmount(const std::string& dir, bool lazy) {
  pid_t pid = ::fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    int devnull = ::open("/dev/null", O_WRONLY);
    if (devnull >= 0) ::dup2(devnull, 2);
    ::execlp("fusermount3", "fusermount3", lazy ? "-uz" : "-u", dir.c_str(),
             static_cast<char*>(nullptr));
    ::_exit(127);
  }
  int st = 0;
  ::waitpid(pid, &st, 0);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
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
    // If this CLI dies (even by kill -9), the daemon unmounts and exits.
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (::getppid() == 1) ::_exit(1);
    int devnull = ::open("/dev/null", O_RDWR);
    if (devnull >= 0) {
      ::dup2(devnull, 0);
      ::dup2(devnull, 1);  // never hold our caller's stdout open
      ::close(devnull);
    }
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
    if (Unmount(dir_, false) != 0 && Unmount(dir_, true) != 0) {
      LogWarn("could not unmount " + dir_);
    }
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
  InstallInterruptHandlers();  // from here on, ^C unwinds: unmount, remove drafts
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

namespace {
std::atomic<bool> g_interrupted{false};
void OnInterrupt(int) { g_interrupted = true; }
}  // namespace

void InstallInterruptHandlers() {
  struct sigaction sa = {};
  sa.sa_handler = OnInterrupt;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;  // no SA_RESTART: a blocked poll returns EINTR
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) ::sigaction(sig, &sa, nullptr);
}

bool Interrupted() { return g_interrupted.load(); }

CommandResult RunCommand(const std::string& cmd, double timeout_s,
                         const std::map<std::string, std::string>& env, const std::string& cwd) {
  CommandResult r;
  // The environment is built before fork: other threads may hold malloc locks.
  std::vector<std::string> env_strings;
  for (char** e = environ; *e; e++) {
    std::string_view kv(*e);
    if (env.count(std::string(kv.substr(0, kv.find('='))))) continue;
    env_strings.emplace_back(kv);
  }
  for (const auto& [k, v] : env) env_strings.push_back(k + "=" + v);
  std::vector<char*> envp;
  for (auto& e : env_strings) envp.push_back(e.data());
  envp.push_back(nullptr);
  const char* argv[] = {"sh", "-c", cmd.c_str(), nullptr};

  int out_pipe[2], err_pipe[2];
  if (::pipe2(out_pipe, O_CLOEXEC) != 0) return r;
  if (::pipe2(err_pipe, O_CLOEXEC) != 0) {
    ::close(out_pipe[0]);
    ::close(out_pipe[1]);
    return r;
  }
  int devnull = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  double start = Now();
  pid_t pid = ::fork();
  if (pid < 0) {
    for (int fd : {out_pipe[0], out_pipe[1], err_pipe[0], err_pipe[1], devnull}) ::close(fd);
    return r;
  }
  if (pid == 0) {
    ::setpgid(0, 0);  // its own group: killed as a whole, deaf to our terminal's ^C
    if (devnull >= 0) ::dup2(devnull, 0);
    ::dup2(out_pipe[1], 1);
    ::dup2(err_pipe[1], 2);
    if (!cwd.empty() && ::chdir(cwd.c_str()) != 0) ::_exit(127);
    ::execve("/bin/sh", const_cast<char* const*>(argv), envp.data());
    ::_exit(127);
  }
  ::setpgid(pid, pid);
  for (int fd : {out_pipe[1], err_pipe[1], devnull}) ::close(fd);
  int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  pollfd fds[3] = {{out_pipe[0], POLLIN, 0}, {err_pipe[0], POLLIN, 0}, {pidfd, POLLIN, 0}};
  char buf[65536];
  bool exited = false, killed = false;
  double drain_until = 0;  // once the leader is gone: how long in-flight output is read
  int st = 0;
  // The leader is seen exiting before it is reaped, so its group id cannot
  // have been reused when what it left behind in the group is killed.
  auto check_exit = [&] {
    siginfo_t info = {};
    if (::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG | WNOWAIT) != 0 ||
        info.si_pid != pid) {
      return;
    }
    ::kill(-pid, SIGKILL);
    ::waitpid(pid, &st, 0);
    exited = true;
    drain_until = Now() + 0.5;
  };
  for (;;) {
    if (!exited && !killed && (Now() > start + timeout_s || Interrupted())) {
      r.interrupted = Interrupted();
      r.timed_out = !r.interrupted;
      ::kill(-pid, SIGKILL);
      killed = true;
    }
    // Without a pidfd (old kernel) and after a kill, poll the leader.
    if (!exited && (fds[2].fd < 0 || killed)) check_exit();
    if (exited && ((fds[0].fd < 0 && fds[1].fd < 0) || Now() > drain_until)) break;
    int pr = ::poll(fds, 3, fds[2].fd < 0 || killed || exited ? 50 : 200);
    if (pr < 0 && errno != EINTR) break;
    if (pr <= 0) continue;
    if (fds[2].fd >= 0 && (fds[2].revents & (POLLIN | POLLHUP | POLLERR))) {
      check_exit();
      fds[2].fd = -1;  // the pidfd itself is closed below
    }
    for (int i = 0; i < 2; i++) {
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      ssize_t n = ::read(fds[i].fd, buf, sizeof buf);
      if (n > 0) {
        AppendCapped(i == 0 ? &r.output : &r.stderr_tail, buf, static_cast<size_t>(n),
                     i == 0 ? kOutputCap : kTailCap);
      } else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
        ::close(fds[i].fd);
        fds[i].fd = -1;
      }
    }
  }
  for (int i = 0; i < 2; i++) {
    if (fds[i].fd >= 0) ::close(fds[i].fd);
  }
  if (pidfd >= 0) ::close(pidfd);
  if (!exited) {
    ::kill(-pid, SIGKILL);
    ::waitpid(pid, &st, 0);
  }
  if (r.output.size() > kOutputCap) r.output.erase(0, r.output.size() - kOutputCap);
  if (r.stderr_tail.size() > kTailCap) r.stderr_tail.erase(0, r.stderr_tail.size() - kTailCap);
  r.duration_s = Now() - start;
  if (WIFEXITED(st)) {
    r.exit_code = WEXITSTATUS(st);
  } else if (WIFSIGNALED(st)) {
    r.exit_code = 128 + WTERMSIG(st);
  }
  return r;
}

}  // namespace lfs::cli
