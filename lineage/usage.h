// Space accounting per version: logical bytes, stored bytes (each chunk's
// frame shared equally among the versions that need it) and unique bytes
// (chunks no other version needs: what removing it would free).
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "lineage/lineage.h"

namespace lfs::lineage {

struct VersionUsage {
  VersionKey key;
  uint64_t logical = 0;
  double stored = 0;
  uint64_t unique = 0;
};

struct UsageReport {
  std::vector<VersionUsage> versions;
  uint64_t pack_bytes = 0;  // on disk, including dead space until gc
  uint64_t live_bytes = 0;
};

// model: only versions of that model (stored/unique still account for sharing
// with every version of the store).
Result<UsageReport> ComputeUsage(Lineage& lin);

}  // namespace lfs::lineage
