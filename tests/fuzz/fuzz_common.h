// Shared helpers of the libFuzzer targets: invariants every parser result must
// satisfy (documented in store/formats/format.h). A violated invariant aborts,
// so libFuzzer records the input as a crash.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "store/formats/format.h"

namespace lfs::fuzz {

[[noreturn]] inline void Fail(const char* target, const char* what, uint64_t a = 0,
                              uint64_t b = 0) {
  std::fprintf(stderr, "%s: invariant violated: %s (%llu, %llu)\n", target, what,
               static_cast<unsigned long long>(a), static_cast<unsigned long long>(b));
  std::abort();
}

inline std::string_view AsView(const uint8_t* data, size_t size) {
  return std::string_view(reinterpret_cast<const char*>(data), size);
}

// format.h: ranges are sorted by offset, non-overlapping and inside the file.
// Tensor spans given with a non-zero byte length lie inside the file too.
inline void CheckParsed(const char* target, const formats::ParsedFile& p, uint64_t file_size) {
  uint64_t prev_end = 0;
  for (size_t i = 0; i < p.ranges.size(); i++) {
    const auto& r = p.ranges[i];
    if (r.offset > file_size || r.nbytes > file_size - r.offset) {
      Fail(target, "range outside the file", r.offset, r.nbytes);
    }
    if (i > 0 && r.offset < prev_end)
      Fail(target, "ranges overlap or unsorted", r.offset, prev_end);
    prev_end = r.offset + r.nbytes;
  }
  for (const auto& t : p.tensors) {
    if (t.offset > file_size || t.nbytes > file_size - t.offset) {
      Fail(target, "tensor span outside the file", t.offset, t.nbytes);
    }
    if (t.shape.size() > 64) Fail(target, "more dims than the limit", t.shape.size());
  }
}

}  // namespace lfs::fuzz
