#include "store/ingest.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <numeric>
#include <random>

#include "store/crc32.h"
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
    io.max_in_flight_bytes = max_in_flight_bytes_;
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
  uint64_t max_in_flight_bytes_ = IngestOptions().max_in_flight_bytes;
  std::string ReadAll(const Digest& file) {
    store_->DropCache();  // ingest leaves fresh chunks there: read through the packs
    auto r = FileReader::Open(*store_, file);
    EXPECT_TRUE(r.ok());
    std::string out((*r)->size(), '\0');
    auto n = (*r)->ReadAt(0, out.size(), out.data());
    EXPECT_TRUE(n.ok() && *n == out.size());
    // ReadRefs (the mount's copy-free path) gives the same bytes in any window.
    std::mt19937 rng(7);
    for (int i = 0; i < 20 && !out.empty(); i++) {
      uint64_t off = rng() % out.size();
      size_t len = std::min<size_t>(out.size() - off, rng() % (3 << 20));
      std::vector<ByteRef> refs;
      auto got = (*r)->ReadRefs(off, len, ReadHint{2, i % 2 == 1}, &refs);
      EXPECT_TRUE(got.ok() && *got == len);
      std::string joined;
      for (const auto& ref : refs) joined.append(ref.data, ref.size);
      EXPECT_EQ(joined, out.substr(off, len)) << "window " << off << "+" << len;
    }
    ExpectTensorCrcs(file);
    return out;
  }
  // Each tensor record's crc32 (zip views carry it) is that of its bytes.
  void ExpectTensorCrcs(const Digest& file) {
    auto f = LoadFile(*store_, file);
    ASSERT_TRUE(f.ok());
    for (const auto& ref : f->tensors) {
      auto t = LoadTensor(*store_, ref.object);
      ASSERT_TRUE(t.ok());
      std::string bytes(t->nbytes, '\0');
      auto n = ObjectReader::ReadTensor(*store_, *t, 0, bytes.size(), bytes.data());
      ASSERT_TRUE(n.ok() && *n == bytes.size());
      EXPECT_EQ(t->crc32, Crc32(bytes)) << ref.name;
    }
  }
  Status TryReadAll(const Digest& file, std::string* out) {
    LFS_ASSIGN_OR_RETURN(auto r, FileReader::Open(*store_, file));
    out->assign((*r).size(), '\0');
    LFS_ASSIGN_OR_RETURN(size_t n, r->ReadAt(0, out->size(), out->data()));
    if (n != out->size()) return Status::Corruption("short read");
    return Status::OK();
  }
  // Bases from the tensors of the given files, in order (best parent first).
  DeltaBases BasesOf(const std::vector<Digest>& files) {
    DeltaBases bases;
    int origin = 0;  // parent 0, 1, ...
    for (const auto& f : files) {
      auto pf = LoadFile(*store_, f);
      EXPECT_TRUE(pf.ok());
      for (const auto& t : pf->tensors) bases.Add(t, origin);
      origin++;
    }
    return bases;
  }
  // The tensor object of the named tensor in a file.
  TensorObject TensorOf(const Digest& file, const std::string& name) {
    auto f = LoadFile(*store_, file);
    EXPECT_TRUE(f.ok());
    for (const auto& t : f->tensors) {
      if (t.name == name) return *LoadTensor(*store_, t.object);
    }
    ADD_FAILURE() << "no tensor " << name;
    return {};
  }
  // Flips one byte in the middle of a chunk's frame on disk.
  void CorruptChunk(const Digest& d) {
    auto e = *store_->FindChunk(d);
    ASSERT_TRUE(e.has_value());
    std::fstream f(store_->PackPath(e->pack_id), std::ios::in | std::ios::out | std::ios::binary);
    auto at = static_cast<std::streamoff>(e->offset + e->frame_len / 2);
    char c;
    f.seekg(at);
    f.read(&c, 1);
    c ^= 0x40;
    f.seekp(at);
    f.write(&c, 1);
  }
  // A derived child: costs (almost) nothing, reads back exactly, and a
  // corrupted residual chunk is an error, never wrong bytes.
  void ExpectDerivedHit(const std::string& child, const DeltaBases& bases, const std::string& name,
                        Derivation kind) {
    uint64_t before = PackBytes();
    auto f = Ingest("c.safetensors", child, &bases);
    EXPECT_GE(f.tensors_derived, 1u);
    EXPECT_LT(PackBytes() - before, 64u * 1024);
    store_->DropCache();
    EXPECT_EQ(ReadAll(f.digest), child);
    ExpectFsckClean();
    TensorObject t = TensorOf(f.digest, name);
    ASSERT_EQ(t.derivation, kind);
    ASSERT_FALSE(t.chunks.empty());
    CorruptChunk(t.chunks[0]);
    store_->DropCache();
    std::string got;
    Status st = TryReadAll(f.digest, &got);
    EXPECT_TRUE(st.IsCorruption()) << st.ToString();
  }
  // A child that is not the prediction: stored through the generic path.
  void ExpectFallback(const std::string& child, const DeltaBases& bases) {
    auto f = Ingest("miss.safetensors", child, &bases);
    EXPECT_EQ(f.tensors_derived, 0u);
    store_->DropCache();
    EXPECT_EQ(ReadAll(f.digest), child);
    ExpectFsckClean();
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

// Tensors longer than one batch of chunks (encoded and derived on the worker
// threads, hashed and summed in order by the ingesting thread).
TEST_F(IngestTest, MultiBatchTensorsKeepOrderHashAndCrc) {
  std::string w = Weights(5 << 20, 11);   // 20 MiB fp32 = 20 chunks
  std::string w2 = Weights(3 << 18, 12);  // 3 MiB: a partial last batch
  std::string pbytes = Safetensors(
      {{"a", formats::DType::kF32, {5 << 20}, w}, {"b", formats::DType::kF32, {3 << 18}, w2}});
  auto parent = Ingest("p.safetensors", pbytes);
  store_->DropCache();
  EXPECT_EQ(ReadAll(parent.digest), pbytes);
  DeltaBases bases = BasesOf({parent.digest});
  std::string bf = CastBf16(w);  // 10 MiB bf16: batches of 8 and 2 chunks
  bf[bf.size() - 3] ^= 1;
  std::string child = Safetensors(
      {{"a", formats::DType::kBF16, {5 << 20}, bf}, {"b", formats::DType::kF32, {3 << 18}, w2}});
  auto f = Ingest("c.safetensors", child, &bases);
  EXPECT_EQ(f.tensors_derived, 1u);
  store_->DropCache();
  EXPECT_EQ(ReadAll(f.digest), child);
  ExpectFsckClean();
}

// Tied weights: the second copy is found among this file's own new tensors,
// whose last chunks may still be encoding.
TEST_F(IngestTest, IdenticalTensorsInOneFileAreStoredOnce) {
  std::string w = Weights(3 << 18, 21);  // 3 MiB
  std::string bytes =
      Safetensors({{"embed", formats::DType::kF32, {3 << 18}, w},
                   {"head", formats::DType::kF32, {3 << 18}, w},
                   {"other", formats::DType::kF32, {3 << 18}, Weights(3 << 18, 22)}});
  uint64_t before = PackBytes();
  auto f = Ingest("m.safetensors", bytes);
  EXPECT_EQ(f.tensors, 3u);
  EXPECT_EQ(f.tensors_deduped, 1u);
  EXPECT_LT(PackBytes() - before, 2 * w.size() + (64u << 10));  // two tensors' worth, not three
  EXPECT_EQ(ReadAll(f.digest), bytes);
  ExpectFsckClean();
}

// A short read-ahead window: batches finish while later tensors are read, so
// records are completed out of the reading order (derived, deduplicated and
// multi-batch tensors alike).
TEST_F(IngestTest, SmallReadAheadWindowCompletesTensorsInOrder) {
  max_in_flight_bytes_ = 2 << 20;
  std::string w = Weights(5 << 20, 31), w2 = Weights(1 << 18, 32);
  std::string pbytes = Safetensors(
      {{"a", formats::DType::kF32, {5 << 20}, w}, {"b", formats::DType::kF32, {1 << 18}, w2}});
  auto parent = Ingest("p.safetensors", pbytes);
  EXPECT_EQ(ReadAll(parent.digest), pbytes);
  DeltaBases bases = BasesOf({parent.digest});
  std::string child = Safetensors({{"a", formats::DType::kBF16, {5 << 20}, CastBf16(w)},
                                   {"b", formats::DType::kF32, {1 << 18}, w2},
                                   {"b2", formats::DType::kF32, {1 << 18}, w2},
                                   {"c", formats::DType::kF32, {3 << 18}, Weights(3 << 18, 33)}});
  auto f = Ingest("c.safetensors", child, &bases);
  EXPECT_EQ(f.tensors, 4u);
  EXPECT_EQ(f.tensors_derived, 1u);
  EXPECT_EQ(f.tensors_deduped, 2u);  // b is the parent's, b2 is b
  EXPECT_EQ(ReadAll(f.digest), child);
  ExpectFsckClean();
}

// A derivation source that fails after the probe (here: a later chunk of the
// parent is corrupt) fails the import; nothing of it is applied.
TEST_F(IngestTest, DerivationSourceFailingMidTensorFailsTheImport) {
  std::string w = Weights(4 << 20, 41);  // 16 MiB fp32: its bf16 cast is 8 chunks
  auto parent = Ingest("p.safetensors", Safetensors({{"a", formats::DType::kF32, {4 << 20}, w}}));
  DeltaBases bases = BasesOf({parent.digest});
  TensorObject src = TensorOf(parent.digest, "a");
  ASSERT_GE(src.chunks.size(), 16u);
  CorruptChunk(src.chunks[13]);
  store_->DropCache();
  auto b = store_->BeginWrite();
  ASSERT_TRUE(b.ok());
  IngestOptions io;
  io.bases = &bases;
  Ingester ing(**b, io);
  std::string child = Safetensors({{"a", formats::DType::kBF16, {4 << 20}, CastBf16(w)}});
  formats::MemoryAccess acc(child);
  auto f = ing.AddFile("c.safetensors", acc);
  ASSERT_FALSE(f.ok());
  EXPECT_TRUE(f.status().IsCorruption()) << f.status().ToString();
  Status applied = (*b)->Commit([&](WriteTxn& txn) { return ing.Apply(txn); });
  EXPECT_FALSE(applied.ok());
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

float F(const std::string& b, size_t i) {
  float f;
  std::memcpy(&f, b.data() + 4 * i, 4);
  return f;
}
void SetF(std::string* b, size_t i, float f) { std::memcpy(b->data() + 4 * i, &f, 4); }

// Perturbs every element a little (a fine-tune step): not any derivation.
std::string Perturbed(const std::string& w, uint32_t seed) {
  std::string c = w;
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0, 1e-2f);
  for (size_t i = 0; i < c.size() / 4; i++) SetF(&c, i, F(c, i) * (1 + nd(rng)));
  return c;
}

TEST_F(IngestTest, MergeIsTheMeanOfTwoParents) {
  const size_t n = 1 << 19;
  std::string a = Weights(n, 10), b = Weights(n, 11);
  auto pa = Ingest("a.safetensors", Safetensors({{"x", formats::DType::kF32, {512, 1024}, a}}));
  auto pb = Ingest("b.safetensors", Safetensors({{"x", formats::DType::kF32, {512, 1024}, b}}));
  DeltaBases bases = BasesOf({pa.digest, pb.digest});
  std::string m(a.size(), '\0');
  for (size_t i = 0; i < n; i++) SetF(&m, i, 0.5f * F(a, i) + 0.5f * F(b, i));
  m[777] ^= 1;  // one element off: kept by the residual
  ExpectFallback(Safetensors({{"x", formats::DType::kF32, {512, 1024}, Perturbed(m, 12)}}), bases);
  ExpectDerivedHit(Safetensors({{"x", formats::DType::kF32, {512, 1024}, m}}), bases, "x",
                   Derivation::kMean2);
}

TEST_F(IngestTest, MagnitudePrunedCopyIsParentWithZeros) {
  const size_t n = 1 << 20;  // 4 MiB: the threshold scan spans 4 chunks
  std::string w = Weights(n, 13);
  auto p = Ingest("p.safetensors", Safetensors({{"x", formats::DType::kF32, {1024, 1024}, w}}));
  DeltaBases bases = BasesOf({p.digest});
  // torch: the n/2 smallest |w| (stable order) set to +0.0.
  std::vector<size_t> idx(n);
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(),
                   [&](size_t i, size_t j) { return std::fabs(F(w, i)) < std::fabs(F(w, j)); });
  std::string pruned = w;
  for (size_t k = 0; k < n / 2; k++) SetF(&pruned, idx[k], 0.0f);
  // Zeros in the same places but other values kept: not a pruned copy.
  std::string other = Perturbed(pruned, 14);
  for (size_t k = 0; k < n / 2; k++) SetF(&other, idx[k], 0.0f);
  ExpectFallback(Safetensors({{"x", formats::DType::kF32, {1024, 1024}, other}}), bases);
  ExpectDerivedHit(Safetensors({{"x", formats::DType::kF32, {1024, 1024}, pruned}}), bases, "x",
                   Derivation::kPrune);
}

TEST_F(IngestTest, Int8QuantizationAndItsScalesArePredicted) {
  const size_t rows = 256, cols = 4096, n = rows * cols;  // 1 MiB of int8: one chunk
  std::string w = Weights(n, 15);
  auto p = Ingest("p.safetensors", Safetensors({{"l.w", formats::DType::kF32, {256, 4096}, w}}));
  DeltaBases bases = BasesOf({p.digest});
  // As torch: scale = (amax / 127).clamp(min=1e-12); q = round(w / scale).clamp(-127, 127).
  std::string scale(rows * 4, '\0'), q(n, '\0');
  for (size_t r = 0; r < rows; r++) {
    float amax = 0;
    for (size_t c = 0; c < cols; c++) amax = std::max(amax, std::fabs(F(w, r * cols + c)));
    float s = std::max(amax / 127.0f, 1e-12f);
    SetF(&scale, r, s);
    for (size_t c = 0; c < cols; c++) {
      float v = std::clamp(std::nearbyint(F(w, r * cols + c) / s), -127.0f, 127.0f);
      q[r * cols + c] = static_cast<char>(static_cast<int8_t>(v));
    }
  }
  std::string bad_q = q;
  for (size_t i = 0; i < n; i += 2) bad_q[i] = static_cast<char>(bad_q[i] / 2);  // other scales
  ExpectFallback(Safetensors({{"l.w", formats::DType::kI8, {256, 4096}, bad_q}}), bases);
  ExpectDerivedHit(Safetensors({{"l.w", formats::DType::kI8, {256, 4096}, q},
                                {"l.w.scale", formats::DType::kF32, {256}, scale}}),
                   bases, "l.w", Derivation::kQuant);
  auto f = Ingest("s.safetensors", Safetensors({{"l.w.scale", formats::DType::kF32, {256}, scale}}),
                  &bases);
  EXPECT_EQ(f.tensors_derived + f.tensors_deduped, 1u);
  EXPECT_EQ(ReadAll(f.digest), Safetensors({{"l.w.scale", formats::DType::kF32, {256}, scale}}));
}

TEST(TensorObjectTest, DerivedRecordsRoundTripAndBadOnesAreCorruption) {
  TensorObject t;
  t.nbytes = 10;
  t.chunk_bytes = 1 << 20;
  t.chunks.push_back(Digest::Of("x", 1));
  t.derivation = Derivation::kQuant;
  t.from_dtype = formats::DType::kF32;
  t.to_dtype = formats::DType::kI8;
  t.derived_from = Digest::Of("p", 1);
  t.row_len = 5;
  t.qmax = 127;
  auto back = TensorObject::Decode(t.Encode());
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->derivation, Derivation::kQuant);
  EXPECT_EQ(back->row_len, 5u);
  EXPECT_EQ(back->qmax, 127u);
  t.qmax = 0;  // a quantization to nothing
  EXPECT_TRUE(TensorObject::Decode(t.Encode()).status().IsCorruption());
  t.qmax = 127;
  std::string v = t.Encode();
  v[1 + 8 + 4 + 1 + 4 + 4 + 1 + Digest::kEncodedBytes] = 9;  // unknown derivation id
  EXPECT_TRUE(TensorObject::Decode(v).status().IsCorruption());
  t.derivation = Derivation::kMean2;  // needs a second source
  t.to_dtype = formats::DType::kF32;
  EXPECT_TRUE(TensorObject::Decode(t.Encode()).status().IsCorruption());
}

}  // namespace
}  // namespace lfs
