#include "store/objects.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "store/coding.h"

namespace lfs {

namespace {
constexpr uint8_t kTensorVersion = 1;
constexpr uint8_t kDerivedTensorVersion = 2;   // v1 + derivation fields (kCast only)
constexpr uint8_t kDerived3TensorVersion = 3;  // v2 + second source + parameters
constexpr uint8_t kFileVersion = 1;
uint64_t ZigZag(int64_t v) {
  return (static_cast<uint64_t>(v) << 1) ^ static_cast<uint64_t>(v >> 63);
}
int64_t UnZigZag(uint64_t v) { return static_cast<int64_t>(v >> 1) ^ -static_cast<int64_t>(v & 1); }
void PutDims(std::string* s, const std::vector<int64_t>& dims) {
  PutVarint(s, dims.size());
  for (int64_t d : dims) PutVarint(s, ZigZag(d));
}
bool GetDims(Decoder& d, std::vector<int64_t>* dims) {
  uint64_t n = d.Varint();
  if (n > 64 || !d.ok()) return false;
  dims->resize(n);
  for (auto& x : *dims) x = UnZigZag(d.Varint());
  return d.ok();
}
}  // namespace

namespace {
bool DerivationShapeOk(const TensorObject& t) {
  using formats::DType;
  size_t fw = formats::DTypeSize(t.from_dtype), tw = formats::DTypeSize(t.to_dtype);
  switch (t.derivation) {
    case Derivation::kNone: return true;
    case Derivation::kCast: return CastSupported(t.from_dtype, t.to_dtype);
    case Derivation::kMean2:
      return t.from_dtype == DType::kF32 && t.to_dtype == DType::kF32 && !t.derived_from2.empty();
    case Derivation::kPrune: return t.from_dtype == t.to_dtype && (fw == 2 || fw == 4);
    case Derivation::kQuant:
      return t.from_dtype == DType::kF32 && t.to_dtype == DType::kI8 && t.qmax > 0 && t.qmax <= 127;
    case Derivation::kQScale:
      return t.from_dtype == DType::kF32 && t.to_dtype == DType::kF32 && t.row_len > 0 &&
             t.qmax > 0;
  }
  (void)tw;
  return false;
}
}  // namespace

std::string TensorObject::Encode() const {
  std::string v;
  bool derived = derivation != Derivation::kNone;
  // kCast keeps the v2 record older readers know.
  uint8_t version = !derived                          ? kTensorVersion
                    : derivation == Derivation::kCast ? kDerivedTensorVersion
                                                      : kDerived3TensorVersion;
  PutFixed8(&v, version);
  PutFixed64(&v, nbytes);
  PutFixed32(&v, chunk_bytes);
  PutFixed8(&v, elem_width);
  PutFixed32(&v, crc32);
  PutFixed32(&v, refs);
  PutVarint(&v, chunks.size());
  for (const auto& c : chunks) PutDigest(&v, c);
  if (derived) {
    PutFixed8(&v, static_cast<uint8_t>(derivation));
    PutFixed8(&v, static_cast<uint8_t>(from_dtype));
    PutFixed8(&v, static_cast<uint8_t>(to_dtype));
    PutDigest(&v, derived_from);
  }
  if (version == kDerived3TensorVersion) {
    PutDigest(&v, derived_from2);
    PutFixed32(&v, threshold);
    PutVarint(&v, row_len);
    PutFixed32(&v, qmax);
    PutFixed32(&v, eps_bits);
    PutFixed32(&v, scale_bits);
  }
  return v;
}

Result<TensorObject> TensorObject::Decode(std::string_view v) {
  Decoder d(v);
  TensorObject t;
  uint8_t version = d.Fixed8();
  if (version != kTensorVersion && version != kDerivedTensorVersion &&
      version != kDerived3TensorVersion) {
    return Status::Corruption("unknown tensor record version");
  }
  t.nbytes = d.Fixed64();
  t.chunk_bytes = d.Fixed32();
  t.elem_width = d.Fixed8();
  t.crc32 = d.Fixed32();
  t.refs = d.Fixed32();
  uint64_t n = d.Varint();
  if (!d.ok() || n > d.remaining() / Digest::kEncodedBytes) {
    return Status::Corruption("malformed tensor record");
  }
  t.chunks.reserve(n);
  for (uint64_t i = 0; i < n; i++) t.chunks.push_back(d.DigestValue());
  if (version != kTensorVersion) {
    uint8_t kind = d.Fixed8();
    t.from_dtype = static_cast<formats::DType>(d.Fixed8());
    t.to_dtype = static_cast<formats::DType>(d.Fixed8());
    t.derived_from = d.DigestValue();
    if (version == kDerived3TensorVersion) {
      t.derived_from2 = d.DigestValue();
      t.threshold = d.Fixed32();
      t.row_len = d.Varint();
      t.qmax = d.Fixed32();
      t.eps_bits = d.Fixed32();
      t.scale_bits = d.Fixed32();
    }
    bool known = version == kDerivedTensorVersion
                     ? kind == static_cast<uint8_t>(Derivation::kCast)
                     : kind >= static_cast<uint8_t>(Derivation::kMean2) &&
                           kind <= static_cast<uint8_t>(Derivation::kQScale);
    if (!known || !d.ok()) return Status::Corruption("unknown tensor derivation");
    t.derivation = static_cast<Derivation>(kind);
    if (!DerivationShapeOk(t)) return Status::Corruption("unknown tensor derivation");
  }
  if (!d.ok() || !d.done()) return Status::Corruption("malformed tensor record");
  uint64_t expect = t.chunk_bytes ? (t.nbytes + t.chunk_bytes - 1) / t.chunk_bytes : 0;
  if (t.chunk_bytes == 0 || expect != n) return Status::Corruption("tensor chunk count mismatch");
  return t;
}

std::string FileRecipe::Encode() const {
  std::string v;
  PutFixed8(&v, kFileVersion);
  PutFixed8(&v, static_cast<uint8_t>(format));
  PutFixed64(&v, size);
  PutFixed32(&v, refs);
  PutBytes(&v, note);
  PutVarint(&v, extents.size());
  for (const auto& e : extents) {
    PutFixed8(&v, static_cast<uint8_t>(e.kind));
    PutDigest(&v, e.digest);
    PutVarint(&v, e.object_offset);
    PutVarint(&v, e.length);
  }
  PutVarint(&v, tensors.size());
  for (const auto& t : tensors) {
    PutBytes(&v, t.name);
    PutFixed8(&v, static_cast<uint8_t>(t.dtype));
    PutDims(&v, t.shape);
    PutDigest(&v, t.object);
    PutVarint(&v, t.object_offset);
    PutVarint(&v, t.nbytes);
    PutFixed8(&v, t.contiguous ? 1 : 0);
    PutDims(&v, t.stride);
    PutVarint(&v, ZigZag(t.storage_offset));
  }
  return v;
}

Result<FileRecipe> FileRecipe::Decode(std::string_view v) {
  Decoder d(v);
  FileRecipe f;
  if (d.Fixed8() != kFileVersion) return Status::Corruption("unknown file record version");
  f.format = static_cast<formats::Format>(d.Fixed8());
  f.size = d.Fixed64();
  f.refs = d.Fixed32();
  f.note = std::string(d.Bytes());
  uint64_t n = d.Varint();
  if (!d.ok() || n > d.remaining()) return Status::Corruption("malformed file record");
  f.extents.resize(n);
  uint64_t total = 0;
  for (auto& e : f.extents) {
    uint8_t k = d.Fixed8();
    if (k > 1) return Status::Corruption("unknown extent kind");
    e.kind = static_cast<Extent::Kind>(k);
    e.digest = d.DigestValue();
    e.object_offset = d.Varint();
    e.length = d.Varint();
    if (__builtin_add_overflow(total, e.length, &total)) {
      return Status::Corruption("file extents overflow");
    }
  }
  uint64_t nt = d.Varint();
  if (!d.ok() || nt > d.remaining()) return Status::Corruption("malformed file record");
  f.tensors.resize(nt);
  for (auto& t : f.tensors) {
    t.name = std::string(d.Bytes());
    t.dtype = static_cast<formats::DType>(d.Fixed8());
    if (!GetDims(d, &t.shape)) return Status::Corruption("malformed tensor shape");
    t.object = d.DigestValue();
    t.object_offset = d.Varint();
    t.nbytes = d.Varint();
    t.contiguous = d.Fixed8() != 0;
    if (!GetDims(d, &t.stride)) return Status::Corruption("malformed tensor stride");
    t.storage_offset = UnZigZag(d.Varint());
  }
  if (!d.ok() || !d.done()) return Status::Corruption("malformed file record");
  if (total != f.size) return Status::Corruption("file extents do not add up to its size");
  return f;
}

Result<std::optional<TensorObject>> GetTensor(const Txn& txn, const Digest& d) {
  LFS_ASSIGN_OR_RETURN(auto v, txn.Get(Table::kTensors, d.Encode()));
  if (!v) return std::optional<TensorObject>();
  LFS_ASSIGN_OR_RETURN(TensorObject t, TensorObject::Decode(*v));
  return std::optional<TensorObject>(std::move(t));
}

Result<std::optional<FileRecipe>> GetFile(const Txn& txn, const Digest& d) {
  LFS_ASSIGN_OR_RETURN(auto v, txn.Get(Table::kFiles, d.Encode()));
  if (!v) return std::optional<FileRecipe>();
  LFS_ASSIGN_OR_RETURN(FileRecipe f, FileRecipe::Decode(*v));
  return std::optional<FileRecipe>(std::move(f));
}

Result<FileRecipe> LoadFile(const Store& store, const Digest& d) {
  ReadTxn txn(store.db());
  LFS_ASSIGN_OR_RETURN(auto f, GetFile(txn, d));
  if (!f) return Status::NotFound("file object " + d.Hex() + " is not in the store");
  return std::move(*f);
}

Result<TensorObject> LoadTensor(const Store& store, const Digest& d) {
  ReadTxn txn(store.db());
  LFS_ASSIGN_OR_RETURN(auto t, GetTensor(txn, d));
  if (!t) return Status::NotFound("tensor object " + d.Hex() + " is not in the store");
  return std::move(*t);
}

Status AdjustTensorRefs(WriteTxn& txn, const Digest& d, int64_t delta) {
  std::string key = d.Encode();
  LFS_ASSIGN_OR_RETURN(auto t, GetTensor(txn, d));
  if (!t) return Status::Corruption("reference to unknown tensor " + d.Hex());
  int64_t refs = static_cast<int64_t>(t->refs) + delta;
  if (refs < 0) return Status::Corruption("tensor reference count below zero: " + d.Hex());
  if (refs > 0) {
    t->refs = static_cast<uint32_t>(refs);
    return txn.Put(Table::kTensors, key, t->Encode());
  }
  LFS_RETURN_IF_ERROR(txn.Del(Table::kTensors, key));
  for (const auto& c : t->chunks) LFS_RETURN_IF_ERROR(AdjustChunkRefs(txn, c, -1));
  if (t->derivation != Derivation::kNone) {
    LFS_RETURN_IF_ERROR(AdjustTensorRefs(txn, t->derived_from, -1));
  }
  if (!t->derived_from2.empty()) LFS_RETURN_IF_ERROR(AdjustTensorRefs(txn, t->derived_from2, -1));
  return Status::OK();
}

Status AdjustFileRefs(WriteTxn& txn, const Digest& d, int64_t delta) {
  std::string key = d.Encode();
  LFS_ASSIGN_OR_RETURN(auto f, GetFile(txn, d));
  if (!f) return Status::Corruption("reference to unknown file " + d.Hex());
  int64_t refs = static_cast<int64_t>(f->refs) + delta;
  if (refs < 0) return Status::Corruption("file reference count below zero: " + d.Hex());
  if (refs > 0) {
    f->refs = static_cast<uint32_t>(refs);
    return txn.Put(Table::kFiles, key, f->Encode());
  }
  LFS_RETURN_IF_ERROR(txn.Del(Table::kFiles, key));
  for (const auto& e : f->extents) {
    if (e.kind == Extent::Kind::kChunk) {
      LFS_RETURN_IF_ERROR(AdjustChunkRefs(txn, e.digest, -1));
    } else {
      LFS_RETURN_IF_ERROR(AdjustTensorRefs(txn, e.digest, -1));
    }
  }
  return Status::OK();
}

namespace {

uint16_t FloatToBf16(uint32_t x) {
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x40);  // quiet NaN
  uint32_t bias = 0x7fffu + ((x >> 16) & 1u);
  return static_cast<uint16_t>((x + bias) >> 16);
}

uint16_t FloatToHalf(uint32_t x) {
  uint32_t sign = (x >> 16) & 0x8000u;
  uint32_t abs = x & 0x7fffffffu;
  if (abs > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u | ((abs >> 13) & 0x3ffu));
  if (abs >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // overflow -> inf
  if (abs < 0x38800000u) {
    // Subnormal half (or zero): shift the mantissa with round-to-nearest-even.
    if (abs < 0x33000000u) return static_cast<uint16_t>(sign);
    uint32_t exp = abs >> 23;
    uint32_t mant = (abs & 0x7fffffu) | 0x800000u;
    uint32_t shift = 126 - exp;  // 14 + (112 - exp)
    uint32_t half = mant >> shift;
    uint32_t rem = mant & ((1u << shift) - 1);
    uint32_t mid = 1u << (shift - 1);
    if (rem > mid || (rem == mid && (half & 1u))) half++;
    return static_cast<uint16_t>(sign | half);
  }
  uint32_t r = abs - 0x38000000u;  // rebias exponent 127 -> 15
  uint32_t half = r >> 13;
  uint32_t rem = r & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (half & 1u))) half++;
  return static_cast<uint16_t>(sign | half);
}

}  // namespace

bool CastSupported(formats::DType from, formats::DType to) {
  return from == formats::DType::kF32 &&
         (to == formats::DType::kBF16 || to == formats::DType::kF16);
}

bool CastElements(formats::DType from, formats::DType to, const char* src, size_t n, char* dst) {
  if (!CastSupported(from, to)) return false;
  bool bf16 = to == formats::DType::kBF16;
  for (size_t i = 0; i < n; i++) {
    uint32_t x;
    std::memcpy(&x, src + 4 * i, 4);
    uint16_t y = bf16 ? FloatToBf16(x) : FloatToHalf(x);
    std::memcpy(dst + 2 * i, &y, 2);
  }
  return true;
}

namespace {

// Chunks decoded ahead of a sequential reader (1 MiB chunks: the kernel asks
// for 128 KiB-1 MiB at a time, so two ahead keep both cores busy).
constexpr uint64_t kPrefetchChunks = 2;

// [off, off+n) of a tensor's stored chunks (n already clipped to the tensor).
Result<size_t> StoredRefs(Store& store, const TensorObject& t, uint64_t off, size_t n,
                          ReadHint hint, std::vector<ByteRef>* out) {
  const uint64_t first = off / t.chunk_bytes;
  const uint64_t last = (off + n + t.chunk_bytes - 1) / t.chunk_bytes;
  // A reader served partially also wants the chunks it is in decoded whole
  // next, as well as the ones after; asked for once its own bytes are read,
  // so that those decodes (and their bases in flight) do not delay them.
  auto prefetch = [&] {
    const uint64_t from = hint.partial ? first : last;
    for (uint64_t ci = from;
         ci < last + static_cast<uint64_t>(std::max(0, hint.prefetch)) && ci < t.chunks.size();
         ci++) {
      store.Prefetch(t.chunks[ci]);
    }
  };
  if (hint.prefetch > 0 && !hint.partial) prefetch();
  size_t done = 0;
  while (done < n) {
    uint64_t pos = off + done;
    uint64_t ci = pos / t.chunk_bytes;
    uint64_t in_chunk = pos % t.chunk_bytes;
    if (ci >= t.chunks.size()) return Status::Corruption("tensor shorter than its chunk list");
    ChunkPiece piece;
    if (hint.partial) {
      LFS_ASSIGN_OR_RETURN(piece, store.ReadChunkRange(t.chunks[ci], in_chunk, n - done));
    } else {
      LFS_ASSIGN_OR_RETURN(piece.bytes, store.ReadChunk(t.chunks[ci]));
    }
    const uint64_t piece_end = piece.offset + piece.bytes->size();
    if (in_chunk < piece.offset || in_chunk >= piece_end) {
      return Status::Corruption("tensor chunk shorter than expected");
    }
    size_t take = static_cast<size_t>(std::min<uint64_t>(n - done, piece_end - in_chunk));
    const char* p = piece.bytes->data() + (in_chunk - piece.offset);
    out->push_back({std::move(piece.bytes), p, take});
    done += take;
  }
  if (hint.prefetch > 0 && hint.partial) prefetch();
  return done;
}

Result<size_t> ReadStoredBytes(Store& store, const TensorObject& t, uint64_t off, size_t n,
                               char* out) {
  std::vector<ByteRef> refs;
  LFS_ASSIGN_OR_RETURN(size_t got, StoredRefs(store, t, off, n, {kPrefetchChunks, false}, &refs));
  size_t done = 0;
  for (const auto& r : refs) {
    std::memcpy(out + done, r.data, r.size);
    done += r.size;
  }
  return got;
}

}  // namespace

Result<size_t> ObjectReader::ReadTensor(Store& store, const TensorObject& t, uint64_t off, size_t n,
                                        char* out) {
  if (off >= t.nbytes) return size_t{0};
  n = static_cast<size_t>(std::min<uint64_t>(n, t.nbytes - off));
  LFS_ASSIGN_OR_RETURN(size_t got, ReadStoredBytes(store, t, off, n, out));
  if (t.derivation == Derivation::kNone) return got;
  std::string pred(got, '\0');
  LFS_RETURN_IF_ERROR(PredictDerived(store, t, off, got, pred.data()));
  for (size_t i = 0; i < got; i++) out[i] ^= pred[i];
  return got;
}

namespace {

// Reads elements [e0, e1) of a source tensor (elem bytes each) into a buffer.
Status ReadSource(Store& store, const Digest& src, uint64_t e0, uint64_t e1, size_t elem,
                  std::string* out) {
  LFS_ASSIGN_OR_RETURN(TensorObject s, LoadTensor(store, src));
  out->resize(static_cast<size_t>((e1 - e0) * elem));
  LFS_ASSIGN_OR_RETURN(size_t got,
                       ObjectReader::ReadTensor(store, s, e0 * elem, out->size(), out->data()));
  if (got != out->size()) return Status::Corruption("derivation source shorter than its child");
  return Status::OK();
}

float F32At(const std::string& b, size_t i) {
  float f;
  std::memcpy(&f, b.data() + 4 * i, 4);
  return f;
}

// max(amax|x| / qmax, eps) over n fp32 values, as torch computes it: fp32
// division (not a multiply by the reciprocal: that differs in the last bit).
float RowScale(const std::string& b, size_t first, size_t n, uint32_t qmax, float eps) {
  float amax = 0;
  for (size_t i = 0; i < n; i++) amax = std::max(amax, std::fabs(F32At(b, first + i)));
  float s = amax / static_cast<float>(qmax);
  return s < eps ? eps : s;
}

int8_t Quantize(float x, float scale, uint32_t qmax) {
  // rint: the default rounding mode is to nearest, ties to even (torch.round).
  float q = std::rint(x / scale);
  float m = static_cast<float>(qmax);
  q = q < -m ? -m : (q > m ? m : q);
  return static_cast<int8_t>(q);
}

}  // namespace

Status PredictDerived(Store& store, const TensorObject& t, uint64_t off, size_t n, char* out) {
  const size_t to_size = formats::DTypeSize(t.to_dtype);
  const size_t from_size = formats::DTypeSize(t.from_dtype);
  if (to_size == 0 || from_size == 0) return Status::Corruption("derivation of unknown dtype");
  const uint64_t e0 = off / to_size, e1 = (off + n + to_size - 1) / to_size;
  const size_t elems = static_cast<size_t>(e1 - e0);
  std::string pred(elems * to_size, '\0');
  std::string a, b;
  switch (t.derivation) {
    case Derivation::kNone: return Status::InvalidArgument("not a derived tensor");
    case Derivation::kCast:
      LFS_RETURN_IF_ERROR(ReadSource(store, t.derived_from, e0, e1, from_size, &a));
      CastElements(t.from_dtype, t.to_dtype, a.data(), elems, pred.data());
      break;
    case Derivation::kMean2:
      LFS_RETURN_IF_ERROR(ReadSource(store, t.derived_from, e0, e1, 4, &a));
      LFS_RETURN_IF_ERROR(ReadSource(store, t.derived_from2, e0, e1, 4, &b));
      for (size_t i = 0; i < elems; i++) {
        // Two roundings, as torch's 0.5 * a + 0.5 * b (no fused multiply-add:
        // the build targets baseline x86-64/aarch64 without -ffp-contract=fast FMA).
        float ha = 0.5f * F32At(a, i);
        float hb = 0.5f * F32At(b, i);
        float r = ha + hb;
        std::memcpy(pred.data() + 4 * i, &r, 4);
      }
      break;
    case Derivation::kPrune: {
      LFS_RETURN_IF_ERROR(ReadSource(store, t.derived_from, e0, e1, from_size, &a));
      const uint32_t mag_mask = from_size == 4 ? 0x7fffffffu : 0x7fffu;
      for (size_t i = 0; i < elems; i++) {
        uint32_t x = 0;
        std::memcpy(&x, a.data() + from_size * i, from_size);
        if ((x & mag_mask) <= t.threshold) x = 0;
        std::memcpy(pred.data() + from_size * i, &x, from_size);
      }
      break;
    }
    case Derivation::kQuant: {
      float eps, scale;
      std::memcpy(&eps, &t.eps_bits, 4);
      std::memcpy(&scale, &t.scale_bits, 4);
      if (t.row_len == 0) {
        LFS_RETURN_IF_ERROR(ReadSource(store, t.derived_from, e0, e1, 4, &a));
        for (size_t i = 0; i < elems; i++) {
          pred[i] = static_cast<char>(Quantize(F32At(a, i), scale, t.qmax));
        }
        break;
      }
      // Whole rows: each row's scale needs all of it.
      const uint64_t r0 = e0 / t.row_len, r1 = (e1 + t.row_len - 1) / t.row_len;
      if (r1 - r0 > (uint64_t{1} << 32) / t.row_len) {
        return Status::Corruption("kQuant: rows too long");
      }
      LFS_RETURN_IF_ERROR(ReadSource(store, t.derived_from, r0 * t.row_len, r1 * t.row_len, 4, &a));
      for (uint64_t r = r0; r < r1; r++) {
        const size_t first = static_cast<size_t>((r - r0) * t.row_len);
        const float s = RowScale(a, first, static_cast<size_t>(t.row_len), t.qmax, eps);
        for (uint64_t e = std::max(e0, r * t.row_len); e < std::min(e1, (r + 1) * t.row_len); e++) {
          pred[static_cast<size_t>(e - e0)] = static_cast<char>(
              Quantize(F32At(a, static_cast<size_t>(e - r0 * t.row_len)), s, t.qmax));
        }
      }
      break;
    }
    case Derivation::kQScale: {
      float eps;
      std::memcpy(&eps, &t.eps_bits, 4);
      if (elems > (uint64_t{1} << 32) / t.row_len)
        return Status::Corruption("kQScale: rows too long");
      LFS_RETURN_IF_ERROR(ReadSource(store, t.derived_from, e0 * t.row_len, e1 * t.row_len, 4, &a));
      for (size_t r = 0; r < elems; r++) {
        float s = RowScale(a, r * static_cast<size_t>(t.row_len), static_cast<size_t>(t.row_len),
                           t.qmax, eps);
        std::memcpy(pred.data() + 4 * r, &s, 4);
      }
      break;
    }
  }
  std::memcpy(out, pred.data() + (off - e0 * to_size), n);
  return Status::OK();
}

Result<size_t> ObjectReader::TensorRefs(Store& store, const TensorObject& t, uint64_t off, size_t n,
                                        ReadHint hint, std::vector<ByteRef>* out) {
  if (off >= t.nbytes) return size_t{0};
  n = static_cast<size_t>(std::min<uint64_t>(n, t.nbytes - off));
  if (t.derivation == Derivation::kNone) return StoredRefs(store, t, off, n, hint, out);
  // Derived bytes are computed: one buffer of their own.
  auto buf = std::make_shared<std::string>(n, '\0');
  LFS_ASSIGN_OR_RETURN(size_t got, ReadTensor(store, t, off, n, buf->data()));
  buf->resize(got);
  const char* p = buf->data();
  out->push_back({std::move(buf), p, got});
  return got;
}

Result<std::shared_ptr<FileReader>> FileReader::Open(Store& store, const Digest& file) {
  LFS_ASSIGN_OR_RETURN(FileRecipe r, LoadFile(store, file));
  return std::make_shared<FileReader>(store, std::move(r));
}

FileReader::FileReader(Store& store, FileRecipe recipe)
    : store_(store), recipe_(std::move(recipe)) {
  uint64_t pos = 0;
  starts_.reserve(recipe_.extents.size());
  for (const auto& e : recipe_.extents) {
    starts_.push_back(pos);
    pos += e.length;
  }
}

Result<std::shared_ptr<const TensorObject>> FileReader::Tensor(const Digest& d) const {
  {
    std::lock_guard<std::mutex> l(mu_);
    auto it = tensors_.find(d);
    if (it != tensors_.end()) return it->second;
  }
  LFS_ASSIGN_OR_RETURN(TensorObject t, LoadTensor(store_, d));
  auto sp = std::make_shared<const TensorObject>(std::move(t));
  std::lock_guard<std::mutex> l(mu_);
  tensors_[d] = sp;
  return sp;
}

Result<size_t> FileReader::ReadAt(uint64_t off, size_t n, char* out) const {
  return WalkPieces(
      starts_, recipe_.size, off, n, [&](size_t i) { return recipe_.extents[i].length; },
      [&](size_t i, uint64_t in_ext, size_t take, size_t done) -> Status {
        const Extent& e = recipe_.extents[i];
        if (e.kind == Extent::Kind::kChunk) {
          LFS_ASSIGN_OR_RETURN(auto chunk, store_.ReadChunk(e.digest));
          if (e.object_offset > chunk->size() || in_ext + take > chunk->size() - e.object_offset) {
            return Status::Corruption("file extent past the end of its chunk");
          }
          std::memcpy(out + done, chunk->data() + e.object_offset + in_ext, take);
          return Status::OK();
        }
        LFS_ASSIGN_OR_RETURN(auto t, Tensor(e.digest));
        LFS_ASSIGN_OR_RETURN(
            size_t got,
            ObjectReader::ReadTensor(store_, *t, e.object_offset + in_ext, take, out + done));
        if (got != take) return Status::Corruption("tensor object shorter than its file extent");
        return Status::OK();
      });
}

Result<size_t> FileReader::ReadRefs(uint64_t off, size_t n, ReadHint hint,
                                    std::vector<ByteRef>* out) const {
  return WalkPieces(
      starts_, recipe_.size, off, n, [&](size_t i) { return recipe_.extents[i].length; },
      [&](size_t i, uint64_t in_ext, size_t take, size_t) -> Status {
        const Extent& e = recipe_.extents[i];
        if (e.kind == Extent::Kind::kChunk) {
          LFS_ASSIGN_OR_RETURN(auto chunk, store_.ReadChunk(e.digest));
          if (e.object_offset > chunk->size() || in_ext + take > chunk->size() - e.object_offset) {
            return Status::Corruption("file extent past the end of its chunk");
          }
          const char* p = chunk->data() + e.object_offset + in_ext;
          out->push_back({std::move(chunk), p, take});
          return Status::OK();
        }
        LFS_ASSIGN_OR_RETURN(auto t, Tensor(e.digest));
        LFS_ASSIGN_OR_RETURN(
            size_t got,
            ObjectReader::TensorRefs(store_, *t, e.object_offset + in_ext, take, hint, out));
        if (got != take) return Status::Corruption("tensor object shorter than its file extent");
        return Status::OK();
      });
}

}  // namespace lfs
