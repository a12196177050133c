#include "store/pack.h"

#include <cstdio>
#include <cstring>

#include "store/coding.h"

namespace lfs {

std::string PackHeader() {
  std::string h(kPackMagic, sizeof kPackMagic);
  PutFixed32(&h, kPackVersion);
  PutFixed32(&h, 0);
  return h;
}

Status CheckPackHeader(std::string_view header) {
  if (header.size() < kPackHeaderSize || std::memcmp(header.data(), kPackMagic, 8) != 0) {
    return Status::Corruption("bad pack magic");
  }
  Decoder d(header.substr(8));
  uint32_t v = d.Fixed32();
  if (v != kPackVersion) return Status::Corruption("unknown pack version " + std::to_string(v));
  return Status::OK();
}

std::string PackFileName(uint64_t pack_id) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%016llx.pack", static_cast<unsigned long long>(pack_id));
  return buf;
}

std::string EncodeFrame(const FrameHeader& h, std::string_view payload) {
  std::string f;
  f.reserve(kFrameHeaderSize + payload.size() + kFrameTrailerSize);
  PutFixed32(&f, kFrameMagic);
  PutFixed8(&f, static_cast<uint8_t>(h.codec));
  PutFixed8(&f, h.elem_width);
  f.append(2, '\0');
  PutFixed32(&f, h.raw_len);
  PutFixed32(&f, static_cast<uint32_t>(payload.size()));
  PutDigest(&f, h.digest);
  PutDigest(&f, h.base);
  f.append(payload);
  PutFixed64(&f, Hash64(f.data(), f.size()));
  return f;
}

Status DecodeFrameHeader(std::string_view prefix, FrameHeader* h) {
  if (prefix.size() < kFrameHeaderSize) return Status::Corruption("frame shorter than its header");
  Decoder d(prefix.substr(0, kFrameHeaderSize));
  if (d.Fixed32() != kFrameMagic) return Status::Corruption("bad frame magic");
  uint8_t codec = d.Fixed8();
  if (!codec::ValidCodecId(codec)) {
    return Status::Corruption("unknown codec id " + std::to_string(codec));
  }
  h->codec = static_cast<codec::CodecId>(codec);
  h->elem_width = d.Fixed8();
  d.Fixed8();
  d.Fixed8();
  h->raw_len = d.Fixed32();
  h->payload_len = d.Fixed32();
  h->digest = d.DigestValue();
  h->base = d.DigestValue();
  if (!d.ok()) return Status::Corruption("truncated frame header");
  if (h->codec == codec::CodecId::kXorDelta && h->base.empty()) {
    return Status::Corruption("delta frame without a base");
  }
  if (h->codec != codec::CodecId::kXorDelta && h->codec != codec::CodecId::kSegmented &&
      !h->base.empty()) {
    return Status::Corruption("frame names a base its codec does not use");
  }
  return Status::OK();
}

Status DecodeFrame(std::string_view frame, FrameHeader* h, std::string_view* payload,
                   bool check_sum) {
  if (frame.size() < kFrameHeaderSize + kFrameTrailerSize) {
    return Status::Corruption("frame shorter than its header");
  }
  LFS_RETURN_IF_ERROR(DecodeFrameHeader(frame, h));
  if (frame.size() != kFrameHeaderSize + h->payload_len + kFrameTrailerSize) {
    return Status::Corruption("frame length does not match its header");
  }
  uint64_t want;
  std::memcpy(&want, frame.data() + kFrameHeaderSize + h->payload_len, 8);
  if (check_sum && Hash64(frame.data(), kFrameHeaderSize + h->payload_len) != want) {
    return Status::Corruption("frame checksum mismatch");
  }
  *payload = frame.substr(kFrameHeaderSize, h->payload_len);
  return Status::OK();
}

}  // namespace lfs
