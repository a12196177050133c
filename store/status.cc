#include "store/status.h"

#include <cerrno>
#include <cstring>

namespace lfs {

Status Status::FromErrno(int err, const std::string& context) {
  std::string m = context + ": " + std::strerror(err);
  switch (err) {
    case ENOENT: return NotFound(m);
    case ENOSPC:
    case EDQUOT: return NoSpace(m);
    case EEXIST: return AlreadyExists(m);
    case EROFS: return ReadOnly(m);
    case EINVAL:
    case ENAMETOOLONG: return InvalidArgument(m);
    case EBUSY:
    case EAGAIN: return Busy(m);
    case ENOTEMPTY: return NotEmpty(m);
    case ENOTDIR: return NotADirectory(m);
    case EISDIR: return IsADirectory(m);
    case EACCES:
    case EPERM: return Permission(m);
    case ENOTSUP: return Unsupported(m);
    default: return IOError(m);
  }
}

const char* Status::CodeName(Code c) {
  switch (c) {
    case Code::kOk: return "OK";
    case Code::kNotFound: return "NotFound";
    case Code::kCorruption: return "Corruption";
    case Code::kIOError: return "IOError";
    case Code::kNoSpace: return "NoSpace";
    case Code::kInvalidArgument: return "InvalidArgument";
    case Code::kAlreadyExists: return "AlreadyExists";
    case Code::kReadOnly: return "ReadOnly";
    case Code::kBusy: return "Busy";
    case Code::kNotEmpty: return "NotEmpty";
    case Code::kUnsupported: return "Unsupported";
    case Code::kNotADirectory: return "NotADirectory";
    case Code::kIsADirectory: return "IsADirectory";
    case Code::kPermission: return "Permission";
  }
  return "Unknown";
}

std::string Status::ToString() const {
  if (ok()) return "OK";
  return std::string(CodeName(code_)) + ": " + msg_;
}

}  // namespace lfs
