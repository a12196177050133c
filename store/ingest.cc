#include "store/ingest.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "store/crc32.h"
#include "store/formats/detect.h"

namespace lfs {

namespace {
std::string ShapeKey(formats::DType dtype, const std::vector<int64_t>& shape) {
  std::string k = std::to_string(static_cast<int>(dtype));
  for (int64_t d : shape) k += "," + std::to_string(d);
  return k;
}
constexpr size_t kChunksPerBatch = 8;  // parallel encode granularity; bounds memory
// Batches started and not finished (IngestOptions::max_in_flight_bytes bounds
// their bytes; this bounds their number when tensors are tiny).
constexpr size_t kMaxInFlightBatches = 64;
constexpr size_t kGenericReadBytes = 8 << 20;

// out = a ^ b over n bytes; returns how many bytes of out are nonzero.
// Word-wise: this runs over every byte of a derived tensor.
size_t XorCountNonzero(const char* a, const char* b, size_t n, char* out) {
  size_t nonzero = 0, i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t x, y;
    std::memcpy(&x, a + i, 8);
    std::memcpy(&y, b + i, 8);
    uint64_t r = x ^ y;
    std::memcpy(out + i, &r, 8);
    // Count nonzero bytes: set the high bit of each nonzero byte, then popcount.
    uint64_t t = (r & 0x7f7f7f7f7f7f7f7fULL) + 0x7f7f7f7f7f7f7f7fULL;
    // One bit per nonzero byte, summed by a multiply (no popcnt in baseline x86-64).
    uint64_t ones = ((t | r) & 0x8080808080808080ULL) >> 7;
    nonzero += static_cast<size_t>((ones * 0x0101010101010101ULL) >> 56);
  }
  for (; i < n; i++) {
    out[i] = static_cast<char>(a[i] ^ b[i]);
    nonzero += out[i] != 0;
  }
  return nonzero;
}
}  // namespace

Result<std::unique_ptr<EnvFileAccess>> EnvFileAccess::Open(Env* env, const std::string& path) {
  LFS_ASSIGN_OR_RETURN(auto f, env->OpenRandomAccess(path));
  LFS_ASSIGN_OR_RETURN(uint64_t size, f->Size());
  return std::unique_ptr<EnvFileAccess>(new EnvFileAccess(std::move(f), size));
}

Status EnvFileAccess::ReadAt(uint64_t off, size_t n, std::string* out) const {
  if (off > size_ || n > size_ - off) {
    return Status::Corruption("read past the end of the file");
  }
  constexpr uint64_t kAhead = 32 << 20;
  uint64_t hinted = hinted_.load(std::memory_order_relaxed);
  // Far behind the window: a new pass (a zip is parsed from its directory at
  // the end, then read from the front).
  const bool behind = off + n + kAhead < hinted;
  if (behind || off + n + kAhead / 2 > hinted) {
    uint64_t from = behind ? off : std::max(hinted, off), to = std::min(size_, off + n + kAhead);
    if (to > from && hinted_.compare_exchange_strong(hinted, to)) f_->WillNeed(from, to - from);
  }
  out->resize(n);
  return f_->ReadExact(off, n, out->data());
}

void DeltaBases::Add(const TensorRef& t, int origin) {
  if (!t.contiguous && t.object_offset != 0) return;
  by_name_[t.name].push_back({t.object, t.dtype, t.shape, origin});
  by_shape_[ShapeKey(t.dtype, t.shape)].push_back({t.object, t.dtype, t.shape, origin});
}

const DeltaBases::Base* DeltaBases::Named(const std::string& name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() || it->second.empty() ? nullptr : &it->second.front();
}

std::vector<DeltaBases::Base> DeltaBases::Candidates(const std::string& name, formats::DType dtype,
                                                     const std::vector<int64_t>& shape) const {
  auto it = by_name_.find(name);
  if (it != by_name_.end()) return it->second;
  auto jt = by_shape_.find(ShapeKey(dtype, shape));
  if (jt != by_shape_.end()) return {jt->second.front()};
  return {};
}

Ingester::Ingester(WriteBatch& batch, IngestOptions opts)
    : batch_(batch), opts_(std::move(opts)), chunker_(opts_.cdc) {}

void Ingester::Progress(uint64_t n) {
  bytes_done_ += n;
  if (opts_.progress) opts_.progress(bytes_done_);
}

Result<std::optional<TensorObject>> Ingester::FindTensor(const Digest& d) {
  auto it = new_tensors_.find(d);
  if (it != new_tensors_.end()) return std::optional<TensorObject>(it->second);
  ReadTxn txn(batch_.store().db());
  return GetTensor(txn, d);
}

Status Ingester::AddGenericBytes(const formats::RandomAccess& src, uint64_t offset, uint64_t nbytes,
                                 Hasher* file_hash, std::vector<Extent>* extents) {
  LFS_RETURN_IF_ERROR(FinishInFlight());
  std::string buf;
  std::string piece;
  uint64_t pos = offset, end = offset + nbytes;
  while (pos < end || !buf.empty()) {
    // Keep at least max_size bytes buffered so every cut is content-defined.
    while (buf.size() < kGenericReadBytes && pos < end) {
      size_t n = static_cast<size_t>(std::min<uint64_t>(kGenericReadBytes, end - pos));
      LFS_RETURN_IF_ERROR(src.ReadAt(pos, n, &piece));
      file_hash->Update(piece.data(), piece.size());
      buf += piece;
      pos += n;
    }
    bool eof = pos >= end;
    std::vector<ChunkRequest> reqs;
    size_t consumed = 0;
    while (consumed < buf.size()) {
      size_t rest = buf.size() - consumed;
      if (!eof && rest < chunker_.params().max_size) break;
      size_t cut =
          chunker_.NextCut(reinterpret_cast<const uint8_t*>(buf.data()) + consumed, rest, eof);
      if (cut == 0) break;
      reqs.push_back(ChunkRequest{std::string_view(buf).substr(consumed, cut), 1, {}});
      consumed += cut;
    }
    if (!reqs.empty()) {
      LFS_ASSIGN_OR_RETURN(auto digests, batch_.PutChunks(reqs));
      for (size_t i = 0; i < digests.size(); i++) {
        extents->push_back(Extent{Extent::Kind::kChunk, digests[i], 0, reqs[i].raw.size()});
      }
    }
    Progress(consumed);
    buf.erase(0, consumed);
    if (eof && buf.empty()) break;
  }
  return Status::OK();
}

Result<Digest> Ingester::AddTensorData(const std::string& name, formats::DType dtype,
                                       const std::vector<int64_t>& shape,
                                       const formats::RandomAccess& src, uint64_t offset,
                                       uint64_t nbytes, Hasher* file_hash, IngestedFile* stats) {
  const uint32_t cb = opts_.tensor_chunk_bytes;
  int elem_width = formats::DTypeIsFloat(dtype) ? static_cast<int>(formats::DTypeSize(dtype)) : 1;
  if (elem_width != 2 && elem_width != 4 && elem_width != 8) elem_width = 1;

  // A tensor that is a function of parent tensors (cast, merge, pruned or
  // quantized copy) is stored as that function plus a residual: the first
  // derivation whose 64 KiB probe predicts the bytes well enough.
  std::vector<DeltaBases::Base> cands;
  if (opts_.bases) cands = opts_.bases->Candidates(name, dtype, shape);
  std::shared_ptr<const TensorObject> derive;
  for (TensorObject& proto : DerivationCandidates(name, dtype, shape, cands, src, offset, nbytes)) {
    LFS_ASSIGN_OR_RETURN(bool hit, ProbeDerivation(proto, src, offset, nbytes));
    if (hit) {
      derive = std::make_shared<const TensorObject>(std::move(proto));
      break;
    }
  }

  // Pick the parent tensor to delta against: by name (then shape), same
  // dtype. With several candidates, those whose chunks are at the delta depth
  // bound drop out (a delta against them goes to their own base instead);
  // among the rest, the one whose first 64 KiB differ from ours in the fewest
  // bytes (a cheap stand-in for the smallest delta).
  std::optional<TensorObject> base;
  if (!derive) {
    // With several candidates, each is compared through the chunk a delta
    // would really be made against: its first chunk, or for one at the depth
    // bound the ancestor PrepareChunk walks up to (found in the index, no
    // decode). Candidates that lead to the same chunk need no comparison.
    Store& store = batch_.store();
    const int max_depth = store.options().max_delta_depth;
    std::vector<std::pair<TensorObject, Digest>> usable;  // candidate, chunk compared
    for (const auto& c : cands) {
      if (c.dtype != dtype) continue;
      auto t = FindTensor(c.object);
      if (!t.ok() || !*t || (*t)->chunk_bytes != cb || (*t)->chunks.empty() ||
          (*t)->derivation != Derivation::kNone) {
        continue;
      }
      Digest probe = (*t)->chunks[0];
      for (int hops = 0; hops <= max_depth + 1; hops++) {
        auto e = store.FindChunk(probe);
        if (!e.ok() || !*e || (*e)->depth < max_depth) break;
        probe = (*e)->base;
      }
      usable.emplace_back(std::move(**t), probe);
    }
    bool same = std::all_of(usable.begin(), usable.end(),
                            [&](const auto& u) { return u.second == usable[0].second; });
    if (!usable.empty() && (same || nbytes == 0)) {
      base = std::move(usable[0].first);
    } else if (!usable.empty()) {
      // The first 64 KiB decide: the one differing from ours in the fewest bytes.
      std::string first, xored;
      LFS_RETURN_IF_ERROR(src.ReadAt(offset, std::min<uint64_t>({cb, nbytes, 64 << 10}), &first));
      xored.resize(first.size());
      size_t best_nonzero = SIZE_MAX;
      for (auto& [t, probe] : usable) {
        auto braw = store.ReadChunk(probe);
        if (!braw.ok() || (*braw)->size() < first.size()) continue;
        size_t nonzero = XorCountNonzero(first.data(), (*braw)->data(), first.size(), xored.data());
        if (nonzero < best_nonzero) {
          best_nonzero = nonzero;
          base = std::move(t);
        }
      }
    }
  }

  Hasher th;
  // This thread reads and hashes while the workers encode the batches
  // already started (up to max_in_flight_bytes ahead, across tensors: most
  // tensors are one batch). The record is completed as they finish
  // (FinishOldestBatch), in the order they were started.
  // An error once batches are started leaves a tensor without its record:
  // nothing of this pass may then be applied.
  auto fail = [this](Status st) {
    if (!st.ok() && !in_flight_.empty()) failed_ = st;
    return st;
  };
  auto tip = std::make_shared<TensorInProgress>();
  if (derive) {
    tip->obj = *derive;
    tip->obj.chunks.clear();
    elem_width = derive->elem_width;  // residual chunks group bytes like the tensor's dtype
  } else {
    tip->obj.nbytes = nbytes;
    tip->obj.chunk_bytes = cb;
    tip->obj.elem_width = static_cast<uint8_t>(elem_width);
  }
  Store* store = &batch_.store();
  uint64_t pos = 0;
  size_t issued = 0;
  while (pos < nbytes) {
    std::vector<OwnedChunk> chunks;
    std::vector<size_t> lens;
    uint64_t batch_bytes = 0;
    for (size_t k = 0; k < kChunksPerBatch && pos < nbytes; k++) {
      size_t n = static_cast<size_t>(std::min<uint64_t>(cb, nbytes - pos));
      OwnedChunk c;
      if (!spare_.empty()) {
        c.raw = std::move(spare_.back());
        spare_.pop_back();
      }
      LFS_RETURN_IF_ERROR(fail(src.ReadAt(offset + pos, n, &c.raw)));
      th.Update(c.raw.data(), n);
      file_hash->Update(c.raw.data(), n);
      c.elem_width = elem_width;
      c.want_crc32 = true;
      if (derive) {
        // On the worker: the residual against the prediction replaces the bytes.
        c.transform = [store, derive, at = pos](char* bytes, size_t len) -> Status {
          std::string pred(len, '\0');
          LFS_RETURN_IF_ERROR(PredictDerived(*store, *derive, at, len, pred.data())
                                  .Annotate("derivation source became unreadable during ingest"));
          XorCountNonzero(bytes, pred.data(), len, bytes);
          return Status::OK();
        };
      } else if (base && issued < base->chunks.size()) {
        c.base = base->chunks[issued];
      }
      issued++;
      chunks.push_back(std::move(c));
      lens.push_back(n);
      pos += n;
      batch_bytes += n;
    }
    while (!in_flight_.empty() && (in_flight_bytes_ + batch_bytes > opts_.max_in_flight_bytes ||
                                   in_flight_.size() >= kMaxInFlightBatches)) {
      LFS_RETURN_IF_ERROR(FinishOldestBatch());
    }
    LFS_RETURN_IF_ERROR(fail(batch_.StartChunks(std::move(chunks))));
    in_flight_.push_back(InFlightBatch{tip, std::move(lens), batch_bytes});
    in_flight_bytes_ += batch_bytes;
    tip->batches++;
  }
  Digest d = th.Finish();
  stats->tensors++;
  auto found = FindTensor(d);
  LFS_RETURN_IF_ERROR(fail(found.status()));
  std::optional<TensorObject> existing = std::move(*found);
  if (existing && existing->nbytes == nbytes) {
    // Stored already (same bytes anywhere in the store): our chunk refs are
    // given back as the batches finish.
    tip->release = true;
    stats->tensors_deduped++;
  } else if (existing) {
    LFS_RETURN_IF_ERROR(FinishInFlight());  // nothing may be left running
    return fail(
        Status::Corruption("XXH3-128 collision between tensors of different length: " + d.Hex()));
  } else {
    TensorObject rec = tip->obj;  // its chunks and crc32 are filled in as batches finish
    new_tensors_[d] = std::move(rec);
    if (derive) stats->tensors_derived++;
  }
  tip->digest = d;
  tip->read_done = true;
  if (tip->batches == 0) CompleteTensor(*tip);
  tensor_refs_[d] += 1;
  return d;
}

Status Ingester::FinishOldestBatch() {
  InFlightBatch b = std::move(in_flight_.front());
  in_flight_.pop_front();
  in_flight_bytes_ -= b.bytes;
  std::vector<uint32_t> crcs;
  auto finished = batch_.FinishChunks(&spare_, &crcs);
  // Enough buffers for what may be in flight, no more.
  const size_t keep =
      static_cast<size_t>(opts_.max_in_flight_bytes / opts_.tensor_chunk_bytes) + kChunksPerBatch;
  if (spare_.size() > keep) spare_.resize(keep);
  if (!finished.ok()) {
    // A tensor's record would lack chunks: nothing of this pass may be applied.
    failed_ = finished.status();
    return failed_;
  }
  TensorInProgress& t = *b.tensor;
  t.obj.chunks.insert(t.obj.chunks.end(), finished->begin(), finished->end());
  for (size_t i = 0; i < crcs.size(); i++)
    t.obj.crc32 = Crc32Combine(t.obj.crc32, crcs[i], b.lens[i]);
  t.batches--;
  Progress(b.bytes);
  if (t.read_done && t.batches == 0) CompleteTensor(t);
  return Status::OK();
}

void Ingester::CompleteTensor(TensorInProgress& t) {
  if (t.release) {
    for (const auto& c : t.obj.chunks) batch_.AddRef(c, -1);
    return;
  }
  TensorObject& rec = new_tensors_.at(t.digest);
  rec.chunks = std::move(t.obj.chunks);
  rec.crc32 = t.obj.crc32;
}

Status Ingester::FinishInFlight() {
  while (!in_flight_.empty()) LFS_RETURN_IF_ERROR(FinishOldestBatch());
  return Status::OK();
}

namespace {

// A committed tensor's record, or nullopt (a source must be readable).
std::optional<TensorObject> Committed(Store& store, const Digest& d) {
  auto t = LoadTensor(store, d);
  if (!t.ok()) return std::nullopt;
  return std::move(*t);
}

uint64_t Numel(const std::vector<int64_t>& shape) {
  uint64_t n = 1;
  for (int64_t d : shape) n *= static_cast<uint64_t>(std::max<int64_t>(d, 0));
  return n;
}

constexpr float kQuantEps = 1e-12f;

// Whether at least 1/8 of the elements at the tensor's start are all-zero
// bytes: a cheap look (64 KiB) before the full pass a pruned copy needs.
bool MostlyZeros(const formats::RandomAccess& src, uint64_t offset, uint64_t nbytes, size_t width) {
  std::string head;
  size_t n = static_cast<size_t>(std::min<uint64_t>(nbytes, 64 << 10)) / width * width;
  if (n == 0 || !src.ReadAt(offset, n, &head).ok()) return false;
  size_t zeros = 0;
  for (size_t i = 0; i < n; i += width) {
    bool zero = true;
    for (size_t k = 0; k < width; k++) zero &= head[i + k] == 0;
    zeros += zero;
  }
  return zeros * 8 >= n / width;
}  // torch's clamp(min=1e-12) in the usual recipe

}  // namespace

std::vector<TensorObject> Ingester::DerivationCandidates(const std::string& name,
                                                         formats::DType dtype,
                                                         const std::vector<int64_t>& shape,
                                                         const std::vector<DeltaBases::Base>& cands,
                                                         const formats::RandomAccess& src,
                                                         uint64_t offset, uint64_t nbytes) {
  using formats::DType;
  std::vector<TensorObject> out;
  if (nbytes == 0 || !opts_.bases) return out;
  Store& store = batch_.store();
  const size_t width = formats::DTypeSize(dtype);
  if (width == 0 || nbytes % width != 0) return out;
  const uint64_t numel = nbytes / width;
  TensorObject proto;
  proto.nbytes = nbytes;
  proto.chunk_bytes = opts_.tensor_chunk_bytes;
  proto.elem_width = static_cast<uint8_t>(width);
  proto.to_dtype = dtype;
  auto sized = [&](const DeltaBases::Base& c) {
    auto t = Committed(store, c.object);
    size_t w = formats::DTypeSize(c.dtype);
    return t && w != 0 && t->derivation == Derivation::kNone && t->nbytes == numel * w;
  };
  for (const auto& c : cands) {
    if (CastSupported(c.dtype, dtype) && sized(c)) {
      TensorObject p = proto;
      p.derivation = Derivation::kCast;
      p.from_dtype = c.dtype;
      p.derived_from = c.object;
      out.push_back(p);
    }
  }
  // A merge: the mean of the first two parents' tensors (not of a parent and
  // a predecessor checkpoint: trying that on every tensor of a model's next
  // checkpoint decoded both sources' first chunks for nothing).
  const DeltaBases::Base* p0 = nullptr;
  const DeltaBases::Base* p1 = nullptr;
  for (const auto& c : cands) {
    if (c.origin == 0 && !p0) p0 = &c;
    if (c.origin == 1 && !p1) p1 = &c;
  }
  if (dtype == DType::kF32 && p0 && p1 && p0->dtype == DType::kF32 && p1->dtype == DType::kF32 &&
      p0->object != p1->object && sized(*p0) && sized(*p1)) {
    TensorObject p = proto;
    p.derivation = Derivation::kMean2;
    p.from_dtype = DType::kF32;
    p.derived_from = p0->object;
    p.derived_from2 = p1->object;
    out.push_back(p);
  }
  if (!cands.empty() && sized(cands[0])) {
    const DeltaBases::Base& c = cands[0];
    // Magnitude pruning: the threshold is the largest |parent| the child zeroed.
    if (c.dtype == dtype && (width == 2 || width == 4) && MostlyZeros(src, offset, nbytes, width)) {
      const uint32_t mag_mask = width == 4 ? 0x7fffffffu : 0x7fffu;
      auto parent = Committed(store, c.object);
      struct ChunkScan {
        bool ok = false;
        uint32_t threshold = 0;
        uint64_t zeroed = 0, kept_other = 0, seen = 0;
      };
      auto scan = [&](uint64_t pos) {
        ChunkScan r;
        size_t n = static_cast<size_t>(std::min<uint64_t>(proto.chunk_bytes, nbytes - pos));
        std::string child, par(n, '\0');
        auto got = ObjectReader::ReadTensor(store, *parent, pos, n, par.data());
        if (!src.ReadAt(offset + pos, n, &child).ok() || !got.ok() || *got != n) return r;
        for (size_t i = 0; i < n; i += width) {
          uint32_t x = 0, y = 0;
          std::memcpy(&x, child.data() + i, width);
          std::memcpy(&y, par.data() + i, width);
          if (x == 0 && y != 0) {
            r.threshold = std::max(r.threshold, y & mag_mask);
            r.zeroed++;
          } else if (x != y) {
            r.kept_other++;
          }
        }
        r.seen = n / width;
        r.ok = true;
        return r;
      };
      // Decided by the first chunk: mostly zeroed or copied, or not a prune;
      // the rest (for the threshold) on all cores.
      ChunkScan first = parent ? scan(0) : ChunkScan{};
      bool ok = first.ok && first.zeroed * 8 >= first.seen && first.kept_other * 8 <= first.seen;
      uint32_t threshold = first.threshold;
      const uint64_t nchunks = (nbytes + proto.chunk_bytes - 1) / proto.chunk_bytes;
      if (ok && nchunks > 1) {
        std::vector<ChunkScan> rest(nchunks - 1);
        store.ParallelFor(rest.size(),
                          [&](size_t i) { rest[i] = scan((i + 1) * uint64_t{proto.chunk_bytes}); });
        for (const auto& r : rest) {
          ok &= r.ok;
          threshold = std::max(threshold, r.threshold);
        }
      }
      if (ok) {
        TensorObject p = proto;
        p.derivation = Derivation::kPrune;
        p.from_dtype = dtype;
        p.derived_from = c.object;
        p.threshold = threshold;
        out.push_back(p);
      }
    }
    // int8 quantization of an fp32 parent: per row (output channel) first,
    // then one scale for the whole tensor.
    if (dtype == DType::kI8 && c.dtype == DType::kF32) {
      std::string first;
      if (src.ReadAt(offset, static_cast<size_t>(std::min<uint64_t>(nbytes, proto.chunk_bytes)),
                     &first)
              .ok()) {
        uint32_t qmax = 0;
        for (char q : first) qmax = std::max<uint32_t>(qmax, std::abs(static_cast<int>(q)));
        qmax = std::min<uint32_t>(qmax, 127);
        TensorObject p = proto;
        p.derivation = Derivation::kQuant;
        p.from_dtype = DType::kF32;
        p.derived_from = c.object;
        p.qmax = qmax;
        std::memcpy(&p.eps_bits, &kQuantEps, 4);
        if (qmax > 0 && shape.size() >= 2 && shape[0] > 0 && numel % shape[0] == 0 &&
            numel / static_cast<uint64_t>(shape[0]) > 1) {
          p.row_len = numel / static_cast<uint64_t>(shape[0]);
          out.push_back(p);
        }
        // Per tensor: the scale needs one pass over the parent.
        auto parent = Committed(store, c.object);
        const uint64_t piece = 4 * uint64_t{proto.chunk_bytes};
        const size_t pieces = static_cast<size_t>((parent->nbytes + piece - 1) / piece);
        std::vector<float> piece_amax(pieces, 0.0f);
        std::vector<char> piece_ok(pieces, 0);
        if (qmax > 0) {
          store.ParallelFor(pieces, [&](size_t k) {
            uint64_t pos = k * piece;
            size_t n = static_cast<size_t>(std::min<uint64_t>(piece, parent->nbytes - pos));
            std::string par(n, '\0');
            auto got = ObjectReader::ReadTensor(store, *parent, pos, n, par.data());
            if (!got.ok() || *got != n) return;
            float m = 0;
            for (size_t i = 0; i + 4 <= n; i += 4) {
              float f;
              std::memcpy(&f, par.data() + i, 4);
              m = std::max(m, std::fabs(f));
            }
            piece_amax[k] = m;
            piece_ok[k] = 1;
          });
        }
        bool ok = qmax > 0;
        float amax = 0;
        for (size_t k = 0; k < pieces; k++) {
          ok &= piece_ok[k] != 0;
          amax = std::max(amax, piece_amax[k]);
        }
        if (ok) {
          float scale = amax / static_cast<float>(qmax);
          if (scale < kQuantEps) scale = kQuantEps;
          p.row_len = 0;
          std::memcpy(&p.scale_bits, &scale, 4);
          out.push_back(p);
        }
      }
    }
  }
  // The per-row scales of a quantized parent tensor, named "<tensor>.scale".
  const std::string kScale = ".scale";
  if (dtype == DType::kF32 && name.size() > kScale.size() &&
      name.compare(name.size() - kScale.size(), kScale.size(), kScale) == 0) {
    const DeltaBases::Base* w = opts_.bases->Named(name.substr(0, name.size() - kScale.size()));
    if (w && w->dtype == DType::kF32 && w->shape.size() >= 2 && w->shape[0] > 0 &&
        static_cast<uint64_t>(w->shape[0]) == numel) {
      uint64_t wn = Numel(w->shape);
      auto t = Committed(store, w->object);
      if (t && t->derivation == Derivation::kNone && t->nbytes == wn * 4 && wn % numel == 0) {
        TensorObject p = proto;
        p.derivation = Derivation::kQScale;
        p.from_dtype = DType::kF32;
        p.derived_from = w->object;
        p.row_len = wn / numel;
        p.qmax = 127;
        std::memcpy(&p.eps_bits, &kQuantEps, 4);
        out.push_back(p);
      }
    }
  }
  return out;
}

Result<bool> Ingester::ProbeDerivation(const TensorObject& proto, const formats::RandomAccess& in,
                                       uint64_t offset, uint64_t nbytes) {
  // The prediction must match at least 3/4 of the bytes: of the first 64 KiB
  // (a miss, the usual outcome, then costs next to nothing), then of the whole
  // first chunk (which also reads every source chunk it needs: an unreadable
  // source sends the tensor down the plain path).
  std::string child, pred, residual;
  for (uint64_t len : {uint64_t{64} << 10, uint64_t{proto.chunk_bytes}}) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(nbytes, len));
    if (n == 0) return false;
    pred.assign(n, '\0');
    residual.assign(n, '\0');
    LFS_RETURN_IF_ERROR(in.ReadAt(offset, n, &child));
    if (!PredictDerived(batch_.store(), proto, 0, n, pred.data()).ok()) return false;
    if (XorCountNonzero(child.data(), pred.data(), n, residual.data()) * 4 > n) return false;
    if (n == nbytes) break;
  }
  return true;
}

Result<IngestedFile> Ingester::AddFile(const std::string& name, const formats::RandomAccess& src) {
  IngestedFile out;
  out.size = src.Size();
  formats::ParsedFile parsed;
  auto pr = formats::ParseAny(name, src, opts_.limits);
  if (pr.ok()) {
    parsed = std::move(pr).value();
  } else {
    out.note = pr.status().message();
    if (opts_.log) {
      opts_.log(name + ": stored as generic bytes: " + out.note);
    }
  }
  out.format = parsed.format;

  // Name each data range after the first tensor that lives in it.
  std::map<std::string, const formats::TensorSpan*> span_of_key;
  for (const auto& t : parsed.tensors) {
    std::string key = t.storage_key.empty() ? t.name : t.storage_key;
    span_of_key.emplace(key, &t);
  }

  FileRecipe recipe;
  recipe.format = parsed.format;
  recipe.size = out.size;
  recipe.note = out.note;
  Hasher file_hash;
  std::map<std::string, Digest> object_of_key;
  uint64_t pos = 0;
  for (const auto& r : parsed.ranges) {
    if (r.offset > pos) {
      LFS_RETURN_IF_ERROR(AddGenericBytes(src, pos, r.offset - pos, &file_hash, &recipe.extents));
    }
    auto it = span_of_key.find(r.key);
    const formats::TensorSpan* span = it == span_of_key.end() ? nullptr : it->second;
    std::string tname = span ? span->name : r.key;
    std::vector<int64_t> shape = span ? span->shape : std::vector<int64_t>{};
    LFS_ASSIGN_OR_RETURN(
        Digest d, AddTensorData(tname, r.dtype, shape, src, r.offset, r.nbytes, &file_hash, &out));
    object_of_key[r.key] = d;
    // Zero-length too: the extent carries the reference the tensor was counted with.
    recipe.extents.push_back(Extent{Extent::Kind::kTensor, d, 0, r.nbytes});
    pos = r.offset + r.nbytes;
  }
  if (pos < out.size) {
    LFS_RETURN_IF_ERROR(AddGenericBytes(src, pos, out.size - pos, &file_hash, &recipe.extents));
  }
  LFS_RETURN_IF_ERROR(FinishInFlight());
  // Tensor index of the file.
  std::map<std::string, uint64_t> range_offset;
  for (const auto& r : parsed.ranges) range_offset[r.key] = r.offset;
  for (const auto& t : parsed.tensors) {
    std::string key = t.storage_key.empty() ? t.name : t.storage_key;
    auto ot = object_of_key.find(key);
    if (ot == object_of_key.end()) continue;
    TensorRef ref;
    ref.name = t.name;
    ref.dtype = t.dtype;
    ref.shape = t.shape;
    ref.object = ot->second;
    ref.stride = t.stride;
    ref.storage_offset = t.storage_offset;
    uint64_t numel = 1;
    for (int64_t d : t.shape) numel *= static_cast<uint64_t>(std::max<int64_t>(d, 0));
    uint64_t want = numel * formats::DTypeSize(t.dtype);
    ref.contiguous = t.nbytes == want && t.offset >= range_offset[key];
    ref.object_offset = ref.contiguous ? t.offset - range_offset[key] : 0;
    ref.nbytes = ref.contiguous ? t.nbytes : 0;
    recipe.tensors.push_back(std::move(ref));
  }
  out.digest = file_hash.Finish();

  auto pending = new_files_.find(out.digest);
  bool exists = pending != new_files_.end();
  if (!exists) {
    ReadTxn txn(batch_.store().db());
    LFS_ASSIGN_OR_RETURN(auto f, GetFile(txn, out.digest));
    if (f && f->size != out.size) {
      return Status::Corruption("XXH3-128 collision between files of different length");
    }
    exists = f.has_value();
  }
  if (exists) {
    // The same file is stored already: release what this pass referenced.
    for (const auto& e : recipe.extents) {
      if (e.kind == Extent::Kind::kChunk) {
        batch_.AddRef(e.digest, -1);
      } else {
        tensor_refs_[e.digest] -= 1;
      }
    }
  } else {
    new_files_[out.digest] = std::move(recipe);
  }
  return out;
}

Status Ingester::Apply(WriteTxn& txn) {
  if (!in_flight_.empty()) {
    return Status::InvalidArgument("Apply while tensors are still being encoded");
  }
  LFS_RETURN_IF_ERROR(failed_);
  for (const auto& [d, t] : new_tensors_) {
    LFS_ASSIGN_OR_RETURN(auto existing, GetTensor(txn, d));
    if (existing) {
      // Another writer stored it between our lookup and now: use theirs.
      for (const auto& c : t.chunks) LFS_RETURN_IF_ERROR(AdjustChunkRefs(txn, c, -1));
      continue;
    }
    TensorObject rec = t;
    rec.refs = 0;
    LFS_RETURN_IF_ERROR(txn.Put(Table::kTensors, d.Encode(), rec.Encode()));
    if (rec.derivation != Derivation::kNone) {
      LFS_RETURN_IF_ERROR(AdjustTensorRefs(txn, rec.derived_from, +1));
    }
    if (!rec.derived_from2.empty()) {
      LFS_RETURN_IF_ERROR(AdjustTensorRefs(txn, rec.derived_from2, +1));
    }
  }
  for (const auto& [d, f] : new_files_) {
    LFS_ASSIGN_OR_RETURN(auto existing, GetFile(txn, d));
    if (existing) {
      for (const auto& e : f.extents) {
        if (e.kind == Extent::Kind::kChunk) {
          LFS_RETURN_IF_ERROR(AdjustChunkRefs(txn, e.digest, -1));
        } else {
          tensor_refs_[e.digest] -= 1;
        }
      }
      continue;
    }
    FileRecipe rec = f;
    rec.refs = 0;
    LFS_RETURN_IF_ERROR(txn.Put(Table::kFiles, d.Encode(), rec.Encode()));
  }
  for (const auto& [d, delta] : tensor_refs_) {
    if (delta > 0) LFS_RETURN_IF_ERROR(AdjustTensorRefs(txn, d, delta));
  }
  for (const auto& [d, delta] : tensor_refs_) {
    if (delta < 0) LFS_RETURN_IF_ERROR(AdjustTensorRefs(txn, d, delta));
  }
  for (const auto& [d, t] : new_tensors_) {
    auto it = tensor_refs_.find(d);
    if (it == tensor_refs_.end() || it->second == 0) {
      LFS_ASSIGN_OR_RETURN(auto rec, GetTensor(txn, d));
      if (rec && rec->refs == 0) LFS_RETURN_IF_ERROR(AdjustTensorRefs(txn, d, 0));
    }
  }
  return Status::OK();
}

}  // namespace lfs
