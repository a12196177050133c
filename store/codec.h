// Chunk codecs. Each stored chunk records its codec id (frozen values) in its
// frame; a codec never loses a bit: Decode(Encode(x)) == x for every input.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "store/status.h"

namespace lfs::codec {

// Frozen: stored in pack frames and the chunk index (store/FORMAT.md).
enum class CodecId : uint8_t {
  kRaw = 0,            // payload is the chunk
  kZstd = 1,           // one zstd frame
  kByteGroupZstd = 2,  // bytes split into elem_width planes, each zstd or raw
  kXorDelta = 3,       // XOR with a base chunk, then byte-grouped like kByteGroupZstd
  kSegmented = 4,      // independently coded and checksummed segments, each codec 0-3
};
const char* CodecName(CodecId id);
bool ValidCodecId(uint8_t id);

// Raw bytes per segment of a kSegmented chunk. A read of a few KiB of a chunk
// that is not cached decodes and verifies one segment instead of the whole
// 1 MiB chunk (squashfuse decodes a 128 KiB block for the same read).
constexpr size_t kSegmentBytes = 64 << 10;

struct EncodeOptions {
  // Element width in bytes for float-like data (2, 4 or 8); 1 means "not
  // float-like": byte grouping is not tried.
  int elem_width = 1;
  int zstd_level = 1;  // measured: level 3 gains no ratio on weights, costs speed
  // Tensor-like chunks (elem_width > 1 or a delta base) of at least two
  // segments are written as kSegmented.
  bool segment = true;
};

struct Encoded {
  CodecId codec = CodecId::kRaw;
  std::string payload;
  bool uses_base = false;  // decoding needs the base (kXorDelta, or XOR segments)
};

// Encodes raw with the smallest of: raw, zstd, byte-grouped zstd (elem_width>1).
// When base is non-null and has raw's length, the XOR delta against it is tried
// too and kept only when strictly smaller than the best standalone encoding.
// Tensor-like chunks of two segments or more are coded segment by segment
// that way (kSegmented).
Encoded Encode(std::string_view raw, const EncodeOptions& opts, const std::string_view* base);

// Decodes payload into exactly raw_len bytes. base must be the chunk the delta
// was made against (ignored by the other codecs). A malformed payload is
// Corruption, never a crash or a short result.
Status Decode(CodecId codec, std::string_view payload, size_t raw_len, int elem_width,
              std::string_view base, std::string* out);

// The table at the start of a kSegmented payload.
struct SegmentTable {
  struct Segment {
    CodecId codec = CodecId::kRaw;  // 0-3
    uint64_t payload_offset = 0;    // in the chunk's payload
    uint32_t payload_len = 0;
    uint64_t raw_offset = 0;  // in the chunk
    uint32_t raw_len = 0;
    uint64_t hash = 0;  // XXH3-64 of the segment's raw bytes
  };
  uint32_t segment_bytes = 0;
  size_t table_bytes = 0;      // payload bytes the table takes
  uint64_t payload_bytes = 0;  // table + every segment
  bool uses_base = false;
  std::vector<Segment> segments;
};
// Bytes of a table of n segments (a reader fetches them before the segments).
size_t SegmentTableBytes(size_t n_segments);
// Parses and checks (checksum, bounds) the table at the start of payload; the
// segments themselves need not be present. raw_len: the chunk's length.
Result<SegmentTable> ParseSegmentTable(std::string_view payload, size_t raw_len);
// Decodes one segment into out (s.raw_len bytes) and verifies its checksum.
// base_piece: the base chunk's bytes at the same range (XOR segments).
Status DecodeSegment(const SegmentTable::Segment& s, std::string_view seg_payload,
                     std::string_view base_piece, char* out);
// fsck: the segment checksums of a kSegmented payload against the chunk's
// verified bytes (a full read does not need them; a partial read would fail).
Status CheckSegments(std::string_view payload, std::string_view raw);

}  // namespace lfs::codec
