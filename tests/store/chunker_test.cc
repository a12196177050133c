#include "store/chunker.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <set>
#include <string>
#include <vector>

namespace lfs {
namespace {

std::vector<uint8_t> RandomBytes(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<uint8_t> v(n);
  for (uint8_t& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

// Chunk lengths of the whole buffer, feeding it to the chunker in pieces of
// at most `window` bytes, as a streaming reader would.
std::vector<size_t> Cut(const CdcChunker& chunker, const std::vector<uint8_t>& data,
                        size_t window = SIZE_MAX) {
  std::vector<size_t> lengths;
  size_t pos = 0;
  size_t available = std::min(window, data.size());
  while (pos < data.size()) {
    const bool at_eof = available == data.size();
    size_t cut = chunker.NextCut(data.data() + pos, available - pos, at_eof);
    if (cut == 0) {
      EXPECT_FALSE(at_eof);
      available = std::min(data.size(), available + window);
      continue;
    }
    EXPECT_LE(cut, available - pos);
    lengths.push_back(cut);
    pos += cut;
  }
  return lengths;
}

// Chunk contents as (offset-independent) strings, for comparing two buffers.
std::multiset<std::string> Chunks(const std::vector<uint8_t>& data,
                                  const std::vector<size_t>& lengths) {
  std::multiset<std::string> chunks;
  size_t pos = 0;
  for (size_t len : lengths) {
    chunks.emplace(reinterpret_cast<const char*>(data.data() + pos), len);
    pos += len;
  }
  return chunks;
}

TEST(ChunkerTest, RespectsMinAndMax) {
  CdcParams p{.min_size = 2048, .avg_size = 8192, .max_size = 32768};
  CdcChunker chunker(p);
  std::vector<uint8_t> data = RandomBytes(4 << 20, 1);
  std::vector<size_t> lengths = Cut(chunker, data);
  size_t total = 0;
  for (size_t i = 0; i < lengths.size(); ++i) {
    total += lengths[i];
    EXPECT_LE(lengths[i], p.max_size);
    if (i + 1 < lengths.size()) {
      EXPECT_GE(lengths[i], p.min_size);
    }
  }
  EXPECT_EQ(total, data.size());
}

TEST(ChunkerTest, LowEntropyDataIsCutAtMax) {
  CdcParams p{.min_size = 1024, .avg_size = 4096, .max_size = 16384};
  std::vector<uint8_t> zeros(100000, 0);
  std::vector<size_t> lengths = Cut(CdcChunker(p), zeros);
  ASSERT_EQ(lengths.size(), 7u);
  for (size_t i = 0; i + 1 < lengths.size(); ++i) EXPECT_EQ(lengths[i], p.max_size);
  EXPECT_EQ(lengths.back(), 100000 - 6 * p.max_size);
}

TEST(ChunkerTest, ShortInputs) {
  CdcChunker chunker;
  std::vector<uint8_t> data = RandomBytes(chunker.params().min_size + 10, 2);
  EXPECT_EQ(chunker.NextCut(data.data(), 0, true), 0u);
  EXPECT_EQ(chunker.NextCut(data.data(), 100, true), 100u);
  EXPECT_EQ(chunker.NextCut(data.data(), 100, false), 0u);
  EXPECT_EQ(chunker.NextCut(data.data(), data.size(), true), data.size());
}

TEST(ChunkerTest, DeterministicAndIndependentOfReadSize) {
  CdcChunker chunker;
  std::vector<uint8_t> data = RandomBytes(3 << 20, 3);
  std::vector<size_t> whole = Cut(chunker, data);
  EXPECT_EQ(Cut(chunker, data), whole);
  EXPECT_EQ(Cut(CdcChunker(), data), whole);
  for (size_t window : {size_t{4096}, size_t{65536 + 17}, size_t{1} << 20}) {
    EXPECT_EQ(Cut(chunker, data, window), whole) << window;
  }
}

TEST(ChunkerTest, CutPointsAreFrozen) {
  // The gear table and masks are part of the on-disk format: cut points
  // changing would silently lose dedup against stored data.
  std::vector<uint8_t> data = RandomBytes(1 << 20, 2024);
  std::vector<size_t> lengths = Cut(CdcChunker(), data);
  std::vector<size_t> first(lengths.begin(), lengths.begin() + 6);
  EXPECT_EQ(first, (std::vector<size_t>{66093, 88725, 91835, 54186, 95971, 82208}));
}

TEST(ChunkerTest, AverageIsNearAvgSize) {
  for (size_t avg : {size_t{8} << 10, size_t{64} << 10}) {
    CdcParams p{.min_size = avg / 4, .avg_size = avg, .max_size = avg * 4};
    std::vector<uint8_t> data = RandomBytes(16 << 20, avg);
    std::vector<size_t> lengths = Cut(CdcChunker(p), data);
    const double mean = static_cast<double>(data.size()) / lengths.size();
    EXPECT_GT(mean, 0.75 * avg) << avg;
    EXPECT_LT(mean, 1.5 * avg) << avg;
  }
}

TEST(ChunkerTest, InsertionAtStartOnlyChangesTheFirstChunks) {
  CdcChunker chunker;
  std::vector<uint8_t> data = RandomBytes(4 << 20, 4);
  std::vector<uint8_t> shifted = RandomBytes(100, 5);
  shifted.insert(shifted.end(), data.begin(), data.end());

  std::vector<size_t> before = Cut(chunker, data);
  std::vector<size_t> after = Cut(chunker, shifted);
  std::multiset<std::string> old_chunks = Chunks(data, before);
  size_t shared = 0;
  for (const std::string& c : Chunks(shifted, after)) shared += old_chunks.count(c) > 0;
  // The cut points resynchronise within a chunk or two.
  RecordProperty("chunks_shared", static_cast<int>(shared));
  RecordProperty("chunks_after_insert", static_cast<int>(after.size()));
  EXPECT_GE(shared + 2, after.size()) << shared << " of " << after.size();
  EXPECT_GE(shared + 2, before.size()) << shared << " of " << before.size();
}

TEST(ChunkerTest, NonPowerOfTwoAverageIsRoundedDown) {
#ifdef NDEBUG
  CdcChunker chunker(CdcParams{.min_size = 1000, .avg_size = 5000, .max_size = 20000});
  EXPECT_EQ(chunker.params().avg_size, 4096u);
#else
  GTEST_SKIP() << "asserts in debug builds";
#endif
}

}  // namespace
}  // namespace lfs
