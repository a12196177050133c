#include <unistd.h>

#include <cstdio>
#include <ctime>

#include "cli/cli.h"
#include "lineage/lineage.h"

namespace lfs::cli {

Result<Opened> OpenStore(const std::string& path, bool read_only) {
  StoreOptions so;
  so.read_only = read_only;
  Opened o;
  LFS_ASSIGN_OR_RETURN(o.store, Store::Open(path, so));
  o.lineage = std::make_unique<lineage::Lineage>(*o.store);
  return o;
}

int Fail(const Status& s) { return Fail(s.ToString()); }
int Fail(const std::string& message) {
  std::fprintf(stderr, "lineagefs: %s\n", message.c_str());
  return kExitFailure;
}

CLI::App* Cmd(CLI::App& parent, int* rc, const char* name, const char* help,
              std::shared_ptr<std::string> store, bool read_only, std::shared_ptr<Body> body) {
  auto* c = parent.add_subcommand(name, help);
  c->add_option("STORE", *store, "store directory")->required();
  c->callback([=] {
    auto o = OpenStore(*store, read_only);
    if (!o.ok()) {
      *rc = Fail(o.status());
      return;
    }
    *rc = (*body)(*o);
  });
  return c;
}

std::string HumanBytes(uint64_t n) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(n);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    u++;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", v, units[u]);
  return buf;
}

Progress::Progress(std::string label, uint64_t total)
    : label_(std::move(label)), total_(total), tty_(::isatty(2)) {}

Progress::~Progress() {
  if (tty_ && last_ns_) std::fprintf(stderr, "\r\033[K");
}

void Progress::Update(uint64_t done) {
  if (!tty_) return;
  int64_t now = lineage::NowNs();
  if (now - last_ns_ < 100'000'000 && done < total_) return;
  last_ns_ = now;
  int pct = total_
                ? static_cast<int>(100.0 * static_cast<double>(done) / static_cast<double>(total_))
                : 100;
  std::fprintf(stderr, "\r\033[K%s %3d%% %s / %s", label_.c_str(), pct, HumanBytes(done).c_str(),
               HumanBytes(total_).c_str());
  std::fflush(stderr);
}

}  // namespace lfs::cli
