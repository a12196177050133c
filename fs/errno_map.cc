#include "fs/errno_map.h"

#include <cerrno>

namespace lfs::fs {

int ToErrno(const Status& s) {
  using C = Status::Code;
  switch (s.code()) {
    case C::kOk: return 0;
    case C::kNotFound: return ENOENT;
    case C::kCorruption: return EIO;
    case C::kIOError: return EIO;
    case C::kNoSpace: return ENOSPC;
    case C::kInvalidArgument: return EINVAL;
    case C::kAlreadyExists: return EEXIST;
    case C::kReadOnly: return EROFS;
    case C::kBusy: return EBUSY;
    case C::kNotEmpty: return ENOTEMPTY;
    case C::kUnsupported: return ENOTSUP;
    case C::kNotADirectory: return ENOTDIR;
    case C::kIsADirectory: return EISDIR;
    case C::kPermission: return EACCES;
  }
  return EIO;
}

}  // namespace lfs::fs
