#include <gtest/gtest.h>

#include <atomic>
#include <fstream>
#include <optional>
#include <random>
#include <thread>

#include "store/fsck.h"
#include "store/objects.h"
#include "store/pack.h"
#include "store/store.h"
#include "tests/testing/temp_dir.h"

namespace lfs {
namespace {

std::string RandomBytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng());
  return s;
}

std::string WeightLike(size_t n_floats, uint32_t seed, float scale = 0.02f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, scale);
  std::string s(n_floats * 4, '\0');
  for (size_t i = 0; i < n_floats; i++) {
    float f = nd(rng);
    std::memcpy(&s[i * 4], &f, 4);
  }
  return s;
}

void FlipByte(const std::string& path, uint64_t at, char mask = 0x04) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(static_cast<std::streamoff>(at));
  char c;
  f.read(&c, 1);
  c ^= mask;
  f.seekp(static_cast<std::streamoff>(at));
  f.write(&c, 1);
}

// The piece covers [off, off+n) and holds want's bytes there.
void ExpectPieceHolds(const ChunkPiece& piece, std::string_view want, uint64_t off, size_t n) {
  ASSERT_LE(piece.offset, off);
  ASSERT_GE(piece.offset + piece.bytes->size(), off + n);
  EXPECT_EQ(std::string_view(*piece.bytes).substr(off - piece.offset, n), want.substr(off, n));
}

// These tests hold chunk references directly, not through tensor/file records.
const FsckOptions kChunkLevel{.verify_refcounts = false};

class ChunkStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(Store::Create(dir_.path(), opts_).ok());
    Reopen();
  }
  void Reopen() {
    store_.reset();
    auto s = Store::Open(dir_.path(), opts_);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    store_ = std::move(s).value();
  }
  // Stores one chunk in a batch of its own.
  Digest PutCommitted(const std::string& data, int width, std::optional<Digest> base = {}) {
    auto b = store_->BeginWrite();
    EXPECT_TRUE(b.ok());
    auto d = (*b)->PutChunk(data, width, base);
    EXPECT_TRUE(d.ok()) << d.status().ToString();
    EXPECT_TRUE((*b)->Commit().ok());
    return d.ok() ? *d : Digest();
  }
  // A committed kSegmented chunk with its index entry, frame and table.
  struct Segmented {
    Digest d;
    ChunkEntry entry;
    std::string frame;
    codec::SegmentTable table;
  };
  void PutSegmented(const std::string& data, Segmented* out) {
    out->d = PutCommitted(data, 4);
    auto e = store_->FindChunk(out->d);
    ASSERT_TRUE(e.ok() && e->has_value());
    out->entry = **e;
    ASSERT_EQ(out->entry.codec, codec::CodecId::kSegmented);
    auto frame = store_->ReadFrame(out->entry);
    ASSERT_TRUE(frame.ok());
    out->frame = std::move(frame).value();
    const size_t payload_len = out->frame.size() - kFrameHeaderSize - kFrameTrailerSize;
    auto table = codec::ParseSegmentTable(
        std::string_view(out->frame).substr(kFrameHeaderSize, payload_len), data.size());
    ASSERT_TRUE(table.ok());
    out->table = std::move(table).value();
  }
  testing::TempDir dir_;
  StoreOptions opts_;
  std::unique_ptr<Store> store_;
};

TEST_F(ChunkStoreTest, PutGetRoundTrip) {
  std::string data = RandomBytes(100000, 1);
  auto b = store_->BeginWrite();
  ASSERT_TRUE(b.ok());
  auto d = (*b)->PutChunk(data, 1);
  ASSERT_TRUE(d.ok());
  ASSERT_TRUE((*b)->Commit().ok());
  EXPECT_EQ(*d, Digest::Of(data));
  Reopen();
  auto got = store_->ReadChunk(*d);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(**got, data);
}

TEST_F(ChunkStoreTest, DedupCountsReferences) {
  std::string data = WeightLike(50000, 2);
  for (int i = 0; i < 3; i++) {
    auto b = store_->BeginWrite();
    ASSERT_TRUE(b.ok());
    ASSERT_TRUE((*b)->PutChunk(data, 4).ok());
    ASSERT_TRUE((*b)->Commit().ok());
  }
  auto e = store_->FindChunk(Digest::Of(data));
  ASSERT_TRUE(e.ok() && e->has_value());
  EXPECT_EQ((*e)->refs, 3u);
  uint64_t packs = 0, live = 0;
  ASSERT_TRUE(store_->PackUsage(&packs, &live).ok());
  EXPECT_LT(packs, data.size() + 1024);  // stored once, compressed
}

TEST_F(ChunkStoreTest, UncommittedBatchLeavesNoTrace) {
  std::string data = RandomBytes(5000, 3);
  {
    auto b = store_->BeginWrite();
    ASSERT_TRUE(b.ok());
    ASSERT_TRUE((*b)->PutChunk(data, 1).ok());
  }  // destroyed without commit
  auto e = store_->FindChunk(Digest::Of(data));
  ASSERT_TRUE(e.ok());
  EXPECT_FALSE(e->has_value());
  FsckReport rep;
  ASSERT_TRUE(Fsck(*store_, &rep, kChunkLevel).ok());
  EXPECT_TRUE(rep.ok());
}

TEST_F(ChunkStoreTest, DeltaAgainstParentIsBitExactAndBounded) {
  std::string parent = WeightLike(262144, 4);
  // A fine-tuned child: small updates to every weight.
  std::string child = parent;
  std::mt19937 rng(5);
  std::normal_distribution<float> nd(0.0f, 1e-4f);
  for (size_t i = 0; i < child.size() / 4; i++) {
    float f;
    std::memcpy(&f, &child[i * 4], 4);
    f += nd(rng) * std::abs(f);
    std::memcpy(&child[i * 4], &f, 4);
  }
  Digest pd, cd;
  {
    auto b = store_->BeginWrite();
    ASSERT_TRUE(b.ok());
    pd = *(*b)->PutChunk(parent, 4);
    ASSERT_TRUE((*b)->Commit().ok());
  }
  {
    auto b = store_->BeginWrite();
    ASSERT_TRUE(b.ok());
    cd = *(*b)->PutChunk(child, 4, pd);
    ASSERT_TRUE((*b)->Commit().ok());
  }
  auto e = store_->FindChunk(cd);
  ASSERT_TRUE(e.ok() && e->has_value());
  EXPECT_EQ((*e)->codec, codec::CodecId::kSegmented);  // 1 MiB: segments, XOR deltas
  EXPECT_EQ((*e)->base, pd);
  EXPECT_EQ((*e)->depth, 1);
  store_->DropCache();
  auto got = store_->ReadChunk(cd);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(**got, child);
  // The parent now has two references: its own and the delta child's.
  EXPECT_EQ((*store_->FindChunk(pd))->refs, 2u);

  // A chain of descendants never exceeds the depth bound.
  Digest prev = cd;
  std::string cur = child;
  for (int gen = 0; gen < 8; gen++) {
    for (size_t i = 0; i < cur.size() / 4; i += 7) cur[i * 4] ^= 1;
    auto b = store_->BeginWrite();
    ASSERT_TRUE(b.ok());
    auto d = (*b)->PutChunk(cur, 4, prev);
    ASSERT_TRUE(d.ok());
    ASSERT_TRUE((*b)->Commit().ok());
    auto ce = store_->FindChunk(*d);
    EXPECT_LE((*ce)->depth, opts_.max_delta_depth);
    store_->DropCache();
    EXPECT_EQ(**store_->ReadChunk(*d), cur);
    prev = *d;
  }
}

// Readers that miss on the same chunk at once (kernel readahead requests and
// the prefetcher) share one read and decode instead of each doing it.
TEST_F(ChunkStoreTest, ConcurrentMissesOnOneChunkDecodeItOnce) {
  std::string parent = WeightLike(262144, 11);  // 1 MiB: a decode takes a while
  std::string child = parent;
  for (size_t i = 0; i < child.size() / 4; i += 3) child[i * 4] ^= 1;
  Digest pd, cd;
  {
    auto b = store_->BeginWrite();
    ASSERT_TRUE(b.ok());
    pd = *(*b)->PutChunk(parent, 4);
    ASSERT_TRUE((*b)->Commit().ok());
  }
  {
    auto b = store_->BeginWrite();
    ASSERT_TRUE(b.ok());
    cd = *(*b)->PutChunk(child, 4, pd);
    ASSERT_TRUE((*b)->Commit().ok());
  }
  ASSERT_EQ((*store_->FindChunk(cd))->base, pd);
  for (int round = 0; round < 5; round++) {
    store_->DropCache();
    uint64_t before = store_->cache_stats().loads;
    constexpr int kThreads = 8;
    std::atomic<int> ready{0};
    std::atomic<int> bad{0};
    std::vector<std::thread> ts;
    for (int i = 0; i < kThreads; i++) {
      ts.emplace_back([&] {
        ready++;
        while (ready.load() < kThreads) std::this_thread::yield();
        auto got = store_->ReadChunk(cd);
        if (!got.ok() || **got != child) bad++;
      });
    }
    for (auto& t : ts) t.join();
    EXPECT_EQ(bad.load(), 0);
    EXPECT_EQ(store_->cache_stats().loads - before, 2u) << "round " << round;  // child + base
  }
}

// Decoding runs on a few decoder threads, which never wait for another load:
// many readers asking for chains and their bases at once (more readers than
// decoders, bases in flight for someone else) all get their bytes, and the
// cache never holds more than its capacity.
TEST_F(ChunkStoreTest, ManyReadersOfDeltaChainsThroughFewDecoders) {
  opts_.cache_bytes = 5 << 20;  // one 256 KiB chunk per shard: evictions all the time
  Reopen();
  constexpr int kChains = 6, kDepth = 3;
  std::vector<std::string> raw;
  std::vector<Digest> ds;
  for (int c = 0; c < kChains; c++) {
    std::string bytes = WeightLike(65536, 100 + c);  // 256 KiB
    std::optional<Digest> base;
    for (int k = 0; k <= kDepth; k++) {
      auto b = store_->BeginWrite();
      ASSERT_TRUE(b.ok());
      auto d = (*b)->PutChunk(bytes, 4, base);
      ASSERT_TRUE(d.ok());
      ASSERT_TRUE((*b)->Commit().ok());
      raw.push_back(bytes);
      ds.push_back(*d);
      base = *d;
      for (size_t i = 0; i < bytes.size() / 4; i += 5) bytes[i * 4] ^= 1;
    }
  }
  ASSERT_FALSE((*store_->FindChunk(ds[kDepth]))->base.empty());
  for (int round = 0; round < 4; round++) {
    store_->DropCache();
    constexpr int kThreads = 16;
    std::atomic<int> ready{0}, bad{0};
    std::atomic<uint64_t> max_cached{0};
    std::vector<std::thread> ts;
    for (int t = 0; t < kThreads; t++) {
      ts.emplace_back([&, t] {
        std::mt19937 rng(t * 7 + round);
        ready++;
        while (ready.load() < kThreads) std::this_thread::yield();
        for (int i = 0; i < 40; i++) {
          size_t k = rng() % ds.size();
          if (i % 3 == 0) store_->Prefetch(ds[(k + 1) % ds.size()]);
          auto got = store_->ReadChunk(ds[k]);
          if (!got.ok() || **got != raw[k]) bad++;
          uint64_t b = store_->cache_stats().bytes, m = max_cached.load();
          while (b > m && !max_cached.compare_exchange_weak(m, b)) {
          }
        }
      });
    }
    for (auto& t : ts) t.join();
    EXPECT_EQ(bad.load(), 0) << "round " << round;
    EXPECT_LE(max_cached.load(), opts_.cache_bytes);
  }
}

// A reader that catches up with the prefetcher waits for its decode rather
// than decoding the chunk a second time on another decoder thread.
TEST_F(ChunkStoreTest, ReadOfAChunkBeingPrefetchedDecodesItOnce) {
  std::vector<Digest> ds;
  std::vector<std::string> raw;
  {
    auto b = store_->BeginWrite();
    ASSERT_TRUE(b.ok());
    for (int i = 0; i < 8; i++) {
      raw.push_back(WeightLike(262144, 500 + i));  // 1 MiB: a decode takes a while
      ds.push_back(*(*b)->PutChunk(raw.back(), 4));
    }
    ASSERT_TRUE((*b)->Commit().ok());
  }
  for (int round = 0; round < 5; round++) {
    store_->DropCache();
    uint64_t before = store_->cache_stats().loads;
    for (const auto& d : ds) store_->Prefetch(d);
    for (size_t i = 0; i < ds.size(); i++) {
      auto got = store_->ReadChunk(ds[i]);
      ASSERT_TRUE(got.ok());
      EXPECT_EQ(**got, raw[i]);
    }
    EXPECT_EQ(store_->cache_stats().loads - before, ds.size()) << "round " << round;
  }
}

// Prefetches still queued when the store closes are dropped, not run on a
// store that is gone (ASan would see the use after free).
TEST_F(ChunkStoreTest, ClosingWithQueuedPrefetchesIsClean) {
  std::vector<Digest> ds;
  {
    auto b = store_->BeginWrite();
    ASSERT_TRUE(b.ok());
    for (int i = 0; i < 24; i++) ds.push_back(*(*b)->PutChunk(WeightLike(65536, 300 + i), 4));
    ASSERT_TRUE((*b)->Commit().ok());
  }
  for (int round = 0; round < 3; round++) {
    Reopen();
    for (const auto& d : ds) store_->Prefetch(d);
    store_.reset();
  }
  Reopen();
  auto got = store_->ReadChunk(ds[5]);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(**got, WeightLike(65536, 305));
}

TEST_F(ChunkStoreTest, CorruptPackByteIsDetected) {
  std::string data = WeightLike(100000, 6);
  Digest d;
  {
    auto b = store_->BeginWrite();
    ASSERT_TRUE(b.ok());
    d = *(*b)->PutChunk(data, 4);
    ASSERT_TRUE((*b)->Commit().ok());
  }
  auto e = *store_->FindChunk(d);
  FlipByte(store_->PackPath(e->pack_id), e->offset + e->frame_len / 2, 0x40);
  Reopen();
  auto got = store_->ReadChunk(d);
  ASSERT_FALSE(got.ok());
  EXPECT_TRUE(got.status().IsCorruption()) << got.status().ToString();
  // The read path skips the frame checksum while all is well, but names it
  // once the decoded bytes do not verify.
  EXPECT_NE(got.status().ToString().find("checksum"), std::string::npos) << got.status().ToString();
  FsckReport rep;
  ASSERT_TRUE(Fsck(*store_, &rep, kChunkLevel).ok());
  EXPECT_FALSE(rep.ok());
  EXPECT_EQ(rep.bad_chunks.count(d), 1u);
}

// Reads of a few KiB from chunks that are not cached decode only the segments
// they touch, down a whole delta chain, and cache nothing; big reads, and
// reads of cached chunks, get the whole chunk.
TEST_F(ChunkStoreTest, RangeReadsDecodeOnlyTheirSegments) {
  constexpr int kDepth = 3;
  std::vector<std::string> raw;
  std::vector<Digest> ds;
  std::string bytes = WeightLike(262144 + 3000, 40);  // 1 MiB and a partial segment
  std::optional<Digest> base;
  for (int k = 0; k <= kDepth; k++) {
    Digest d = PutCommitted(bytes, 4, base);
    auto e = *store_->FindChunk(d);
    ASSERT_EQ(e->codec, codec::CodecId::kSegmented);
    EXPECT_EQ(e->depth, k);
    raw.push_back(bytes);
    ds.push_back(d);
    base = d;
    for (size_t i = k; i < bytes.size() / 4; i += 5) bytes[i * 4] ^= 1;
  }
  store_->DropCache();
  const uint64_t loads_before = store_->cache_stats().loads;
  std::mt19937 rng(41);
  for (int trial = 0; trial < 40; trial++) {
    const int k = trial % (kDepth + 1);
    const std::string& want = raw[k];
    uint64_t off = rng() % want.size();
    size_t len = std::min<size_t>(1 + rng() % (200 << 10), want.size() - off);
    uint64_t partial_before = store_->cache_stats().partial_loads;
    auto piece = store_->ReadChunkRange(ds[k], off, len);
    ASSERT_TRUE(piece.ok()) << piece.status().ToString();
    ExpectPieceHolds(*piece, want, off, len);
    EXPECT_LT(piece->bytes->size(), want.size() / 2 + 2 * codec::kSegmentBytes);
    EXPECT_GT(store_->cache_stats().partial_loads, partial_before);
  }
  EXPECT_EQ(store_->cache_stats().bytes, 0u);  // nothing cached, bases included
  EXPECT_EQ(store_->cache_stats().loads, loads_before);
  // Small reads of a chunk being prefetched whole (a sequential reader's
  // next read) wait for that decode or read segments: right bytes either way.
  for (int round = 0; round < 30; round++) {
    store_->DropCache();
    const int k = round % (kDepth + 1);
    store_->Prefetch(ds[k]);
    uint64_t off = (round * 77777) % (raw[k].size() - 4096);
    auto piece = store_->ReadChunkRange(ds[k], off, 4096);
    ASSERT_TRUE(piece.ok()) << piece.status().ToString();
    ExpectPieceHolds(*piece, raw[k], off, 4096);
  }
  store_->DropCache();
  // Half the chunk or more: the whole chunk, decoded once and cached.
  auto big = store_->ReadChunkRange(ds[kDepth], 1000, raw[kDepth].size() / 2);
  ASSERT_TRUE(big.ok());
  EXPECT_EQ(big->offset, 0u);
  EXPECT_EQ(*big->bytes, raw[kDepth]);
  EXPECT_GT(store_->cache_stats().bytes, 0u);
  // Cached now: a small read gets the cached chunk.
  uint64_t partial_before = store_->cache_stats().partial_loads;
  auto small = store_->ReadChunkRange(ds[kDepth], 5, 10);
  ASSERT_TRUE(small.ok());
  EXPECT_EQ(small->bytes, big->bytes);
  EXPECT_EQ(store_->cache_stats().partial_loads, partial_before);
}

// Damage to one segment fails the reads that need it (and whole-chunk reads)
// with Corruption, not the others; damage to the table fails them all; fsck
// names both.
TEST_F(ChunkStoreTest, DamagedSegmentsAreCorruptionAndFsckFindsThem) {
  std::string data = WeightLike(262144, 42);
  Segmented sc;
  ASSERT_NO_FATAL_FAILURE(PutSegmented(data, &sc));
  const Digest& d = sc.d;
  const ChunkEntry* e = &sc.entry;
  const auto& seg3 = sc.table.segments[3];
  FlipByte(store_->PackPath(e->pack_id),
           e->offset + kFrameHeaderSize + seg3.payload_offset + seg3.payload_len / 2);
  Reopen();
  auto other = store_->ReadChunkRange(d, 100, 4096);
  ASSERT_TRUE(other.ok()) << other.status().ToString();
  ExpectPieceHolds(*other, data, 100, 4096);
  auto hit = store_->ReadChunkRange(d, seg3.raw_offset + 10, 4096);
  ASSERT_FALSE(hit.ok());
  EXPECT_TRUE(hit.status().IsCorruption()) << hit.status().ToString();
  EXPECT_TRUE(store_->ReadChunk(d).status().IsCorruption());
  FsckReport rep;
  ASSERT_TRUE(Fsck(*store_, &rep, kChunkLevel).ok());
  EXPECT_EQ(rep.bad_chunks.count(d), 1u);

  // Undo, then damage the table instead.
  FlipByte(store_->PackPath(e->pack_id),
           e->offset + kFrameHeaderSize + seg3.payload_offset + seg3.payload_len / 2);
  Reopen();
  ASSERT_TRUE(store_->ReadChunk(d).ok());
  store_->DropCache();
  FlipByte(store_->PackPath(e->pack_id), e->offset + kFrameHeaderSize + 8 + 13 * 2 + 6);
  Reopen();
  EXPECT_TRUE(store_->ReadChunkRange(d, 100, 4096).status().IsCorruption());
  EXPECT_TRUE(store_->ReadChunk(d).status().IsCorruption());
  FsckReport rep2;
  ASSERT_TRUE(Fsck(*store_, &rep2, kChunkLevel).ok());
  EXPECT_EQ(rep2.bad_chunks.count(d), 1u);
}

// A segment checksum that went bad while the bytes are fine: whole reads
// still work, small reads fall back to them (right bytes), fsck names it.
TEST_F(ChunkStoreTest, BadSegmentChecksumFallsBackAndFsckNamesIt) {
  std::string data = WeightLike(262144, 43);
  Segmented sc;
  ASSERT_NO_FATAL_FAILURE(PutSegmented(data, &sc));
  const Digest& d = sc.d;
  const ChunkEntry* e = &sc.entry;
  std::string& frame = sc.frame;
  const size_t payload_len = frame.size() - kFrameHeaderSize - kFrameTrailerSize;
  // Segment 2's checksum changed, the table's and the frame's recomputed.
  char* p = frame.data() + kFrameHeaderSize;
  p[8 + 13 * 2 + 5] ^= 1;
  const size_t covered = sc.table.table_bytes - 8;
  const uint64_t table_sum = Hash64(p, covered);
  std::memcpy(p + covered, &table_sum, 8);
  const uint64_t frame_sum = Hash64(frame.data(), kFrameHeaderSize + payload_len);
  std::memcpy(frame.data() + kFrameHeaderSize + payload_len, &frame_sum, 8);
  {
    std::fstream f(store_->PackPath(e->pack_id), std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(e->offset));
    f.write(frame.data(), static_cast<std::streamsize>(frame.size()));
  }
  Reopen();
  const uint64_t off = 2 * codec::kSegmentBytes + 100;
  auto piece = store_->ReadChunkRange(d, off, 4096);
  ASSERT_TRUE(piece.ok()) << piece.status().ToString();
  ExpectPieceHolds(*piece, data, off, 4096);
  store_->DropCache();
  ASSERT_TRUE(store_->ReadChunk(d).ok());
  FsckReport rep;
  ASSERT_TRUE(Fsck(*store_, &rep, kChunkLevel).ok());
  EXPECT_EQ(rep.bad_chunks.count(d), 1u);
  // A store that receives this frame refuses it.
  testing::TempDir other;
  ASSERT_TRUE(Store::Create(other.path()).ok());
  auto os = Store::Open(other.path());
  ASSERT_TRUE(os.ok());
  auto ob = (*os)->BeginWrite();
  ASSERT_TRUE(ob.ok());
  auto put = (*ob)->PutFrame(d, frame);
  ASSERT_FALSE(put.ok());
  EXPECT_TRUE(put.status().IsCorruption()) << put.status().ToString();
}

// Format 1 stores (no codec 4) open as they are, are upgraded to 2 when
// opened for writing; a newer format is refused with a clear message.
TEST_F(ChunkStoreTest, FormatOneIsUpgradedAndNewerIsRefused) {
  store_.reset();
  auto format = [&](const char* set) -> std::string {
    auto db = Db::Open(dir_.path() + "/index", Db::Options{});
    EXPECT_TRUE(db.ok());
    if (set != nullptr) {
      WriteTxn txn(**db);
      EXPECT_TRUE(txn.Put(Table::kMeta, "format", set).ok());
      EXPECT_TRUE(txn.Commit().ok());
    }
    ReadTxn txn(**db);
    auto v = txn.Get(Table::kMeta, "format");
    return v.ok() && *v ? std::string(**v) : std::string();  // copied before the txn ends
  };
  EXPECT_EQ(format(nullptr), "lineagefs-store-2");
  format("lineagefs-store-1");
  StoreOptions ro = opts_;
  ro.read_only = true;
  ASSERT_TRUE(Store::Open(dir_.path(), ro).ok());
  EXPECT_EQ(format(nullptr), "lineagefs-store-1");
  Reopen();
  store_.reset();
  EXPECT_EQ(format(nullptr), "lineagefs-store-2");
  format("lineagefs-store-3");
  auto newer = Store::Open(dir_.path(), opts_);
  ASSERT_FALSE(newer.ok());
  EXPECT_NE(newer.status().ToString().find("newer lineagefs"), std::string::npos);
  format("lineagefs-store-2");
  Reopen();
}

TEST_F(ChunkStoreTest, ReleasingReferencesAndGcReclaimSpace) {
  opts_.pack_target_bytes = 1 << 20;
  Reopen();
  std::vector<Digest> keep, drop;
  for (int i = 0; i < 40; i++) {
    std::string data = RandomBytes(100000, 100 + i);
    auto b = store_->BeginWrite();
    ASSERT_TRUE(b.ok());
    Digest d = *(*b)->PutChunk(data, 1);
    ASSERT_TRUE((*b)->Commit().ok());
    (i % 4 == 0 ? keep : drop).push_back(d);
  }
  uint64_t before = 0, live = 0;
  ASSERT_TRUE(store_->PackUsage(&before, &live).ok());
  {
    auto b = store_->BeginWrite();
    ASSERT_TRUE(b.ok());
    for (const auto& d : drop) (*b)->AddRef(d, -1);
    ASSERT_TRUE((*b)->Commit().ok());
  }
  GcStats st;
  ASSERT_TRUE(store_->Gc(GcOptions{}, &st).ok());
  EXPECT_GT(st.packs_rewritten, 0u);
  uint64_t after = 0;
  ASSERT_TRUE(store_->PackUsage(&after, &live).ok());
  EXPECT_LT(after, before / 2);
  Reopen();
  for (const auto& d : keep) {
    auto got = store_->ReadChunk(d);
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    EXPECT_EQ(Digest::Of(**got), d);
  }
  for (const auto& d : drop) EXPECT_FALSE(store_->FindChunk(d)->has_value());
  FsckReport rep;
  ASSERT_TRUE(Fsck(*store_, &rep, kChunkLevel).ok());
  EXPECT_TRUE(rep.ok()) << rep.errors.front();
}

// Simulated power loss at every write boundary of a batch: the store opens,
// fsck is clean, and everything committed earlier reads back.
TEST_F(ChunkStoreTest, CrashAtEveryWriteBoundaryKeepsCommittedData) {
  FaultInjectionEnv fenv(Env::Default());
  opts_.env = &fenv;
  opts_.pack_target_bytes = 256 << 10;
  Reopen();
  std::string committed = RandomBytes(200000, 7);
  Digest cd;
  {
    auto b = store_->BeginWrite();
    ASSERT_TRUE(b.ok());
    cd = *(*b)->PutChunk(committed, 1);
    ASSERT_TRUE((*b)->Commit().ok());
  }
  // Count the write operations of a second batch, then crash after each.
  fenv.Reset();
  auto write_batch = [&](int seed) -> Status {
    LFS_ASSIGN_OR_RETURN(auto b, store_->BeginWrite());
    for (int i = 0; i < 6; i++) {
      LFS_RETURN_IF_ERROR((*b).PutChunk(RandomBytes(100000, seed * 100 + i), 1).status());
    }
    return b->Commit();
  };
  ASSERT_TRUE(write_batch(1).ok());
  uint64_t ops = fenv.op_count(FaultInjectionEnv::Op::kAny);
  ASSERT_GT(ops, 3u);
  for (uint64_t n = 0; n < ops; n++) {
    fenv.Reset();
    fenv.FailNth(FaultInjectionEnv::Op::kAny, n, EIO);
    Status s = write_batch(static_cast<int>(n) + 2);
    EXPECT_FALSE(s.ok()) << "fault " << n << " not reported";
    ASSERT_TRUE(fenv.DropUnsyncedData().ok());
    Reopen();
    auto got = store_->ReadChunk(cd);
    ASSERT_TRUE(got.ok()) << "after fault " << n << ": " << got.status().ToString();
    EXPECT_EQ(**got, committed);
    FsckReport rep;
    ASSERT_TRUE(Fsck(*store_, &rep, kChunkLevel).ok());
    EXPECT_TRUE(rep.ok()) << "after fault " << n << ": " << rep.errors.front();
  }
  // And the store still takes writes.
  fenv.Reset();
  EXPECT_TRUE(write_batch(999).ok());
}

TEST_F(ChunkStoreTest, DiskFullIsNoSpaceAndRecoverable) {
  FaultInjectionEnv fenv(Env::Default());
  opts_.env = &fenv;
  Reopen();
  fenv.SetDiskFull(true);
  {
    auto b = store_->BeginWrite();
    ASSERT_TRUE(b.ok());
    auto d = (*b)->PutChunk(RandomBytes(10000, 9), 1);
    ASSERT_FALSE(d.ok());
    EXPECT_EQ(d.status().code(), Status::Code::kNoSpace);
  }
  fenv.SetDiskFull(false);
  auto b = store_->BeginWrite();
  ASSERT_TRUE(b.ok());
  ASSERT_TRUE((*b)->PutChunk(RandomBytes(10000, 9), 1).ok());
  ASSERT_TRUE((*b)->Commit().ok());
  FsckReport rep;
  ASSERT_TRUE(Fsck(*store_, &rep, kChunkLevel).ok());
  EXPECT_TRUE(rep.ok());
}

TEST_F(ChunkStoreTest, ConcurrentReadersAndOneWriter) {
  std::vector<std::string> data;
  std::vector<Digest> ds;
  {
    auto b = store_->BeginWrite();
    ASSERT_TRUE(b.ok());
    for (int i = 0; i < 32; i++) {
      data.push_back(WeightLike(20000, 200 + i));
      ds.push_back(*(*b)->PutChunk(data.back(), 4));
    }
    ASSERT_TRUE((*b)->Commit().ok());
  }
  std::atomic<int> errors{0};
  std::atomic<bool> stop{false};
  std::vector<std::thread> readers;
  for (int t = 0; t < 8; t++) {
    readers.emplace_back([&, t] {
      std::mt19937 rng(t);
      while (!stop) {
        size_t i = rng() % ds.size();
        auto got = store_->ReadChunk(ds[i]);
        if (!got.ok() || **got != data[i]) errors++;
        if (rng() % 16 == 0) store_->DropCache();
      }
    });
  }
  for (int i = 0; i < 20; i++) {
    auto b = store_->BeginWrite();
    ASSERT_TRUE(b.ok());
    ASSERT_TRUE((*b)->PutChunk(RandomBytes(50000, 1000 + i), 1).ok());
    ASSERT_TRUE((*b)->Commit().ok());
  }
  stop = true;
  for (auto& t : readers) t.join();
  EXPECT_EQ(errors.load(), 0);
}

}  // namespace
}  // namespace lfs

namespace lfs {
namespace {

// Many chunks per call run the encode stage on the worker pool; repeated calls
// catch a pool that fails to hand its helpers back.
TEST(WorkerPoolTest, ManyParallelBatchesComplete) {
  testing::TempDir dir;
  ASSERT_TRUE(Store::Create(dir.path()).ok());
  StoreOptions opts;
  opts.encode_threads = 4;
  auto store = Store::Open(dir.path(), opts);
  ASSERT_TRUE(store.ok());
  for (int round = 0; round < 50; round++) {
    auto b = (*store)->BeginWrite();
    ASSERT_TRUE(b.ok());
    std::vector<std::string> data;
    std::vector<ChunkRequest> reqs;
    for (int i = 0; i < 9; i++) data.push_back(RandomBytes(4096, round * 100 + i));
    for (const auto& d : data) reqs.push_back({d, 1, {}});
    auto ds = (*b)->PutChunks(reqs);
    ASSERT_TRUE(ds.ok());
    ASSERT_EQ(ds->size(), 9u);
    ASSERT_TRUE((*b)->Commit().ok());
  }
}

}  // namespace
}  // namespace lfs
