// libFuzzer target: pack frames (DecodeFrame) and chunk codecs (codec::Decode),
// plus an Encode -> Decode round trip.
//
// Input: u8 mode, u16 base_len (LE), base_len bytes of delta base, then the rest.
//   mode & 3 == 0: the rest is a frame, decoded as stored (checksum must match).
//   mode & 3 == 1: the rest is a frame whose payload length and XXH3-64
//                  trailer are fixed up first, so the codec behind it is reached.
//   mode & 3 == 2: the rest is a codec payload; codec id and raw length are
//                  taken from its first 4 bytes (raw length capped at 4 MiB).
//                  A segmented payload's table checksum is fixed up when mode
//                  bit 6 is set, and each segment is also decoded on its own.
//   mode & 3 == 3: the rest is raw chunk data: Encode (against the base when
//                  lengths allow), frame it, DecodeFrame + Decode must give it back.
// mode bit 2: for a delta, stretch/cut the base to raw_len so the length check
// passes and the XOR path runs.
#include <cstdint>
#include <cstring>
#include <string>

#include "store/codec.h"
#include "store/digest.h"
#include "store/pack.h"
#include "tests/fuzz/fuzz_common.h"

namespace {

constexpr size_t kMaxRaw = 4u << 20;

std::string FitBase(std::string_view base, size_t n) {
  std::string b(n, '\0');
  if (!base.empty()) {
    for (size_t i = 0; i < n; i++) b[i] = base[i % base.size()];
  }
  return b;
}

void DecodeChecked(lfs::codec::CodecId codec, std::string_view payload, size_t raw_len, int width,
                   std::string_view base, bool fit_base) {
  if (raw_len > kMaxRaw) return;
  std::string fitted;
  if ((codec == lfs::codec::CodecId::kXorDelta || codec == lfs::codec::CodecId::kSegmented) &&
      fit_base) {
    fitted = FitBase(base, raw_len);
    base = fitted;
  }
  std::string out;
  lfs::Status s = lfs::codec::Decode(codec, payload, raw_len, width, base, &out);
  if (s.ok() && out.size() != raw_len) {
    lfs::fuzz::Fail("frame", "Decode ok with a wrong length", out.size(), raw_len);
  }
  if (!s.ok() && !s.IsCorruption()) {
    std::fprintf(stderr, "%s\n", s.ToString().c_str());
    lfs::fuzz::Fail("frame", "Decode failure is not Corruption");
  }
  if (codec != lfs::codec::CodecId::kSegmented) return;
  // The partial-read path: the table, then each segment by itself.
  auto table = lfs::codec::ParseSegmentTable(payload, raw_len);
  if (!table.ok()) return;
  for (const auto& seg : table->segments) {
    if (seg.payload_offset + seg.payload_len > payload.size()) return;
    std::string piece(seg.raw_len, '\0');
    std::string_view base_piece =
        base.size() == raw_len ? base.substr(seg.raw_offset, seg.raw_len) : std::string_view();
    lfs::Status ss = lfs::codec::DecodeSegment(
        seg, payload.substr(seg.payload_offset, seg.payload_len), base_piece, piece.data());
    if (ss.ok() && s.ok() && std::string_view(out).substr(seg.raw_offset, seg.raw_len) != piece) {
      lfs::fuzz::Fail("frame", "a segment decodes differently alone");
    }
    if (!ss.ok() && !ss.IsCorruption()) lfs::fuzz::Fail("frame", "segment failure not Corruption");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 3) return 0;
  uint8_t mode = data[0];
  size_t base_len = static_cast<size_t>(data[1]) | static_cast<size_t>(data[2]) << 8;
  std::string_view rest = lfs::fuzz::AsView(data + 3, size - 3);
  if (base_len > rest.size()) base_len = rest.size();
  std::string_view base = rest.substr(0, base_len);
  rest.remove_prefix(base_len);
  bool fit_base = (mode & 4) != 0;

  switch (mode & 3) {
    case 0:
    case 1: {
      std::string frame(rest);
      if ((mode & 3) == 1 && frame.size() >= lfs::kFrameHeaderSize + lfs::kFrameTrailerSize) {
        uint32_t plen =
            static_cast<uint32_t>(frame.size() - lfs::kFrameHeaderSize - lfs::kFrameTrailerSize);
        std::memcpy(&frame[12], &plen, 4);
        uint64_t sum = lfs::Hash64(frame.data(), lfs::kFrameHeaderSize + plen);
        std::memcpy(&frame[lfs::kFrameHeaderSize + plen], &sum, 8);
      }
      lfs::FrameHeader h;
      std::string_view payload;
      lfs::Status s = lfs::DecodeFrame(frame, &h, &payload);
      if (!s.ok()) return 0;
      if (payload.size() != h.payload_len)
        lfs::fuzz::Fail("frame", "payload length", payload.size());
      DecodeChecked(h.codec, payload, h.raw_len, h.elem_width, base, fit_base);
      return 0;
    }
    case 2: {
      if (rest.size() < 4) return 0;
      auto codec = static_cast<lfs::codec::CodecId>(static_cast<uint8_t>(rest[0]) % 5);
      size_t raw_len = (static_cast<size_t>(static_cast<uint8_t>(rest[1])) |
                        static_cast<size_t>(static_cast<uint8_t>(rest[2])) << 8 |
                        static_cast<size_t>(static_cast<uint8_t>(rest[3])) << 16) %
                       (kMaxRaw + 1);
      std::string payload(rest.substr(4));
      if (codec == lfs::codec::CodecId::kSegmented && (mode & 0x40) && payload.size() >= 8) {
        uint32_t n;
        std::memcpy(&n, payload.data() + 4, 4);
        const size_t covered = 8 + 13 * static_cast<size_t>(n);
        if (n <= (1u << 16) && payload.size() >= covered + 8) {
          uint64_t sum = lfs::Hash64(payload.data(), covered);
          std::memcpy(&payload[covered], &sum, 8);
        }
      }
      DecodeChecked(codec, payload, raw_len, 1 + (mode >> 3) % 8, base, fit_base);
      return 0;
    }
    default: {
      static const int kWidths[] = {1, 2, 4, 8};
      lfs::codec::EncodeOptions opts;
      opts.elem_width = kWidths[(mode >> 3) & 3];
      std::string fitted = FitBase(base, rest.size());
      std::string_view bview(fitted);
      const std::string_view* bp = (mode & 0x20) ? &bview : nullptr;
      lfs::codec::Encoded e = lfs::codec::Encode(rest, opts, bp);
      lfs::FrameHeader h;
      h.codec = e.codec;
      h.elem_width = static_cast<uint8_t>(opts.elem_width);
      h.raw_len = static_cast<uint32_t>(rest.size());
      h.digest = lfs::Digest::Of(rest);
      if (e.uses_base) h.base = lfs::Digest::Of(fitted);
      std::string frame = lfs::EncodeFrame(h, e.payload);
      lfs::FrameHeader h2;
      std::string_view payload;
      lfs::Status s = lfs::DecodeFrame(frame, &h2, &payload);
      if (!s.ok()) lfs::fuzz::Fail("frame", "EncodeFrame output rejected");
      if (h2.codec != h.codec || h2.raw_len != h.raw_len || h2.digest != h.digest ||
          h2.base != h.base || h2.elem_width != h.elem_width) {
        lfs::fuzz::Fail("frame", "frame header round trip");
      }
      std::string out;
      s = lfs::codec::Decode(h2.codec, payload, h2.raw_len, h2.elem_width, fitted, &out);
      if (!s.ok()) {
        std::fprintf(stderr, "%s\n", s.ToString().c_str());
        lfs::fuzz::Fail("frame", "Decode(Encode(x)) failed", static_cast<uint64_t>(e.codec));
      }
      if (out != rest)
        lfs::fuzz::Fail("frame", "Decode(Encode(x)) != x", static_cast<uint64_t>(e.codec));
      return 0;
    }
  }
}
