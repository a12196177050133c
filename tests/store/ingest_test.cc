#include "store/ingest.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "store/formats/safetensors.h"
#include "store/fsck.h"
#include "tests/testing/temp_dir.h"

namespace lfs {
namespace {

struct Tensor {
  std::string name;
  formats::DType dtype;
  std::vector<int64_t> shape;
  std::string bytes;
};

std::string Safetensors(const std::vector<Tensor>& ts) {
  std::vector<formats::SafetensorsEntry> entries;
  for (const auto& t : ts) entries.push_back({t.name, t.dtype, t.shape, t.bytes.size()});
  auto lay = formats::LayoutSafetensors(entries);
  EXPECT_TRUE(lay.ok());
  std::string out;
  for (const auto& s : lay->segments)
    out += s.tensor < 0 ? s.literal : ts[static_cast<size_t>(s.tensor)].bytes;
  return out;
}

std::string Weights(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0, 0.02f);
  std::string s(n * 4, '\0');
  for (size_t i = 0; i < n; i++) {
    float f = nd(rng);
    std::memcpy(&s[4 * i], &f, 4);
  }
  return s;
}

std::string CastBf16(const std::string& f32) {
  std::string out(f32.size() / 2, '\0');
  EXPECT_TRUE(CastElements(formats::DType::kF32, formats::DType::kBF16, f32.data(), f32.size() / 4,
                           out.data()));
  return out;
}

class IngestTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(Store::Create(dir_.path()).ok());
    store_ = std::move(Store::Open(dir_.path())).value();
  }
  // Ingests one file as a root (its file ref taken here) and returns it.
  IngestedFile Ingest(const std::string& name, const std::string& bytes,
                      const DeltaBases* bases = nullptr) {
    auto b = store_->BeginWrite();
    EXPECT_TRUE(b.ok());
    IngestOptions io;
    io.bases = bases;
    Ingester ing(**b, io);
    formats::MemoryAccess acc(bytes);
    auto f = ing.AddFile(name, acc);
    EXPECT_TRUE(f.ok()) << f.status().ToString();
    EXPECT_TRUE((*b)->Commit([&](WriteTxn& txn) {
                      LFS_RETURN_IF_ERROR(ing.Apply(txn));
                      return AdjustFileRefs(txn, f->digest, +1);
                    })
                    .ok());
    return *f;
  }
  std::string ReadAll(const Digest& file) {
    auto r = FileReader::Open(*store_, file);
    EXPECT_TRUE(r.ok());
    std::string out((*r)->size(), '\0');
    auto n = (*r)->ReadAt(0, out.size(), out.data());
    EXPECT_TRUE(n.ok() && *n == out.size());
    return out;
  }
  uint64_t PackBytes() {
    uint64_t packs = 0, live = 0;
    EXPECT_TRUE(store_->PackUsage(&packs, &live).ok());
    return packs;
  }
  void ExpectFsckClean() {
    FsckReport rep;
    ASSERT_TRUE(Fsck(*store_, &rep).ok());
    EXPECT_TRUE(rep.ok()) << rep.errors.front();
  }
  testing::TempDir dir_;
  std::unique_ptr<Store> store_;
};

TEST_F(IngestTest, SafetensorsRoundTripsAndDedupsTensors) {
  std::string w = Weights(300000, 1);
  std::string file = Safetensors({{"a.w", formats::DType::kF32, {300000}, w},
                                  {"b.w", formats::DType::kF32, {1000}, Weights(1000, 2)}});
  auto f = Ingest("model.safetensors", file);
  EXPECT_EQ(f.format, formats::Format::kSafetensors);
  EXPECT_EQ(f.tensors, 2u);
  EXPECT_EQ(ReadAll(f.digest), file);
  uint64_t before = PackBytes();
  // The same tensor in another file is stored zero more times.
  std::string file2 = Safetensors({{"renamed", formats::DType::kF32, {300000}, w}});
  auto f2 = Ingest("other.safetensors", file2);
  EXPECT_EQ(f2.tensors_deduped, 1u);
  EXPECT_LT(PackBytes() - before, 4096u);
  EXPECT_EQ(ReadAll(f2.digest), file2);
  ExpectFsckClean();
}

TEST_F(IngestTest, GenericAndMalformedFilesAreByteExact) {
  std::string junk = Weights(50000, 3);
  std::string bad = std::string("\xff\xff\xff\xff\xff\xff\xff\x7f{", 9) + junk;
  auto f = Ingest("model.safetensors", bad);
  EXPECT_EQ(f.format, formats::Format::kGeneric);
  EXPECT_FALSE(f.note.empty());
  EXPECT_EQ(ReadAll(f.digest), bad);
  auto g = Ingest("blob.bin", junk);
  EXPECT_EQ(ReadAll(g.digest), junk);
  ExpectFsckClean();
}

TEST_F(IngestTest, Bf16CastOfParentCostsAlmostNothingAndReadsExactly) {
  std::string w = Weights(1 << 20, 4);  // 4 MiB fp32 = 4 chunks
  auto parent = Ingest("p.safetensors", Safetensors({{"x", formats::DType::kF32, {1 << 20}, w}}));
  auto pf = LoadFile(*store_, parent.digest);
  ASSERT_TRUE(pf.ok());
  DeltaBases bases;
  for (const auto& t : pf->tensors) bases.Add(t);
  std::string bf = CastBf16(w);
  bf[12345] ^= 1;  // one element off the prediction: kept exactly via the residual
  std::string child = Safetensors({{"x", formats::DType::kBF16, {1 << 20}, bf}});
  uint64_t before = PackBytes();
  auto f = Ingest("c.safetensors", child, &bases);
  EXPECT_EQ(f.tensors_derived, 1u);
  EXPECT_LT(PackBytes() - before, 64u * 1024);  // vs ~1.4 MiB compressed standalone
  store_->DropCache();
  EXPECT_EQ(ReadAll(f.digest), child);
  ExpectFsckClean();
  // Releasing the parent keeps the cast's source alive through its own reference.
  {
    auto b = store_->BeginWrite();
    ASSERT_TRUE(b.ok());
    ASSERT_TRUE(
        (*b)->Commit([&](WriteTxn& txn) { return AdjustFileRefs(txn, parent.digest, -1); }).ok());
  }
  store_->DropCache();
  EXPECT_EQ(ReadAll(f.digest), child);
  ExpectFsckClean();
}

TEST_F(IngestTest, FineTunedChildIsDeltaEncodedSmallerThanAlone) {
  std::string w = Weights(1 << 19, 5);
  auto parent = Ingest("p.safetensors", Safetensors({{"x", formats::DType::kF32, {1 << 19}, w}}));
  std::string c = w;
  std::mt19937 rng(6);
  std::normal_distribution<float> nd(0, 1e-3f);
  for (size_t i = 0; i < c.size() / 4; i++) {
    float v;
    std::memcpy(&v, &c[4 * i], 4);
    v += v * nd(rng);
    std::memcpy(&c[4 * i], &v, 4);
  }
  std::string child = Safetensors({{"x", formats::DType::kF32, {1 << 19}, c}});
  // Alone (no parent) in a second store, for the comparison.
  testing::TempDir other;
  ASSERT_TRUE(Store::Create(other.path()).ok());
  uint64_t alone;
  {
    auto s2 = std::move(Store::Open(other.path())).value();
    auto b = s2->BeginWrite();
    Ingester ing(**b, IngestOptions{});
    formats::MemoryAccess acc(child);
    ASSERT_TRUE(ing.AddFile("c", acc).ok());
    ASSERT_TRUE((*b)->Commit([&](WriteTxn& t) { return ing.Apply(t); }).ok());
    uint64_t live = 0;
    ASSERT_TRUE(s2->PackUsage(&alone, &live).ok());
  }
  auto pf = LoadFile(*store_, parent.digest);
  DeltaBases bases;
  for (const auto& t : pf->tensors) bases.Add(t);
  uint64_t before = PackBytes();
  auto f = Ingest("c.safetensors", child, &bases);
  uint64_t with_delta = PackBytes() - before;
  EXPECT_LT(with_delta, alone);
  EXPECT_EQ(ReadAll(f.digest), child);
  ExpectFsckClean();
}

}  // namespace
}  // namespace lfs
