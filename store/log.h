// A small process-wide logger: the daemon and the CLI say why things happened
// (a checkpoint stored generically, an errno returned to a user).
#pragma once

#include <string>

namespace lfs {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };

void SetLogLevel(LogLevel level);
LogLevel GetLogLevel();
// Appends to path instead of stderr (empty: back to stderr).
bool SetLogFile(const std::string& path);
void Log(LogLevel level, const std::string& message);
inline void LogInfo(const std::string& m) { Log(LogLevel::kInfo, m); }
inline void LogWarn(const std::string& m) { Log(LogLevel::kWarn, m); }
inline void LogError(const std::string& m) { Log(LogLevel::kError, m); }
inline void LogDebug(const std::string& m) { Log(LogLevel::kDebug, m); }
bool ParseLogLevel(const std::string& s, LogLevel* out);

}  // namespace lfs
