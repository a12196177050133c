// Version diff: file by file and tensor by tensor, with change statistics.
#pragma once

#include <string>
#include <vector>

#include "lineage/lineage.h"

namespace lfs::lineage {

struct TensorDiff {
  enum class Kind { kAdded, kRemoved, kIdentical, kChanged, kShapeChanged };
  std::string name;
  Kind kind = Kind::kIdentical;
  formats::DType dtype_a = formats::DType::kUnknown, dtype_b = formats::DType::kUnknown;
  std::vector<int64_t> shape_a, shape_b;
  bool has_stats = false;
  double max_abs_delta = 0;  // max |b - a|
  double rel_l2 = 0;         // ||b - a|| / ||a||
  double frac_changed = 0;   // fraction of elements that differ
};
const char* TensorDiffKindName(TensorDiff::Kind k);

struct FileDiff {
  enum class Kind { kAdded, kRemoved, kIdentical, kChanged };
  std::string name;
  Kind kind = Kind::kIdentical;
  uint64_t size_a = 0, size_b = 0;
};
const char* FileDiffKindName(FileDiff::Kind k);

struct DiffResult {
  std::vector<FileDiff> files;
  std::vector<TensorDiff> tensors;
};

// Changed tensors of a numeric dtype get statistics (streamed, bounded memory).
Result<DiffResult> Diff(Lineage& lin, const Version& a, const Version& b, bool stats = true);

// Decodes element i of raw little-endian data of dtype to double (NaN for unknown).
double ElementAsDouble(formats::DType dtype, const char* p);

}  // namespace lfs::lineage
