#include "store/chunker.h"

#include <algorithm>
#include <array>
#include <bit>
#include <cassert>

namespace lfs {

namespace {

// The gear table decides every cut point, so changing it changes how files
// chunk and loses dedup against everything already stored: it is part of the
// on-disk format (store/FORMAT.md). gear[i] is the i-th output of SplitMix64
// (Steele, Lea, Flood 2014; the generator of java.util.SplittableRandom)
// seeded with kGearSeed, computed at compile time.
constexpr uint64_t kGearSeed = 0x6c696e6561676566;  // "lineagef"

constexpr uint64_t SplitMix64(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9;
  z = (z ^ (z >> 27)) * 0x94d049bb133111eb;
  return z ^ (z >> 31);
}

constexpr std::array<uint64_t, 256> MakeGearTable() {
  std::array<uint64_t, 256> table{};
  uint64_t state = kGearSeed;
  for (uint64_t& entry : table) entry = SplitMix64(state);
  return table;
}

constexpr std::array<uint64_t, 256> kGear = MakeGearTable();

// The gear hash shifts left once per byte, so a byte's influence leaves the
// hash after 64 bytes: the hash at position i depends on data[i-63..i] only.
constexpr size_t kGearWindow = 64;

// Normalised chunking, level 2 (FastCDC, Xia et al. 2016): before avg_size
// the mask has 2 more bits than log2(avg_size) (cuts 4× rarer), after it 2
// fewer (4× likelier), which narrows the chunk size distribution around avg.
constexpr int kNormalisationBits = 2;

// Masks use the top bits of the hash: bit b of a gear hash depends on the last
// b + 1 bytes only, so the high bits are the ones that see the whole window.
constexpr uint64_t TopBitsMask(int bits) { return bits <= 0 ? 0 : ~uint64_t{0} << (64 - bits); }

CdcParams Sanitise(CdcParams p) {
  // avg must be a power of two (the masks are log2(avg) bits); round down.
  assert(std::has_single_bit(p.avg_size));
  p.avg_size = std::bit_floor(std::max<size_t>(p.avg_size, 1));
  p.min_size = std::min(p.min_size, p.avg_size);
  p.max_size = std::max(p.max_size, p.avg_size);
  return p;
}

}  // namespace

CdcChunker::CdcChunker(CdcParams p) : p_(Sanitise(p)) {
  const int avg_bits = std::countr_zero(p_.avg_size);
  mask_small_ = TopBitsMask(avg_bits + kNormalisationBits);
  mask_large_ = TopBitsMask(avg_bits - kNormalisationBits);
}

size_t CdcChunker::NextCut(const uint8_t* data, size_t len, bool at_eof) const {
  if (len <= p_.min_size) return at_eof ? len : 0;
  const size_t end = std::min(len, p_.max_size);
  const size_t normal_end = std::min(end, p_.avg_size);

  // Warm the hash up on the window before min_size, so that whether position
  // i is a cut depends only on the bytes just before it, never on where the
  // chunk started: that keeps cut points stable when earlier bytes shift.
  size_t i = p_.min_size > kGearWindow ? p_.min_size - kGearWindow : 0;
  uint64_t hash = 0;
  for (; i < p_.min_size; ++i) hash = (hash << 1) + kGear[data[i]];

  // A cut "at i" ends the chunk after data[i]: every chunk is > min_size.
  for (; i < normal_end; ++i) {
    hash = (hash << 1) + kGear[data[i]];
    if ((hash & mask_small_) == 0) return i + 1;
  }
  for (; i < end; ++i) {
    hash = (hash << 1) + kGear[data[i]];
    if ((hash & mask_large_) == 0) return i + 1;
  }
  if (end == p_.max_size) return p_.max_size;
  return at_eof ? len : 0;
}

}  // namespace lfs
