#include "store/codec.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace lfs::codec {
namespace {

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
  EncodeOptions opts;
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
  EncodeOptions opts;
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
  Encoded e = Encode("", EncodeOptions{}, nullptr);
  EXPECT_EQ(e.codec, CodecId::kRaw);
  EXPECT_TRUE(e.payload.empty());
}

TEST(CodecTest, EveryCodecDecodesItsOwnPayloads) {
  // Some codecs only win on particular data; decode each one's output directly.
  std::string raw = AsBf16(Weights(100000, 3)) + "odd";
  std::string base = AsBf16(FineTune(Weights(100000, 3), 4)) + "odd";
  std::string_view base_view = base;
  EncodeOptions opts;
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
  EncodeOptions plain;
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
    EncodeOptions opts;
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
  EncodeOptions opts;
  opts.elem_width = 2;
  EXPECT_EQ(Encode(raw, opts, &base).codec, CodecId::kByteGroupZstd);
  std::string short_base = unrelated.substr(1);
  std::string_view short_view = short_base;
  EXPECT_EQ(Encode(raw, opts, &short_view).codec, CodecId::kByteGroupZstd);
}

TEST(CodecTest, IdenticalChildDeltaIsTiny) {
  std::string raw = AsFp32(Weights(1 << 18, 30));
  std::string_view base = raw;
  EncodeOptions opts;
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
  Encoded zstd = Encode(std::string(raw_len, 'x'), EncodeOptions{}, nullptr);
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
  Encoded zstd = Encode(std::string(raw_len, 'x'), EncodeOptions{}, nullptr);
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
  ExpectCorruption(static_cast<CodecId>(4), "abc", 3);
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

}  // namespace
}  // namespace lfs::codec
