// Chunk codecs. Each stored chunk records its codec id (frozen values) in its
// frame; a codec never loses a bit: Decode(Encode(x)) == x for every input.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "store/status.h"

namespace lfs::codec {

// Frozen: stored in pack frames and the chunk index (store/FORMAT.md).
enum class CodecId : uint8_t {
  kRaw = 0,            // payload is the chunk
  kZstd = 1,           // one zstd frame
  kByteGroupZstd = 2,  // bytes split into elem_width planes, each zstd or raw
  kXorDelta = 3,       // XOR with a base chunk, then byte-grouped like kByteGroupZstd
};
const char* CodecName(CodecId id);

struct EncodeOptions {
  // Element width in bytes for float-like data (2, 4 or 8); 1 means "not
  // float-like": byte grouping is not tried.
  int elem_width = 1;
  int zstd_level = 1;  // measured: level 3 gains no ratio on weights, costs speed
};

struct Encoded {
  CodecId codec = CodecId::kRaw;
  std::string payload;
};

// Encodes raw with the smallest of: raw, zstd, byte-grouped zstd (elem_width>1).
// When base is non-null and has raw's length, the XOR delta against it is tried
// too and kept only when strictly smaller than the best standalone encoding.
Encoded Encode(std::string_view raw, const EncodeOptions& opts, const std::string_view* base);

// Decodes payload into exactly raw_len bytes. base must be the chunk the delta
// was made against (ignored by the other codecs). A malformed payload is
// Corruption, never a crash or a short result.
Status Decode(CodecId codec, std::string_view payload, size_t raw_len, int elem_width,
              std::string_view base, std::string* out);

}  // namespace lfs::codec
