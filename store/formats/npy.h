// numpy .npy (format versions 1.0, 2.0, 3.0).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "store/formats/format.h"

namespace lfs::formats {

// One range/tensor named "" (callers name it after the file). A Fortran-order
// array keeps its bytes as stored; its tensor then carries column-major element
// strides (stride is empty for C order).
Result<ParsedFile> ParseNpy(const RandomAccess& f, const ParseLimits& lim = {});

// Header bytes of a C-order .npy for (dtype, shape): header + data is a valid
// .npy (v1.0, or v2.0 when the header needs it), byte-identical to np.save's.
// nullopt when numpy has no such dtype (bf16, fp8) or a dimension is negative.
std::optional<std::string> NpyHeader(DType dtype, const std::vector<int64_t>& shape);

}  // namespace lfs::formats
