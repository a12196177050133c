#include "store/codec.h"

#include "store/digest.h"

// For ZSTD_compressSequences (see ZstdProfile::kLiterals).
#define ZSTD_STATIC_LINKING_ONLY
#include <zstd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <optional>
#include <vector>

namespace lfs::codec {

namespace {

// ---------------------------------------------------------------------------
// Byte-grouped payload (kByteGroupZstd and kXorDelta), little-endian:
//
//   u8  elem_width W                       1..kMaxElemWidth
//   W × { u8 mode; u32 stored_len }        mode 0 = raw plane, 1 = one zstd frame
//   W × plane body                         plane k = byte k of every whole element
//   tail                                   raw_len % W bytes, stored raw
//
// Each plane holds raw_len / W bytes once decoded. For kXorDelta the bytes
// grouped (planes and tail) are raw XOR base.
// ---------------------------------------------------------------------------
constexpr size_t kMaxElemWidth = 8;
constexpr size_t kPlaneDescriptorBytes = 5;
constexpr uint8_t kPlaneRaw = 0;
constexpr uint8_t kPlaneZstd = 1;

size_t GroupedHeaderBytes(size_t width) { return 1 + kPlaneDescriptorBytes * width; }

void PutU32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
uint32_t GetU32(const uint8_t* p) {
  return uint32_t{p[0]} | uint32_t{p[1]} << 8 | uint32_t{p[2]} << 16 | uint32_t{p[3]} << 24;
}

// --- Per-thread state: zstd contexts are expensive to create, and scratch
// buffers would otherwise be fresh allocations per chunk.

struct CCtxDeleter {
  void operator()(ZSTD_CCtx* c) const { ZSTD_freeCCtx(c); }
};
struct DCtxDeleter {
  void operator()(ZSTD_DCtx* d) const { ZSTD_freeDCtx(d); }
};

ZSTD_CCtx* ThreadCCtx() {
  thread_local std::unique_ptr<ZSTD_CCtx, CCtxDeleter> cctx(ZSTD_createCCtx());
  return cctx.get();
}
ZSTD_DCtx* ThreadDCtx() {
  thread_local std::unique_ptr<ZSTD_DCtx, DCtxDeleter> dctx(ZSTD_createDCtx());
  return dctx.get();
}

// Uninitialised, grow-only per-thread bytes: std::string/vector would zero
// them first, and a payload built in place would keep the raw size as its
// capacity. kPlanes holds split or decoded planes; kOutput a payload being
// built, copied out at its final size.
enum class Scratch { kPlanes, kOutput };
uint8_t* ThreadScratch(Scratch which, size_t n) {
  struct Buffer {
    std::unique_ptr<uint8_t[]> bytes;
    size_t capacity = 0;
  };
  thread_local Buffer buffers[2];
  Buffer& b = buffers[static_cast<int>(which)];
  if (n > b.capacity) {
    b.bytes.reset(new uint8_t[n]);
    b.capacity = n;
  }
  return b.bytes.get();
}

uint8_t* Bytes(std::string& s) { return reinterpret_cast<uint8_t*>(s.data()); }
const uint8_t* Bytes(std::string_view s) { return reinterpret_cast<const uint8_t*>(s.data()); }

// --- Plane split and merge. Widths 2 and 4 (bf16/fp16, fp32) are written out
// with one named pointer per plane: gcc vectorises those (byte shuffles), not
// a loop over an array of plane pointers. The outer loop walks fixed-size
// blocks so the inner loop has a constant trip count: gcc -O2 (the
// "very-cheap" cost model) only vectorises loops that need no scalar
// epilogue. __restrict rules out the aliasing checks it would otherwise need.
// kXor folds the delta's XOR with the base into the same pass.

constexpr size_t kBlock = 64;

template <bool kXor>
void Split2(const uint8_t* __restrict src, const uint8_t* __restrict base, size_t n,
            uint8_t* __restrict p0, uint8_t* __restrict p1) {
  size_t i = 0;
  for (; i + kBlock <= n; i += kBlock) {
    for (size_t j = i; j < i + kBlock; ++j) {
      p0[j] = kXor ? src[2 * j] ^ base[2 * j] : src[2 * j];
      p1[j] = kXor ? src[2 * j + 1] ^ base[2 * j + 1] : src[2 * j + 1];
    }
  }
  for (; i < n; ++i) {
    p0[i] = kXor ? src[2 * i] ^ base[2 * i] : src[2 * i];
    p1[i] = kXor ? src[2 * i + 1] ^ base[2 * i + 1] : src[2 * i + 1];
  }
}

template <bool kXor>
void Split4(const uint8_t* __restrict src, const uint8_t* __restrict base, size_t n,
            uint8_t* __restrict p0, uint8_t* __restrict p1, uint8_t* __restrict p2,
            uint8_t* __restrict p3) {
  size_t i = 0;
  for (; i + kBlock <= n; i += kBlock) {
    for (size_t j = i; j < i + kBlock; ++j) {
      p0[j] = kXor ? src[4 * j] ^ base[4 * j] : src[4 * j];
      p1[j] = kXor ? src[4 * j + 1] ^ base[4 * j + 1] : src[4 * j + 1];
      p2[j] = kXor ? src[4 * j + 2] ^ base[4 * j + 2] : src[4 * j + 2];
      p3[j] = kXor ? src[4 * j + 3] ^ base[4 * j + 3] : src[4 * j + 3];
    }
  }
  for (; i < n; ++i) {
    p0[i] = kXor ? src[4 * i] ^ base[4 * i] : src[4 * i];
    p1[i] = kXor ? src[4 * i + 1] ^ base[4 * i + 1] : src[4 * i + 1];
    p2[i] = kXor ? src[4 * i + 2] ^ base[4 * i + 2] : src[4 * i + 2];
    p3[i] = kXor ? src[4 * i + 3] ^ base[4 * i + 3] : src[4 * i + 3];
  }
}

template <bool kXor>
void Merge2(const uint8_t* __restrict p0, const uint8_t* __restrict p1,
            const uint8_t* __restrict base, size_t n, uint8_t* __restrict dst) {
  size_t i = 0;
  for (; i + kBlock <= n; i += kBlock) {
    for (size_t j = i; j < i + kBlock; ++j) {
      dst[2 * j] = kXor ? p0[j] ^ base[2 * j] : p0[j];
      dst[2 * j + 1] = kXor ? p1[j] ^ base[2 * j + 1] : p1[j];
    }
  }
  for (; i < n; ++i) {
    dst[2 * i] = kXor ? p0[i] ^ base[2 * i] : p0[i];
    dst[2 * i + 1] = kXor ? p1[i] ^ base[2 * i + 1] : p1[i];
  }
}

template <bool kXor>
void Merge4(const uint8_t* __restrict p0, const uint8_t* __restrict p1,
            const uint8_t* __restrict p2, const uint8_t* __restrict p3,
            const uint8_t* __restrict base, size_t n, uint8_t* __restrict dst) {
  size_t i = 0;
  for (; i + kBlock <= n; i += kBlock) {
    for (size_t j = i; j < i + kBlock; ++j) {
      dst[4 * j] = kXor ? p0[j] ^ base[4 * j] : p0[j];
      dst[4 * j + 1] = kXor ? p1[j] ^ base[4 * j + 1] : p1[j];
      dst[4 * j + 2] = kXor ? p2[j] ^ base[4 * j + 2] : p2[j];
      dst[4 * j + 3] = kXor ? p3[j] ^ base[4 * j + 3] : p3[j];
    }
  }
  for (; i < n; ++i) {
    dst[4 * i] = kXor ? p0[i] ^ base[4 * i] : p0[i];
    dst[4 * i + 1] = kXor ? p1[i] ^ base[4 * i + 1] : p1[i];
    dst[4 * i + 2] = kXor ? p2[i] ^ base[4 * i + 2] : p2[i];
    dst[4 * i + 3] = kXor ? p3[i] ^ base[4 * i + 3] : p3[i];
  }
}

// planes[k * n + i] = src[width * i + k] (^ base[width * i + k] when kXor).
template <bool kXor>
void SplitPlanes(const uint8_t* src, const uint8_t* base, size_t n, size_t width, uint8_t* planes) {
  switch (width) {
    case 2: return Split2<kXor>(src, base, n, planes, planes + n);
    case 4: return Split4<kXor>(src, base, n, planes, planes + n, planes + 2 * n, planes + 3 * n);
  }
  for (size_t k = 0; k < width; ++k) {
    uint8_t* plane = planes + k * n;
    for (size_t i = 0; i < n; ++i)
      plane[i] = kXor ? src[width * i + k] ^ base[width * i + k] : src[width * i + k];
  }
}

// dst[width * i + k] = plane[k][i] (^ base[width * i + k] when kXor).
template <bool kXor>
void MergePlanes(const uint8_t* const* plane, const uint8_t* base, size_t n, size_t width,
                 uint8_t* dst) {
  switch (width) {
    case 2: return Merge2<kXor>(plane[0], plane[1], base, n, dst);
    case 4: return Merge4<kXor>(plane[0], plane[1], plane[2], plane[3], base, n, dst);
  }
  for (size_t k = 0; k < width; ++k) {
    const uint8_t* p = plane[k];
    for (size_t i = 0; i < n; ++i) {
      dst[width * i + k] = kXor ? p[i] ^ base[width * i + k] : p[i];
    }
  }
}

// --- zstd helpers.

// How a zstd frame is made.
//  kGeneric: the level's own parameters (plain kZstd chunks).
//  kLiterals: no matches at all, so the frame is Huffman-coded literal blocks.
//    A byte plane of float data is nearly memoryless (the exponent plane of
//    N(0, 0.02) weights has ~2.7 bits/byte of entropy and no long repeats):
//    level 1's match finder spends its time on short matches that cost more
//    than they save. Measured on such planes: 0.339 of the plane vs 0.392 at
//    level 1, encode ~4x and decode ~2x faster; on the mostly-zero XOR planes
//    of a delta 0.162 vs 0.199 (0.185 with kRuns), decode 3x faster.
//  kRuns: Huffman needs at least 1 bit per byte, so a plane below that much
//    entropy (runs of zeros in a delta) needs matches; long ones only (7+
//    bytes, 64-entry hash table) are enough there and keep it fast.
// The frames are ordinary zstd frames either way; only the encoder differs.
enum class ZstdProfile { kGeneric, kLiterals, kRuns };
constexpr int kRunsMinMatch = 7;
constexpr int kRunsHashLog = 6;

// kLiterals needs ZSTD_compressSequences, an experimental API: it is used
// only with the libzstd version this was compiled against (experimental
// parameter ids may change between versions), else kRuns stands in.
bool LiteralsProfileAvailable() {
  static const bool available = ZSTD_versionNumber() == ZSTD_VERSION_NUMBER;
  return available;
}

// Compresses src[0, n) into dst; returns the frame size, or 0 when the frame
// would be longer than max_len. With kLiterals dst must have room for
// ZSTD_compressBound(n) bytes whatever max_len is: ZSTD_compressSequences in
// libzstd 1.5.4 writes past a smaller capacity instead of failing. The other
// profiles stop as soon as a block overflows max_len, which also saves time.
size_t CompressInto(const uint8_t* src, size_t n, int level, ZstdProfile profile, uint8_t* dst,
                    size_t max_len) {
  if (max_len == 0) return 0;
  if (profile == ZstdProfile::kLiterals && !LiteralsProfileAvailable()) {
    profile = ZstdProfile::kRuns;
  }
  ZSTD_CCtx* cctx = ThreadCCtx();
  ZSTD_CCtx_reset(cctx, ZSTD_reset_session_and_parameters);
  ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, level);
  size_t r;
  if (profile == ZstdProfile::kLiterals) {
    // One all-literals sequence per block (the most a block holds): zstd then
    // has nothing to search and only Huffman-codes the literals.
    ZSTD_CCtx_setParameter(cctx, ZSTD_c_blockDelimiters, ZSTD_sf_explicitBlockDelimiters);
    thread_local std::vector<ZSTD_Sequence> blocks;
    blocks.clear();
    for (size_t at = 0; at < n; at += ZSTD_BLOCKSIZE_MAX) {
      ZSTD_Sequence literals_only{};
      literals_only.litLength = static_cast<unsigned>(std::min<size_t>(ZSTD_BLOCKSIZE_MAX, n - at));
      blocks.push_back(literals_only);
    }
    r = ZSTD_compressSequences(cctx, dst, ZSTD_compressBound(n), blocks.data(), blocks.size(), src,
                               n);
  } else {
    if (profile == ZstdProfile::kRuns) {
      ZSTD_CCtx_setParameter(cctx, ZSTD_c_minMatch, kRunsMinMatch);
      ZSTD_CCtx_setParameter(cctx, ZSTD_c_hashLog, kRunsHashLog);
    }
    r = ZSTD_compress2(cctx, dst, max_len, src, n);
  }
  return ZSTD_isError(r) || r > max_len ? 0 : r;
}

// Decodes exactly one zstd frame, with nothing after it, of exactly n bytes.
Status DecompressExact(const uint8_t* src, size_t src_len, uint8_t* dst, size_t n) {
  if (ZSTD_getFrameContentSize(src, src_len) != n) {
    return Status::Corruption("zstd frame: content size does not match");
  }
  size_t frame_len = ZSTD_findFrameCompressedSize(src, src_len);
  if (ZSTD_isError(frame_len) || frame_len != src_len) {
    return Status::Corruption("zstd frame: bad frame length");
  }
  size_t r = ZSTD_decompressDCtx(ThreadDCtx(), dst, n, src, src_len);
  if (ZSTD_isError(r)) {
    return Status::Corruption(std::string("zstd frame: ") + ZSTD_getErrorName(r));
  }
  if (r != n) return Status::Corruption("zstd frame: short");
  return Status::OK();
}

// Each plane's coding is chosen from the order-0 entropy of a sample (16
// runs of 1 KiB from across the plane, or all of a small one), which costs ~1%
// of a zstd pass:
//  - above kIncompressibleBitsPerByte: stored raw untried. Mantissa planes of
//    float weights are close to random; zstd keeps literals raw anyway unless
//    Huffman saves 1/64 of them (~7.875 bits/byte); the gap is a margin for
//    the estimate's error.
//  - below kTrialBitsPerByte, where Huffman's 1-bit-per-byte floor starts to
//    matter: kLiterals or kRuns, whichever makes the smaller frame of the
//    plane's first kTrialBytes. Entropy alone did not tell them apart: the
//    crossover moved between 0.6 and 0.9 bits/byte with the byte distribution.
//  - otherwise: kLiterals.
// Contiguous runs, not a stride: a stride could alias with row lengths.
constexpr double kIncompressibleBitsPerByte = 7.85;
constexpr double kTrialBitsPerByte = 1.5;
constexpr size_t kTrialBytes = 32 << 10;
constexpr size_t kEntropySampleRuns = 16;
constexpr size_t kEntropySampleRunBytes = 1 << 10;

double SampledBitsPerByte(const uint8_t* p, size_t n) {
  uint32_t count[256] = {};
  size_t total = 0;
  if (n <= kEntropySampleRuns * kEntropySampleRunBytes) {
    for (size_t i = 0; i < n; ++i) ++count[p[i]];
    total = n;
  } else {
    for (size_t r = 0; r < kEntropySampleRuns; ++r) {
      const uint8_t* run = p + (n - kEntropySampleRunBytes) / (kEntropySampleRuns - 1) * r;
      for (size_t i = 0; i < kEntropySampleRunBytes; ++i) ++count[run[i]];
    }
    total = kEntropySampleRuns * kEntropySampleRunBytes;
  }
  double bits = 0;
  const double inv_total = 1.0 / static_cast<double>(total);
  for (uint32_t c : count) {
    if (c != 0) bits -= c * inv_total * std::log2(c * inv_total);
  }
  return bits;
}

// The profile to compress a plane with, or nullopt to store it raw untried.
std::optional<ZstdProfile> ChoosePlaneProfile(const uint8_t* p, size_t n, int level) {
  if (n < 2) return std::nullopt;
  const double bits = SampledBitsPerByte(p, n);
  if (bits > kIncompressibleBitsPerByte) return std::nullopt;
  if (bits >= kTrialBitsPerByte) return ZstdProfile::kLiterals;
  const size_t len = std::min(n, kTrialBytes);
  thread_local std::unique_ptr<uint8_t[]> trial(new uint8_t[ZSTD_COMPRESSBOUND(kTrialBytes)]);
  const size_t literals = CompressInto(p, len, level, ZstdProfile::kLiterals, trial.get(), len);
  if (literals == 0) return ZstdProfile::kRuns;
  const size_t runs = CompressInto(p, len, level, ZstdProfile::kRuns, trial.get(), literals - 1);
  return runs != 0 ? ZstdProfile::kRuns : ZstdProfile::kLiterals;
}

// Each plane's profile (nullopt: store raw), chosen once for a whole chunk
// and used for each of its segments: choosing per 16 KiB segment plane
// sampled 16x more bytes and doubled the encode time.
struct PlaneProfiles {
  std::optional<ZstdProfile> plane[kMaxElemWidth];
};

// The profiles for raw's planes (XORed with base when non-null), chosen from
// the same sample ChoosePlaneProfile would take of the whole plane: 16 runs
// of 1 KiB elements across the chunk.
PlaneProfiles ChooseChunkProfiles(std::string_view raw, const uint8_t* base, size_t width,
                                  int level) {
  PlaneProfiles out;
  const size_t n = raw.size() / width;
  const size_t runs = n <= kEntropySampleRuns * kEntropySampleRunBytes ? 1 : kEntropySampleRuns;
  const size_t run_len = runs == 1 ? n : kEntropySampleRunBytes;
  const size_t total = runs * run_len;
  // Both halves of one scratch: the runs' planes side by side, then each run.
  uint8_t* sample = ThreadScratch(Scratch::kPlanes, 2 * total * width);
  uint8_t* split = sample + total * width;
  const uint8_t* src = Bytes(raw);
  for (size_t r = 0; r < runs; ++r) {
    const size_t at = (runs == 1 ? 0 : (n - run_len) / (runs - 1) * r) * width;
    if (base != nullptr) {
      SplitPlanes<true>(src + at, base + at, run_len, width, split);
    } else {
      SplitPlanes<false>(src + at, nullptr, run_len, width, split);
    }
    for (size_t k = 0; k < width; ++k) {
      std::memcpy(sample + k * total + r * run_len, split + k * run_len, run_len);
    }
  }
  for (size_t k = 0; k < width; ++k) {
    out.plane[k] = ChoosePlaneProfile(sample + k * total, total, level);
  }
  return out;
}

// Byte-groups raw (XORed with base when non-null) into a payload (format
// above) smaller than `limit` bytes, or returns "" when it cannot be. Each
// plane is stored as its zstd frame when that is smaller, else raw; its
// profile comes from `profiles` when given, else from the plane itself.
std::string EncodeGrouped(std::string_view raw, const uint8_t* base, size_t width, int level,
                          size_t limit, const PlaneProfiles* profiles = nullptr) {
  const size_t n = raw.size() / width;
  const size_t tail = raw.size() % width;
  const size_t header = GroupedHeaderBytes(width);
  if (header + tail >= limit) return {};
  size_t budget = limit - 1 - header - tail;  // bytes left for the planes

  uint8_t* planes = ThreadScratch(Scratch::kPlanes, n * width);
  const uint8_t* src = Bytes(raw);
  if (base != nullptr) {
    SplitPlanes<true>(src, base, n, width, planes);
  } else {
    SplitPlanes<false>(src, nullptr, n, width, planes);
  }

  // Room for a whole compressBound-sized plane frame at any point (see
  // CompressInto); the budget keeps the payload itself below limit.
  uint8_t* out = ThreadScratch(Scratch::kOutput, header + raw.size() + ZSTD_compressBound(n));
  out[0] = static_cast<uint8_t>(width);
  size_t cursor = header;
  for (size_t k = 0; k < width; ++k) {
    const uint8_t* plane = planes + k * n;
    uint8_t mode = kPlaneZstd;
    size_t stored = 0;
    const std::optional<ZstdProfile> profile =
        profiles != nullptr ? profiles->plane[k] : ChoosePlaneProfile(plane, n, level);
    if (profile) {
      stored = CompressInto(plane, n, level, *profile, out + cursor, std::min(n - 1, budget));
    }
    if (stored == 0) {
      if (n > budget) return {};
      mode = kPlaneRaw;
      stored = n;
      std::memcpy(out + cursor, plane, n);
    }
    out[1 + kPlaneDescriptorBytes * k] = mode;
    PutU32(out + 2 + kPlaneDescriptorBytes * k, static_cast<uint32_t>(stored));
    cursor += stored;
    budget -= stored;
  }
  for (size_t t = n * width; t < raw.size(); ++t) {
    out[cursor++] = base != nullptr ? src[t] ^ base[t] : src[t];
  }
  return std::string(reinterpret_cast<const char*>(out), cursor);
}

// A byte-grouped payload's layout, checked against raw_len before anything is
// allocated or decoded.
struct GroupedLayout {
  struct PlaneRef {
    uint8_t mode;
    const uint8_t* data;
    size_t len;
  };
  size_t width = 0, n = 0, tail = 0, zstd_planes = 0, tail_at = 0;
  PlaneRef refs[kMaxElemWidth];
};

Status ParseGrouped(std::string_view payload, size_t raw_len, GroupedLayout* g) {
  const uint8_t* in = Bytes(payload);
  if (payload.empty()) return Status::Corruption("byte-grouped: empty payload");
  const size_t width = in[0];
  if (width < 1 || width > kMaxElemWidth) {
    return Status::Corruption("byte-grouped: bad element width");
  }
  const size_t header = GroupedHeaderBytes(width);
  if (payload.size() < header) return Status::Corruption("byte-grouped: truncated header");
  if (raw_len > std::numeric_limits<uint32_t>::max()) {
    return Status::Corruption("byte-grouped: length too large");
  }
  const size_t n = raw_len / width;
  const size_t tail = raw_len % width;

  GroupedLayout::PlaneRef* refs = g->refs;
  size_t cursor = header;
  size_t zstd_planes = 0;
  for (size_t k = 0; k < width; ++k) {
    const uint8_t mode = in[1 + kPlaneDescriptorBytes * k];
    const size_t len = GetU32(in + 2 + kPlaneDescriptorBytes * k);
    if (len > payload.size() - cursor) return Status::Corruption("byte-grouped: plane overruns");
    if (mode == kPlaneRaw) {
      if (len != n) return Status::Corruption("byte-grouped: raw plane has wrong length");
    } else if (mode == kPlaneZstd) {
      // Checked here too so that nothing is allocated for a bogus frame.
      if (ZSTD_getFrameContentSize(in + cursor, len) != n) {
        return Status::Corruption("byte-grouped: zstd plane has wrong length");
      }
      ++zstd_planes;
    } else {
      return Status::Corruption("byte-grouped: unknown plane mode");
    }
    refs[k] = {mode, in + cursor, len};
    cursor += len;
  }
  if (payload.size() - cursor != tail) return Status::Corruption("byte-grouped: bad tail length");
  g->width = width;
  g->n = n;
  g->tail = tail;
  g->zstd_planes = zstd_planes;
  g->tail_at = cursor;
  return Status::OK();
}

Status DecodeGroupedInto(std::string_view payload, size_t raw_len, const uint8_t* base,
                         uint8_t* dst) {
  GroupedLayout g;
  LFS_RETURN_IF_ERROR(ParseGrouped(payload, raw_len, &g));
  const uint8_t* in = Bytes(payload);
  const size_t width = g.width, n = g.n, tail = g.tail, zstd_planes = g.zstd_planes;
  const size_t cursor = g.tail_at;
  const GroupedLayout::PlaneRef* refs = g.refs;
  uint8_t* scratch = ThreadScratch(Scratch::kPlanes, zstd_planes * n);
  const uint8_t* plane[kMaxElemWidth];
  for (size_t k = 0; k < width; ++k) {
    if (refs[k].mode == kPlaneRaw) {
      plane[k] = refs[k].data;
      continue;
    }
    LFS_RETURN_IF_ERROR(DecompressExact(refs[k].data, refs[k].len, scratch, n));
    plane[k] = scratch;
    scratch += n;
  }

  if (base != nullptr) {
    MergePlanes<true>(plane, base, n, width, dst);
  } else {
    MergePlanes<false>(plane, nullptr, n, width, dst);
  }
  const uint8_t* tail_bytes = in + cursor;
  for (size_t t = 0; t < tail; ++t) {
    const size_t at = n * width + t;
    dst[at] = base != nullptr ? tail_bytes[t] ^ base[at] : tail_bytes[t];
  }
  return Status::OK();
}

// One zstd frame of raw smaller than `limit` bytes, or "" when it is not.
std::string EncodeZstd(std::string_view raw, int level, size_t limit) {
  if (limit <= 1) return {};
  uint8_t* out = ThreadScratch(Scratch::kOutput, limit - 1);
  const size_t len =
      CompressInto(Bytes(raw), raw.size(), level, ZstdProfile::kGeneric, out, limit - 1);
  return std::string(reinterpret_cast<const char*>(out), len);
}

// The smallest encoding offered so far; raw until something beats it. A raw
// result is copied only at the end.
class Best {
 public:
  explicit Best(std::string_view raw) : raw_(raw) {}
  void Offer(CodecId codec, std::string payload) {
    if (payload.empty() || payload.size() >= size()) return;
    best_.codec = codec;
    best_.payload = std::move(payload);
  }
  size_t size() const { return best_.codec == CodecId::kRaw ? raw_.size() : best_.payload.size(); }
  Encoded Take() && {
    if (best_.codec == CodecId::kRaw) best_.payload.assign(raw_);
    return std::move(best_);
  }

 private:
  std::string_view raw_;
  Encoded best_;
};

// Plain zstd rarely beats byte grouping on float data and costs a full zstd
// pass, so for float-like chunks it runs in full only when a sample from the
// chunk's start (1/16 of it, 4 to 64 KiB) beats the size to beat. The sample
// catches what byte planes lose: repeats longer than an element, e.g. rows.
constexpr size_t kMinPlainZstdSample = 4 << 10;
constexpr size_t kMaxPlainZstdSample = 64 << 10;

// Offers the standalone encodings that could be smaller than `limit` bytes.
void OfferStandalone(std::string_view raw, const EncodeOptions& opts, size_t limit, Best* best,
                     const PlaneProfiles* profiles) {
  const auto bound = [&] { return std::min(limit, best->size()); };
  const size_t width = static_cast<size_t>(opts.elem_width);
  const bool grouped = width > 1 && width <= kMaxElemWidth && raw.size() >= width &&
                       raw.size() <= std::numeric_limits<uint32_t>::max();
  if (!grouped) {
    best->Offer(CodecId::kZstd, EncodeZstd(raw, opts.zstd_level, bound()));
    return;
  }
  std::string grouped_payload =
      EncodeGrouped(raw, nullptr, width, opts.zstd_level, bound(), profiles);
  // Against a delta (limit below raw size): when byte grouping cannot beat it,
  // plain zstd, which is worse than grouping on float data unless rows repeat,
  // does not either (measured on the default family: no chunk changed codec,
  // and the sample cost ~5% of the encode time).
  if (grouped_payload.empty() && limit < raw.size()) return;
  best->Offer(CodecId::kByteGroupZstd, std::move(grouped_payload));
  const size_t sample_len = std::clamp(raw.size() / 16, kMinPlainZstdSample, kMaxPlainZstdSample);
  if (sample_len < raw.size()) {
    // The sample must beat the same fraction of its length as the whole would.
    const size_t sample_limit = sample_len * bound() / raw.size();
    if (EncodeZstd(raw.substr(0, sample_len), opts.zstd_level, sample_limit).empty()) return;
  }
  best->Offer(CodecId::kZstd, EncodeZstd(raw, opts.zstd_level, bound()));
}

// The smallest of raw / zstd / byte-grouped / XOR delta for one piece of
// bytes (a whole chunk, or one segment of a kSegmented chunk).
// profiles: the chunk's, for a segment (delta: of its XOR with the base).
Encoded EncodeFlat(std::string_view raw, const EncodeOptions& opts, const std::string_view* base,
                   const PlaneProfiles* delta_profiles = nullptr,
                   const PlaneProfiles* standalone_profiles = nullptr) {
  // The delta goes first: its size caps the standalone encodings, which then
  // give up as soon as they cannot match it (the common case for a fine-tuned
  // child). A standalone encoding the same size as the delta still wins.
  std::string delta;
  if (base != nullptr && base->size() == raw.size() && !raw.empty() &&
      raw.size() <= std::numeric_limits<uint32_t>::max()) {
    // Width 1 is one plane: XOR then zstd, in the same format.
    size_t width = static_cast<size_t>(opts.elem_width);
    if (width < 1 || width > kMaxElemWidth) width = 1;
    delta = EncodeGrouped(raw, Bytes(*base), width, opts.zstd_level, raw.size(), delta_profiles);
  }
  Best best(raw);
  OfferStandalone(raw, opts, delta.empty() ? raw.size() : delta.size() + 1, &best,
                  standalone_profiles);
  best.Offer(CodecId::kXorDelta, std::move(delta));
  return std::move(best).Take();
}

// Decodes a codec 0-3 payload into exactly raw_len bytes at dst.
Status DecodeFlatInto(CodecId codec, std::string_view payload, size_t raw_len,
                      std::string_view base, uint8_t* dst) {
  switch (codec) {
    case CodecId::kRaw:
      if (payload.size() != raw_len) return Status::Corruption("raw: length mismatch");
      if (raw_len > 0) std::memcpy(dst, payload.data(), raw_len);
      return Status::OK();
    case CodecId::kZstd: return DecompressExact(Bytes(payload), payload.size(), dst, raw_len);
    case CodecId::kByteGroupZstd: return DecodeGroupedInto(payload, raw_len, nullptr, dst);
    case CodecId::kXorDelta:
      if (base.size() != raw_len) return Status::Corruption("xor-delta: base length mismatch");
      return DecodeGroupedInto(payload, raw_len, Bytes(base), dst);
    case CodecId::kSegmented: break;
  }
  return Status::Corruption("unknown codec id " + std::to_string(static_cast<int>(codec)));
}

// ---------------------------------------------------------------------------
// Segmented payload (kSegmented), little-endian:
//
//   u32 segment_bytes S                    a multiple of 8 (whole elements)
//   u32 n                                  ceil(raw_len / S)
//   n × { u8 codec; u32 payload_len; u64 xxh3_64 of the segment's raw bytes }
//   u64 XXH3-64 of the table bytes above
//   n × segment payload                    codec 0-3 of raw[i*S, (i+1)*S)
//
// An XOR segment is a delta against the same byte range of the chunk's base.
// ---------------------------------------------------------------------------
constexpr size_t kSegmentEntryBytes = 13;
constexpr uint32_t kMaxSegments = 1 << 16;
constexpr uint32_t kMaxSegmentBytes = 16 << 20;

void PutU64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
uint64_t GetU64(const uint8_t* p) { return GetU32(p) | uint64_t{GetU32(p + 4)} << 32; }

Encoded EncodeSegmented(std::string_view raw, const EncodeOptions& opts,
                        const std::string_view* base) {
  const size_t seg = kSegmentBytes;
  const size_t n = (raw.size() + seg - 1) / seg;
  // The table goes first; it is filled in as the segments are appended.
  Encoded out;
  out.codec = CodecId::kSegmented;
  std::string& payload = out.payload;
  const size_t table_bytes = SegmentTableBytes(n);
  payload.reserve(table_bytes + raw.size() * 3 / 4);
  payload.resize(table_bytes);
  bool delta = false;
  const size_t width = static_cast<size_t>(opts.elem_width);
  const bool grouped = width >= 1 && width <= kMaxElemWidth;
  PlaneProfiles delta_profiles, standalone_profiles;
  if (grouped && base != nullptr) {
    delta_profiles = ChooseChunkProfiles(raw, Bytes(*base), width, opts.zstd_level);
  }
  if (grouped && width > 1) {
    standalone_profiles = ChooseChunkProfiles(raw, nullptr, width, opts.zstd_level);
  }
  for (size_t i = 0; i < n; ++i) {
    std::string_view piece = raw.substr(i * seg, seg);
    std::string_view base_piece;
    if (base != nullptr) base_piece = base->substr(i * seg, seg);
    Encoded e =
        EncodeFlat(piece, opts, base != nullptr ? &base_piece : nullptr,
                   grouped ? &delta_profiles : nullptr, grouped ? &standalone_profiles : nullptr);
    delta |= e.codec == CodecId::kXorDelta;
    uint8_t* entry = Bytes(payload) + 8 + kSegmentEntryBytes * i;
    entry[0] = static_cast<uint8_t>(e.codec);
    PutU32(entry + 1, static_cast<uint32_t>(e.payload.size()));
    PutU64(entry + 5, Hash64(piece.data(), piece.size()));
    payload += e.payload;
  }
  uint8_t* t = Bytes(payload);
  PutU32(t, static_cast<uint32_t>(seg));
  PutU32(t + 4, static_cast<uint32_t>(n));
  const size_t covered = table_bytes - 8;
  PutU64(t + covered, Hash64(t, covered));
  out.uses_base = delta;
  return out;
}

}  // namespace

const char* CodecName(CodecId id) {
  switch (id) {
    case CodecId::kRaw: return "raw";
    case CodecId::kZstd: return "zstd";
    case CodecId::kByteGroupZstd: return "bytegroup-zstd";
    case CodecId::kXorDelta: return "xor-delta";
    case CodecId::kSegmented: return "segmented";
  }
  return "unknown";
}

bool ValidCodecId(uint8_t id) { return id <= static_cast<uint8_t>(CodecId::kSegmented); }

Encoded Encode(std::string_view raw, const EncodeOptions& opts, const std::string_view* base) {
  const bool tensor_like = opts.elem_width > 1 || base != nullptr;
  if (opts.segment && tensor_like && raw.size() >= 2 * kSegmentBytes &&
      raw.size() <= std::numeric_limits<uint32_t>::max()) {
    if (base != nullptr && base->size() != raw.size()) base = nullptr;
    return EncodeSegmented(raw, opts, base);
  }
  Encoded e = EncodeFlat(raw, opts, base);
  e.uses_base = e.codec == CodecId::kXorDelta;
  return e;
}

size_t SegmentTableBytes(size_t n_segments) { return 8 + kSegmentEntryBytes * n_segments + 8; }

Result<SegmentTable> ParseSegmentTable(std::string_view payload, size_t raw_len) {
  const uint8_t* p = Bytes(payload);
  if (payload.size() < 8) return Status::Corruption("segmented: truncated table");
  SegmentTable st;
  st.segment_bytes = GetU32(p);
  const uint32_t n = GetU32(p + 4);
  if (raw_len > std::numeric_limits<uint32_t>::max()) {
    return Status::Corruption("segmented: length too large");
  }
  if (st.segment_bytes == 0 || st.segment_bytes % kMaxElemWidth != 0 ||
      st.segment_bytes > kMaxSegmentBytes || n > kMaxSegments ||
      uint64_t{n} * st.segment_bytes < raw_len ||
      (n > 0 && uint64_t{n - 1} * st.segment_bytes >= raw_len) || (n == 0 && raw_len != 0)) {
    return Status::Corruption("segmented: segment count does not cover the chunk");
  }
  st.table_bytes = SegmentTableBytes(n);
  if (payload.size() < st.table_bytes) return Status::Corruption("segmented: truncated table");
  const size_t covered = st.table_bytes - 8;
  if (Hash64(p, covered) != GetU64(p + covered)) {
    return Status::Corruption("segmented: table checksum mismatch");
  }
  st.segments.resize(n);
  uint64_t at = st.table_bytes;
  for (uint32_t i = 0; i < n; ++i) {
    const uint8_t* entry = p + 8 + kSegmentEntryBytes * i;
    if (entry[0] > static_cast<uint8_t>(CodecId::kXorDelta)) {
      return Status::Corruption("segmented: bad segment codec");
    }
    SegmentTable::Segment& s = st.segments[i];
    s.codec = static_cast<CodecId>(entry[0]);
    s.payload_offset = at;
    s.payload_len = GetU32(entry + 1);
    s.hash = GetU64(entry + 5);
    s.raw_offset = uint64_t{i} * st.segment_bytes;
    s.raw_len = static_cast<uint32_t>(std::min<uint64_t>(st.segment_bytes, raw_len - s.raw_offset));
    st.uses_base |= s.codec == CodecId::kXorDelta;
    at += s.payload_len;
  }
  st.payload_bytes = at;
  return st;
}

Status DecodeSegment(const SegmentTable::Segment& s, std::string_view seg_payload,
                     std::string_view base_piece, char* out) {
  if (seg_payload.size() != s.payload_len) return Status::Corruption("segmented: short segment");
  LFS_RETURN_IF_ERROR(
      DecodeFlatInto(s.codec, seg_payload, s.raw_len, base_piece, reinterpret_cast<uint8_t*>(out)));
  if (Hash64(out, s.raw_len) != s.hash) {
    return Status::Corruption("segmented: segment does not match its checksum");
  }
  return Status::OK();
}

namespace {
// The checks a codec 0-3 payload passes before raw_len bytes are allocated
// for it (and again while decoding).
Status CheckFlat(CodecId codec, std::string_view payload, size_t raw_len, std::string_view base) {
  GroupedLayout g;
  switch (codec) {
    case CodecId::kRaw:
      if (payload.size() != raw_len) return Status::Corruption("raw: length mismatch");
      return Status::OK();
    case CodecId::kZstd:
      if (ZSTD_getFrameContentSize(payload.data(), payload.size()) != raw_len) {
        return Status::Corruption("zstd frame: content size does not match");
      }
      return Status::OK();
    case CodecId::kXorDelta:
      if (base.size() != raw_len) return Status::Corruption("xor-delta: base length mismatch");
      return ParseGrouped(payload, raw_len, &g);
    case CodecId::kByteGroupZstd: return ParseGrouped(payload, raw_len, &g);
    case CodecId::kSegmented: break;
  }
  return Status::Corruption("unknown codec id " + std::to_string(static_cast<int>(codec)));
}
}  // namespace

Status Decode(CodecId codec, std::string_view payload, size_t raw_len, int elem_width,
              std::string_view base, std::string* out) {
  // The byte-grouped payloads carry their own element width.
  (void)elem_width;
  switch (codec) {
    case CodecId::kSegmented: {
      LFS_ASSIGN_OR_RETURN(SegmentTable st, ParseSegmentTable(payload, raw_len));
      if (st.payload_bytes != payload.size()) {
        return Status::Corruption("segmented: segments do not fill the payload");
      }
      if (st.uses_base && base.size() != raw_len) {
        return Status::Corruption("segmented: base length mismatch");
      }
      for (const SegmentTable::Segment& s : st.segments) {
        LFS_RETURN_IF_ERROR(CheckFlat(s.codec, payload.substr(s.payload_offset, s.payload_len),
                                      s.raw_len,
                                      st.uses_base ? base.substr(s.raw_offset, s.raw_len) : ""));
      }
      out->resize(raw_len);
      // The chunk's digest, checked by the caller, covers every byte: the
      // per-segment checksums are for partial reads (and fsck), not needed here.
      for (const SegmentTable::Segment& s : st.segments) {
        std::string_view base_piece =
            st.uses_base ? base.substr(s.raw_offset, s.raw_len) : std::string_view();
        LFS_RETURN_IF_ERROR(DecodeFlatInto(s.codec, payload.substr(s.payload_offset, s.payload_len),
                                           s.raw_len, base_piece, Bytes(*out) + s.raw_offset));
      }
      return Status::OK();
    }
    default: break;
  }
  LFS_RETURN_IF_ERROR(CheckFlat(codec, payload, raw_len, base));
  out->resize(raw_len);
  return DecodeFlatInto(codec, payload, raw_len, base, Bytes(*out));
}

Status CheckSegments(std::string_view payload, std::string_view raw) {
  LFS_ASSIGN_OR_RETURN(SegmentTable st, ParseSegmentTable(payload, raw.size()));
  for (const SegmentTable::Segment& s : st.segments) {
    if (Hash64(raw.data() + s.raw_offset, s.raw_len) != s.hash) {
      return Status::Corruption("segment " + std::to_string(s.raw_offset / st.segment_bytes) +
                                " does not match its checksum");
    }
  }
  return Status::OK();
}

}  // namespace lfs::codec
