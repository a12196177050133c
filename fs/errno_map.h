#pragma once

#include "store/status.h"

namespace lfs::fs {
// The one Status -> errno translation of the daemon.
int ToErrno(const Status& s);
}  // namespace lfs::fs
