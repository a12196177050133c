#include "store/codec.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace lfs::codec {
namespace {

// The single-frame codecs 0-3; kSegmented, built from them, has its own tests.
EncodeOptions FlatOptions() {
  EncodeOptions o;
  o.segment = false;
  return o;
}

std::string RandomBytes(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string s(n, '\0');
  for (char& c : s) c = static_cast<char>(rng());
  return s;
}

std::vector<float> Weights(size_t count, uint64_t seed, float stddev = 0.02f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> dist(0.0f, stddev);
  std::vector<float> w(count);
  for (float& x : w) x = dist(rng);
  return w;
}

std::string AsFp32(const std::vector<float>& w) {
  return std::string(reinterpret_cast<const char*>(w.data()), w.size() * sizeof(float));
}

// bf16 = the upper 16 bits of the fp32, rounded to nearest even.
std::string AsBf16(const std::vector<float>& w) {
  std::string out(w.size() * 2, '\0');
  for (size_t i = 0; i < w.size(); ++i) {
    uint32_t bits;
    std::memcpy(&bits, &w[i], 4);
    uint16_t half = static_cast<uint16_t>((bits + 0x7fff + ((bits >> 16) & 1)) >> 16);
    std::memcpy(&out[2 * i], &half, 2);
  }
  return out;
}

std::string AsFp16(const std::vector<float>& w) {
  std::string out(w.size() * 2, '\0');
  for (size_t i = 0; i < w.size(); ++i) {
    _Float16 h = static_cast<_Float16>(w[i]);
    std::memcpy(&out[2 * i], &h, 2);
  }
  return out;
}

// A fine-tuned child: each weight moves by about 1e-3 of its magnitude.
std::vector<float> FineTune(const std::vector<float>& parent, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> dist(0.0f, 1e-3f);
  std::vector<float> child(parent);
  for (float& x : child) x += dist(rng) * std::fabs(x);
  return child;
}

std::string RoundTrip(std::string_view raw, int elem_width, const std::string_view* base,
                      CodecId* codec_out = nullptr, size_t* size_out = nullptr) {
  EncodeOptions opts = FlatOptions();
  opts.elem_width = elem_width;
  Encoded e = Encode(raw, opts, base);
  if (codec_out) *codec_out = e.codec;
  if (size_out) *size_out = e.payload.size();
  std::string out = "stale";
  Status st =
      Decode(e.codec, e.payload, raw.size(), elem_width, base ? *base : std::string_view(), &out);
  EXPECT_TRUE(st.ok()) << st.ToString() << " codec " << CodecName(e.codec);
  return out;
}

// Encodes with the byte-grouped codec forced, by calling Encode on data where
// it wins, and returns the payload; used by the adversarial tests.
Encoded GroupedPayload() {
  std::string raw = AsBf16(Weights(1 << 16, 7));
  EncodeOptions opts = FlatOptions();
  opts.elem_width = 2;
  Encoded e = Encode(raw, opts, nullptr);
  EXPECT_EQ(e.codec, CodecId::kByteGroupZstd);
  return e;
}

TEST(CodecTest, FrozenIdsAndNames) {
  EXPECT_EQ(static_cast<int>(CodecId::kRaw), 0);
  EXPECT_EQ(static_cast<int>(CodecId::kZstd), 1);
  EXPECT_EQ(static_cast<int>(CodecId::kByteGroupZstd), 2);
  EXPECT_EQ(static_cast<int>(CodecId::kXorDelta), 3);
  EXPECT_STREQ(CodecName(CodecId::kByteGroupZstd), "bytegroup-zstd");
}

TEST(CodecTest, RandomBytesStayRaw) {
  for (int width : {1, 2, 4, 8}) {
    std::string raw = RandomBytes(300000, width);
    CodecId codec;
    EXPECT_EQ(RoundTrip(raw, width, nullptr, &codec), raw);
    EXPECT_EQ(codec, CodecId::kRaw) << width;
  }
}

TEST(CodecTest, AllZeroCompresses) {
  for (int width : {1, 2, 4, 8}) {
    std::string raw(1 << 20, '\0');
    CodecId codec;
    size_t size;
    EXPECT_EQ(RoundTrip(raw, width, nullptr, &codec, &size), raw);
    EXPECT_NE(codec, CodecId::kRaw);
    EXPECT_LT(size, 1000u) << width;
  }
}

TEST(CodecTest, FloatWeightsUseByteGrouping) {
  std::vector<float> w = Weights(1 << 18, 1);
  struct Case {
    const char* name;
    std::string raw;
    int width;
    double min_ratio;  // loose: the bench measures the real figures
  };
  const Case cases[] = {
      {"fp32", AsFp32(w), 4, 1.1},
      {"bf16", AsBf16(w), 2, 1.3},
      {"fp16", AsFp16(w), 2, 1.05},
  };
  for (const Case& c : cases) {
    CodecId codec;
    size_t size;
    EXPECT_EQ(RoundTrip(c.raw, c.width, nullptr, &codec, &size), c.raw) << c.name;
    EXPECT_EQ(codec, CodecId::kByteGroupZstd) << c.name;
    EXPECT_GT(static_cast<double>(c.raw.size()) / size, c.min_ratio) << c.name;
  }
}

TEST(CodecTest, RepeatedRowsFallBackToPlainZstd) {
  // Byte planes hide repeats longer than an element; plain zstd finds them.
  const std::string row = AsFp32(Weights(256, 5));
  std::string raw;
  for (int i = 0; i < 1024; ++i) raw += row;
  CodecId codec;
  size_t size;
  EXPECT_EQ(RoundTrip(raw, 4, nullptr, &codec, &size), raw);
  EXPECT_EQ(codec, CodecId::kZstd);
  EXPECT_LT(size, raw.size() / 50);
}

TEST(CodecTest, LengthsNotAMultipleOfWidth) {
  std::string weights = AsFp32(Weights(5000, 2));
  for (int width : {2, 4, 8}) {
    for (size_t extra = 1; extra < static_cast<size_t>(width); ++extra) {
      std::string raw = weights + RandomBytes(extra, extra);
      EXPECT_EQ(RoundTrip(raw, width, nullptr), raw) << width << "+" << extra;
      std::string base = raw;
      base[raw.size() - 1] ^= 0x5a;
      std::string_view base_view = base;
      EXPECT_EQ(RoundTrip(raw, width, &base_view), raw) << width << "+" << extra;
    }
  }
}

TEST(CodecTest, TinyInputs) {
  for (int width : {1, 2, 4, 8}) {
    for (size_t len : {0, 1, 2, 3, 7, 9}) {
      std::string raw = RandomBytes(len, len);
      std::string base = RandomBytes(len, len + 100);
      std::string_view base_view = base;
      EXPECT_EQ(RoundTrip(raw, width, nullptr), raw) << width << "/" << len;
      EXPECT_EQ(RoundTrip(raw, width, &base_view), raw) << width << "/" << len;
    }
  }
  Encoded e = Encode("", FlatOptions(), nullptr);
  EXPECT_EQ(e.codec, CodecId::kRaw);
  EXPECT_TRUE(e.payload.empty());
}

TEST(CodecTest, EveryCodecDecodesItsOwnPayloads) {
  // Some codecs only win on particular data; decode each one's output directly.
  std::string raw = AsBf16(Weights(100000, 3)) + "odd";
  std::string base = AsBf16(FineTune(Weights(100000, 3), 4)) + "odd";
  std::string_view base_view = base;
  EncodeOptions opts = FlatOptions();
  opts.elem_width = 2;
  const std::string_view* bases[] = {nullptr, &base_view};
  for (const std::string_view* b : bases) {
    Encoded e = Encode(raw, opts, b);
    std::string out;
    ASSERT_TRUE(Decode(e.codec, e.payload, raw.size(), 2, base, &out).ok());
    EXPECT_EQ(out, raw);
  }
  std::string out;
  ASSERT_TRUE(Decode(CodecId::kRaw, raw, raw.size(), 1, {}, &out).ok());
  EXPECT_EQ(out, raw);
  EncodeOptions plain = FlatOptions();
  Encoded z = Encode(std::string(5000, 'a'), plain, nullptr);
  ASSERT_EQ(z.codec, CodecId::kZstd);
  ASSERT_TRUE(Decode(z.codec, z.payload, 5000, 1, {}, &out).ok());
  EXPECT_EQ(out, std::string(5000, 'a'));
}

TEST(CodecTest, DeltaOfFineTunedChildIsChosenAndExact) {
  std::vector<float> parent = Weights(1 << 18, 10);
  std::vector<float> child = FineTune(parent, 11);
  struct Case {
    const char* name;
    std::string parent, child;
    int width;
  };
  const Case cases[] = {
      {"fp32", AsFp32(parent), AsFp32(child), 4},
      {"bf16", AsBf16(parent), AsBf16(child), 2},
      {"fp16", AsFp16(parent), AsFp16(child), 2},
  };
  for (const Case& c : cases) {
    ASSERT_NE(c.parent, c.child) << c.name;
    EncodeOptions opts = FlatOptions();
    opts.elem_width = c.width;
    Encoded standalone = Encode(c.child, opts, nullptr);
    std::string_view base = c.parent;
    Encoded delta = Encode(c.child, opts, &base);
    EXPECT_EQ(delta.codec, CodecId::kXorDelta) << c.name;
    EXPECT_LT(delta.payload.size(), standalone.payload.size()) << c.name;
    std::string out;
    ASSERT_TRUE(Decode(delta.codec, delta.payload, c.child.size(), c.width, base, &out).ok());
    EXPECT_TRUE(out == c.child) << c.name;
  }
}

TEST(CodecTest, DeltaAgainstUnrelatedBaseIsNotKept) {
  std::string raw = AsBf16(Weights(1 << 16, 20));
  std::string unrelated = AsBf16(Weights(1 << 16, 21));
  std::string_view base = unrelated;
  EncodeOptions opts = FlatOptions();
  opts.elem_width = 2;
  EXPECT_EQ(Encode(raw, opts, &base).codec, CodecId::kByteGroupZstd);
  std::string short_base = unrelated.substr(1);
  std::string_view short_view = short_base;
  EXPECT_EQ(Encode(raw, opts, &short_view).codec, CodecId::kByteGroupZstd);
}

TEST(CodecTest, IdenticalChildDeltaIsTiny) {
  std::string raw = AsFp32(Weights(1 << 18, 30));
  std::string_view base = raw;
  EncodeOptions opts = FlatOptions();
  opts.elem_width = 4;
  Encoded e = Encode(raw, opts, &base);
  EXPECT_EQ(e.codec, CodecId::kXorDelta);
  EXPECT_LT(e.payload.size(), 200u);
}

void ExpectCorruption(CodecId codec, std::string_view payload, size_t raw_len,
                      std::string_view base = {}) {
  std::string out;
  Status st = Decode(codec, payload, raw_len, 2, base, &out);
  EXPECT_TRUE(st.IsCorruption()) << CodecName(codec) << " len " << payload.size() << ": "
                                 << st.ToString();
}

TEST(CodecTest, TruncatedPayloadsAreCorruption) {
  Encoded grouped = GroupedPayload();
  const size_t raw_len = size_t{1} << 17;
  Encoded zstd = Encode(std::string(raw_len, 'x'), FlatOptions(), nullptr);
  ASSERT_EQ(zstd.codec, CodecId::kZstd);
  for (const Encoded* e : {&grouped, &zstd}) {
    for (size_t len = 0; len < e->payload.size(); len += 1 + len / 8) {
      ExpectCorruption(e->codec, std::string_view(e->payload).substr(0, len), raw_len);
    }
    std::string longer = e->payload + '\0';
    ExpectCorruption(e->codec, longer, raw_len);
  }
}

TEST(CodecTest, WrongRawLengthIsCorruption) {
  Encoded grouped = GroupedPayload();
  const size_t raw_len = size_t{1} << 17;
  Encoded zstd = Encode(std::string(raw_len, 'x'), FlatOptions(), nullptr);
  for (const Encoded* e : {&grouped, &zstd}) {
    for (size_t len : {size_t{0}, raw_len - 2, raw_len - 1, raw_len + 1, raw_len + 2, raw_len * 2,
                       size_t{1} << 40}) {
      ExpectCorruption(e->codec, e->payload, len);
    }
  }
  ExpectCorruption(CodecId::kRaw, "abc", 4);
  std::string base(raw_len, '\0');
  ExpectCorruption(CodecId::kXorDelta, grouped.payload, raw_len, std::string_view(base).substr(1));
}

TEST(CodecTest, UnknownCodecIsCorruption) {
  ExpectCorruption(static_cast<CodecId>(5), "abc", 3);
  ExpectCorruption(static_cast<CodecId>(255), "", 0);
}

TEST(CodecTest, GarbageNeverCrashes) {
  Encoded grouped = GroupedPayload();
  const size_t raw_len = size_t{1} << 17;
  std::string base(raw_len, '\x11');
  std::mt19937_64 rng(99);
  std::string out;
  for (int iter = 0; iter < 3000; ++iter) {
    // Mostly flipped bytes of a valid payload (gets past the first checks),
    // sometimes pure noise.
    std::string payload;
    if (iter % 4 == 0) {
      payload = RandomBytes(rng() % 200, rng());
    } else {
      payload = grouped.payload;
      for (int flips = 1 + rng() % 4; flips > 0; --flips) {
        size_t at =
            iter % 3 == 0 ? rng() % std::min<size_t>(payload.size(), 64) : rng() % payload.size();
        payload[at] = static_cast<char>(rng());
      }
    }
    for (CodecId codec : {CodecId::kZstd, CodecId::kByteGroupZstd, CodecId::kXorDelta}) {
      Status st = Decode(codec, payload, raw_len, 2, base, &out);
      // A flip in a raw plane still decodes (to the wrong bytes: the chunk
      // address check catches that); anything else must be Corruption.
      if (st.ok()) {
        EXPECT_EQ(out.size(), raw_len);
      } else {
        EXPECT_TRUE(st.IsCorruption()) << st.ToString();
      }
    }
  }
}

TEST(CodecTest, HandCraftedHeadersAreChecked) {
  // width 2, 4 raw bytes: planes of 2 bytes each.
  auto header = [](uint8_t width, uint8_t mode0, uint32_t len0, uint8_t mode1, uint32_t len1) {
    std::string h(1, static_cast<char>(width));
    for (auto [mode, len] : {std::pair{mode0, len0}, std::pair{mode1, len1}}) {
      h += static_cast<char>(mode);
      for (int i = 0; i < 4; ++i) h += static_cast<char>(len >> (8 * i));
    }
    return h;
  };
  std::string out;
  std::string good = header(2, 0, 2, 0, 2) + "acbd";
  ASSERT_TRUE(Decode(CodecId::kByteGroupZstd, good, 4, 2, {}, &out).ok());
  EXPECT_EQ(out, "abcd");
  ExpectCorruption(CodecId::kByteGroupZstd, header(0, 0, 2, 0, 2) + "acbd", 4);
  ExpectCorruption(CodecId::kByteGroupZstd, header(9, 0, 2, 0, 2) + "acbd", 4);
  ExpectCorruption(CodecId::kByteGroupZstd, header(2, 2, 2, 0, 2) + "acbd", 4);
  ExpectCorruption(CodecId::kByteGroupZstd, header(2, 0, 3, 0, 1) + "acbd", 4);
  ExpectCorruption(CodecId::kByteGroupZstd, header(2, 0, 2, 0, 0xffffffff) + "acbd", 4);
  ExpectCorruption(CodecId::kByteGroupZstd, header(2, 1, 2, 0, 2) + "acbd", 4);
  ExpectCorruption(CodecId::kByteGroupZstd, header(2, 0, 2, 0, 2) + "acbde", 4);
}

// --- kSegmented

// Decodes every segment on its own (as a partial read does) and checks it.
void ExpectSegmentsDecode(const Encoded& e, std::string_view raw, std::string_view base) {
  auto st = ParseSegmentTable(e.payload, raw.size());
  ASSERT_TRUE(st.ok()) << st.status().ToString();
  EXPECT_EQ(st->payload_bytes, e.payload.size());
  EXPECT_EQ(st->segment_bytes, kSegmentBytes);
  EXPECT_EQ(st->uses_base, e.uses_base);
  uint64_t covered = 0;
  for (const auto& s : st->segments) {
    std::string out(s.raw_len, '\0');
    std::string_view base_piece = e.uses_base ? base.substr(s.raw_offset, s.raw_len) : "";
    Status ds =
        DecodeSegment(s, std::string_view(e.payload).substr(s.payload_offset, s.payload_len),
                      base_piece, out.data());
    ASSERT_TRUE(ds.ok()) << ds.ToString();
    EXPECT_EQ(out, raw.substr(s.raw_offset, s.raw_len));
    EXPECT_EQ(s.raw_offset, covered);
    covered += s.raw_len;
  }
  EXPECT_EQ(covered, raw.size());
  EXPECT_TRUE(CheckSegments(e.payload, raw).ok());
}

TEST(CodecTest, SegmentedChunksDecodeWholeAndSegmentBySegment) {
  // 1 MiB of fp32 weights plus a partial last segment and a tail of 3 bytes.
  std::string raw = AsFp32(Weights((1 << 18) + 1000, 21)) + "xyz";
  EncodeOptions opts;
  opts.elem_width = 4;
  Encoded e = Encode(raw, opts, nullptr);
  ASSERT_EQ(e.codec, CodecId::kSegmented);
  EXPECT_FALSE(e.uses_base);
  std::string out;
  ASSERT_TRUE(Decode(e.codec, e.payload, raw.size(), 4, {}, &out).ok());
  EXPECT_EQ(out, raw);
  ExpectSegmentsDecode(e, raw, {});
  // Segments cost little ratio: within 1% of the single-frame encoding.
  EncodeOptions flat_opts = FlatOptions();
  flat_opts.elem_width = 4;
  Encoded flat = Encode(raw, flat_opts, nullptr);
  EXPECT_LT(e.payload.size(), flat.payload.size() * 101 / 100)
      << e.payload.size() << " vs " << flat.payload.size();
  // Below two segments, and for byte data without a base, chunks stay single-frame.
  EXPECT_NE(Encode(raw.substr(0, kSegmentBytes + 100), opts, nullptr).codec, CodecId::kSegmented);
  opts.elem_width = 1;
  EXPECT_NE(Encode(raw, opts, nullptr).codec, CodecId::kSegmented);
}

TEST(CodecTest, SegmentedDeltaDecodesAgainstTheSameRangeOfItsBase) {
  std::vector<float> parent = Weights(1 << 18, 22);
  std::string base = AsFp32(parent);
  std::string raw = AsFp32(FineTune(parent, 23));
  // The third segment is unrelated to the base: it is coded standalone.
  std::string noise = AsFp32(Weights(kSegmentBytes / 4, 24, 1.0f));
  raw.replace(2 * kSegmentBytes, kSegmentBytes, noise);
  EncodeOptions opts;
  opts.elem_width = 4;
  std::string_view base_view = base;
  Encoded e = Encode(raw, opts, &base_view);
  ASSERT_EQ(e.codec, CodecId::kSegmented);
  EXPECT_TRUE(e.uses_base);
  std::string out;
  ASSERT_TRUE(Decode(e.codec, e.payload, raw.size(), 4, base, &out).ok());
  EXPECT_EQ(out, raw);
  ExpectSegmentsDecode(e, raw, base);
  auto st = ParseSegmentTable(e.payload, raw.size());
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->segments[0].codec, CodecId::kXorDelta);
  EXPECT_NE(st->segments[2].codec, CodecId::kXorDelta);
  // A delta without its base is Corruption, not garbage.
  ExpectCorruption(e.codec, e.payload, raw.size());
}

TEST(CodecTest, SegmentedDamageIsCorruptionNeverWrongBytes) {
  std::string raw = AsFp32(Weights(1 << 18, 25));
  EncodeOptions opts;
  opts.elem_width = 4;
  Encoded e = Encode(raw, opts, nullptr);
  ASSERT_EQ(e.codec, CodecId::kSegmented);
  auto st = ParseSegmentTable(e.payload, raw.size());
  ASSERT_TRUE(st.ok());
  // Any byte of the table: its checksum catches it.
  for (size_t at = 0; at < st->table_bytes; at += 7) {
    std::string bad = e.payload;
    bad[at] ^= 0x10;
    EXPECT_FALSE(ParseSegmentTable(bad, raw.size()).ok()) << "table byte " << at;
  }
  // Any byte of a segment: the segment's own checksum (or its codec) catches it.
  std::mt19937_64 rng(26);
  for (int trial = 0; trial < 200; trial++) {
    std::string bad = e.payload;
    size_t at = st->table_bytes + rng() % (bad.size() - st->table_bytes);
    bad[at] ^= static_cast<char>(1 << (rng() % 8));
    for (const auto& s : st->segments) {
      std::string out(s.raw_len, '\0');
      Status ds = DecodeSegment(s, std::string_view(bad).substr(s.payload_offset, s.payload_len),
                                {}, out.data());
      if (ds.ok()) {
        EXPECT_EQ(out, raw.substr(s.raw_offset, s.raw_len)) << "byte " << at;
      }
    }
  }
  // Truncated tables and segment counts that do not cover the chunk.
  for (size_t len : {size_t{0}, size_t{7}, st->table_bytes - 1}) {
    EXPECT_FALSE(ParseSegmentTable(std::string_view(e.payload).substr(0, len), raw.size()).ok());
  }
  EXPECT_FALSE(ParseSegmentTable(e.payload, raw.size() + kSegmentBytes).ok());
  EXPECT_FALSE(ParseSegmentTable(e.payload, raw.size() - kSegmentBytes).ok());
  ExpectCorruption(e.codec, std::string_view(e.payload).substr(0, e.payload.size() - 1),
                   raw.size());
  ExpectCorruption(e.codec, e.payload + "x", raw.size());
  // CheckSegments names bytes that do not match the table (fsck).
  std::string other = raw;
  other[5 * kSegmentBytes + 3] ^= 1;
  Status cs = CheckSegments(e.payload, other);
  EXPECT_TRUE(cs.IsCorruption());
  EXPECT_NE(cs.ToString().find("segment 5"), std::string::npos) << cs.ToString();
}

TEST(CodecTest, SegmentedGarbageNeverCrashes) {
  std::string raw = AsFp32(Weights(1 << 18, 27));
  std::string base = AsFp32(FineTune(Weights(1 << 18, 27), 28));
  EncodeOptions opts;
  opts.elem_width = 4;
  std::string_view base_view = base;
  Encoded e = Encode(raw, opts, &base_view);
  std::mt19937_64 rng(29);
  for (int trial = 0; trial < 300; trial++) {
    std::string bad = e.payload;
    for (int k = 0; k < 1 + trial % 4; k++) bad[rng() % bad.size()] = static_cast<char>(rng());
    std::string out;
    Status s = Decode(CodecId::kSegmented, bad, raw.size(), 4, base, &out);
    if (s.ok()) {
      EXPECT_EQ(out.size(), raw.size());
    }
  }
}

}  // namespace
}  // namespace lfs::codec
