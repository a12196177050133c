// zlib's crc32 of tensor bytes: zip entries (the synthesized .pt views) carry it.
#pragma once

#include <zlib.h>

#include <cstdint>
#include <string_view>

namespace lfs {

inline uint32_t Crc32(std::string_view s, uint32_t crc = 0) {
  return static_cast<uint32_t>(
      crc32_z(crc, reinterpret_cast<const Bytef*>(s.data()), static_cast<z_size_t>(s.size())));
}

// crc32 of A||B from crc32(A), crc32(B) and B's length: chunks are summed on
// the worker threads and joined in order by the thread that owns the tensor.
inline uint32_t Crc32Combine(uint32_t a, uint32_t b, uint64_t len_b) {
  return static_cast<uint32_t>(crc32_combine(a, b, static_cast<z_off_t>(len_b)));
}

}  // namespace lfs
