#include "store/log.h"

#include <cstdio>
#include <ctime>
#include <mutex>

namespace lfs {

namespace {
std::mutex g_mu;
LogLevel g_level = LogLevel::kWarn;
FILE* g_file = nullptr;
const char* LevelName(LogLevel l) {
  switch (l) {
    case LogLevel::kDebug: return "debug";
    case LogLevel::kInfo: return "info";
    case LogLevel::kWarn: return "warn";
    case LogLevel::kError: return "error";
  }
  return "?";
}
}  // namespace

void SetLogLevel(LogLevel level) {
  std::lock_guard<std::mutex> l(g_mu);
  g_level = level;
}
LogLevel GetLogLevel() {
  std::lock_guard<std::mutex> l(g_mu);
  return g_level;
}

bool SetLogFile(const std::string& path) {
  std::lock_guard<std::mutex> l(g_mu);
  if (g_file) std::fclose(g_file);
  g_file = nullptr;
  if (path.empty()) return true;
  g_file = std::fopen(path.c_str(), "ae");
  return g_file != nullptr;
}

void Log(LogLevel level, const std::string& message) {
  std::lock_guard<std::mutex> l(g_mu);
  if (level < g_level) return;
  FILE* out = g_file ? g_file : stderr;
  if (g_file) {
    char ts[32];
    std::time_t t = std::time(nullptr);
    std::tm tm;
    gmtime_r(&t, &tm);
    std::strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", &tm);
    std::fprintf(out, "%s lineagefs %s: %s\n", ts, LevelName(level), message.c_str());
  } else {
    std::fprintf(out, "lineagefs: %s: %s\n", LevelName(level), message.c_str());
  }
  std::fflush(out);
}

bool ParseLogLevel(const std::string& s, LogLevel* out) {
  if (s == "debug")
    *out = LogLevel::kDebug;
  else if (s == "info")
    *out = LogLevel::kInfo;
  else if (s == "warn" || s == "warning")
    *out = LogLevel::kWarn;
  else if (s == "error")
    *out = LogLevel::kError;
  else
    return false;
  return true;
}

}  // namespace lfs
