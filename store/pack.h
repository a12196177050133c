// Pack files and chunk frames (layouts in store/FORMAT.md).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "store/codec.h"
#include "store/digest.h"
#include "store/status.h"

namespace lfs {

constexpr char kPackMagic[8] = {'L', 'F', 'S', 'P', 'A', 'C', 'K', '1'};
constexpr size_t kPackHeaderSize = 16;  // magic + u32 version + u32 reserved
constexpr uint32_t kPackVersion = 1;
constexpr uint32_t kFrameMagic = 0x4643464C;  // "LFCF" little-endian
constexpr size_t kFrameHeaderSize = 50;
constexpr size_t kFrameTrailerSize = 8;  // XXH3-64 of header + payload

std::string PackHeader();
Status CheckPackHeader(std::string_view header);
std::string PackFileName(uint64_t pack_id);  // "0000000000000001.pack"

struct FrameHeader {
  codec::CodecId codec = codec::CodecId::kRaw;
  uint8_t elem_width = 1;
  uint32_t raw_len = 0;
  uint32_t payload_len = 0;
  Digest digest;  // address of the raw bytes
  Digest base;    // delta base: set for kXorDelta and for kSegmented with XOR segments
};

// Whole frame: header, payload, checksum.
std::string EncodeFrame(const FrameHeader& h, std::string_view payload);
// Parses and checks a whole frame (magic, lengths, checksum). On success
// *payload points into frame. A reader that verifies the decoded bytes
// against their digest anyway may skip the checksum (check_sum = false).
// The header alone (the first kFrameHeaderSize bytes of a frame), unverified:
// for a partial read, whose segments carry their own checksums.
Status DecodeFrameHeader(std::string_view prefix, FrameHeader* h);
Status DecodeFrame(std::string_view frame, FrameHeader* h, std::string_view* payload,
                   bool check_sum = true);

}  // namespace lfs
