#include "store/ingest.h"

#include <zlib.h>

#include <algorithm>

#include "store/formats/detect.h"

namespace lfs {

namespace {
std::string ShapeKey(formats::DType dtype, const std::vector<int64_t>& shape) {
  std::string k = std::to_string(static_cast<int>(dtype));
  for (int64_t d : shape) k += "," + std::to_string(d);
  return k;
}
constexpr size_t kChunksPerBatch = 8;  // parallel encode granularity; bounds memory
constexpr size_t kGenericReadBytes = 8 << 20;
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
  out->resize(n);
  return f_->ReadExact(off, n, out->data());
}

void DeltaBases::Add(const TensorRef& t) {
  if (!t.contiguous && t.object_offset != 0) return;
  by_name_[t.name].push_back({t.object, t.dtype});
  by_shape_[ShapeKey(t.dtype, t.shape)].push_back({t.object, t.dtype});
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

  // A bf16/fp16 cast of a parent's fp32 tensor is stored as that cast.
  std::vector<DeltaBases::Base> cands;
  if (opts_.bases) cands = opts_.bases->Candidates(name, dtype, shape);
  for (const auto& c : cands) {
    if (!CastSupported(c.dtype, dtype) || nbytes == 0) continue;
    Hasher cast_hash;
    uint32_t crc = 0;
    LFS_ASSIGN_OR_RETURN(auto derived,
                         TryCast(c, dtype, src, offset, nbytes, &cast_hash, file_hash, &crc));
    if (!derived) continue;
    TensorObject obj = std::move(*derived);
    obj.crc32 = crc;
    Digest d = cast_hash.Finish();
    stats->tensors++;
    LFS_ASSIGN_OR_RETURN(auto existing, FindTensor(d));
    if (existing) {
      for (const auto& ch : obj.chunks) batch_.AddRef(ch, -1);
      stats->tensors_deduped++;
    } else {
      stats->tensors_derived++;
      new_tensors_[d] = std::move(obj);
    }
    tensor_refs_[d] += 1;
    return d;
  }

  // Pick the parent tensor to delta against: by name (then shape), same
  // dtype; with several parents, the one whose first chunk encodes smallest.
  std::optional<TensorObject> base;
  {
    std::string first;
    if (cands.size() > 1 && nbytes > 0) {
      LFS_RETURN_IF_ERROR(src.ReadAt(offset, std::min<uint64_t>(cb, nbytes), &first));
    }
    size_t best_size = SIZE_MAX;
    for (const auto& c : cands) {
      if (c.dtype != dtype) continue;
      auto t = FindTensor(c.object);
      if (!t.ok() || !*t || (*t)->chunk_bytes != cb || (*t)->chunks.empty() ||
          (*t)->derivation != Derivation::kNone) {
        continue;
      }
      if (cands.size() == 1) {
        base = **t;
        break;
      }
      auto braw = batch_.store().ReadChunk((*t)->chunks[0]);
      if (!braw.ok() || (*braw)->size() != first.size()) continue;
      std::string_view bv(**braw);
      codec::EncodeOptions eo;
      eo.elem_width = elem_width;
      size_t sz = codec::Encode(first, eo, &bv).payload.size();
      if (sz < best_size) {
        best_size = sz;
        base = **t;
      }
    }
  }

  Hasher th;
  uLong crc = crc32(0L, Z_NULL, 0);
  TensorObject obj;
  obj.nbytes = nbytes;
  obj.chunk_bytes = cb;
  obj.elem_width = static_cast<uint8_t>(elem_width);
  // Two batches in flight: this thread reads and hashes batch k+1 while the
  // workers encode batch k (FinishChunks then lets it help with the rest).
  std::vector<std::string> spare;
  uint64_t pos = 0, pending_bytes = 0;
  size_t issued = 0;
  bool pending = false;
  auto finish = [&]() -> Status {
    LFS_ASSIGN_OR_RETURN(auto digests, batch_.FinishChunks(&spare));
    obj.chunks.insert(obj.chunks.end(), digests.begin(), digests.end());
    Progress(pending_bytes);
    pending = false;
    return Status::OK();
  };
  while (pos < nbytes) {
    std::vector<OwnedChunk> chunks;
    uint64_t batch_bytes = 0;
    for (size_t k = 0; k < kChunksPerBatch && pos < nbytes; k++) {
      size_t n = static_cast<size_t>(std::min<uint64_t>(cb, nbytes - pos));
      OwnedChunk c;
      if (!spare.empty()) {
        c.raw = std::move(spare.back());
        spare.pop_back();
      }
      LFS_RETURN_IF_ERROR(src.ReadAt(offset + pos, n, &c.raw));
      th.Update(c.raw.data(), n);
      file_hash->Update(c.raw.data(), n);
      crc = crc32(crc, reinterpret_cast<const Bytef*>(c.raw.data()), static_cast<uInt>(n));
      c.elem_width = elem_width;
      if (base && issued < base->chunks.size()) c.base = base->chunks[issued];
      issued++;
      chunks.push_back(std::move(c));
      pos += n;
      batch_bytes += n;
    }
    if (pending) LFS_RETURN_IF_ERROR(finish());
    LFS_RETURN_IF_ERROR(batch_.StartChunks(std::move(chunks)));
    pending = true;
    pending_bytes = batch_bytes;
  }
  if (pending) LFS_RETURN_IF_ERROR(finish());
  obj.crc32 = static_cast<uint32_t>(crc);
  Digest d = th.Finish();
  stats->tensors++;
  LFS_ASSIGN_OR_RETURN(auto existing, FindTensor(d));
  if (existing && existing->nbytes == nbytes) {
    // Stored already (same bytes anywhere in the store): give back our chunk refs.
    for (const auto& c : obj.chunks) batch_.AddRef(c, -1);
    stats->tensors_deduped++;
  } else if (existing) {
    return Status::Corruption("XXH3-128 collision between tensors of different length: " + d.Hex());
  } else {
    new_tensors_[d] = std::move(obj);
  }
  tensor_refs_[d] += 1;
  return d;
}

Result<std::optional<TensorObject>> Ingester::TryCast(
    const DeltaBases::Base& src_base, formats::DType dtype, const formats::RandomAccess& in,
    uint64_t offset, uint64_t nbytes, Hasher* tensor_hash, Hasher* file_hash, uint32_t* crc) {
  LFS_ASSIGN_OR_RETURN(auto srct, FindTensor(src_base.object));
  size_t to_size = formats::DTypeSize(dtype), from_size = formats::DTypeSize(src_base.dtype);
  if (!srct || nbytes % to_size != 0 || srct->nbytes / from_size != nbytes / to_size) {
    return std::optional<TensorObject>();
  }
  const uint32_t cb = opts_.tensor_chunk_bytes;
  TensorObject obj;
  obj.nbytes = nbytes;
  obj.chunk_bytes = cb;
  obj.elem_width = static_cast<uint8_t>(to_size);
  obj.derivation = Derivation::kCast;
  obj.from_dtype = src_base.dtype;
  obj.to_dtype = dtype;
  obj.derived_from = src_base.object;
  uLong c = crc32(0L, Z_NULL, 0);
  std::vector<std::string> residuals(kChunksPerBatch);
  std::string child, from, pred;
  uint64_t pos = 0;
  while (pos < nbytes) {
    std::vector<ChunkRequest> reqs;
    for (size_t k = 0; k < kChunksPerBatch && pos < nbytes; k++) {
      size_t n = static_cast<size_t>(std::min<uint64_t>(cb, nbytes - pos));
      LFS_RETURN_IF_ERROR(in.ReadAt(offset + pos, n, &child));
      size_t elems = n / to_size;
      from.resize(elems * from_size);
      LFS_ASSIGN_OR_RETURN(
          size_t got, ObjectReader::ReadTensor(batch_.store(), *srct, pos / to_size * from_size,
                                               from.size(), from.data()));
      if (got != from.size()) return std::optional<TensorObject>();
      pred.resize(n);
      CastElements(src_base.dtype, dtype, from.data(), elems, pred.data());
      std::string& r = residuals[k];
      r.resize(n);
      size_t nonzero = 0;
      for (size_t i = 0; i < n; i++) {
        r[i] = static_cast<char>(child[i] ^ pred[i]);
        nonzero += r[i] != 0;
      }
      if (pos == 0 && nonzero * 4 > n) {
        // The prediction misses on more than a quarter of the first chunk's
        // bytes: not a cast of this parent; give back what we stored.
        for (const auto& ch : obj.chunks) batch_.AddRef(ch, -1);
        return std::optional<TensorObject>();
      }
      tensor_hash->Update(child.data(), n);
      file_hash->Update(child.data(), n);
      c = crc32(c, reinterpret_cast<const Bytef*>(child.data()), static_cast<uInt>(n));
      reqs.push_back(ChunkRequest{r, static_cast<int>(to_size), {}});
      pos += n;
    }
    LFS_ASSIGN_OR_RETURN(auto digests, batch_.PutChunks(reqs));
    obj.chunks.insert(obj.chunks.end(), digests.begin(), digests.end());
    uint64_t consumed = 0;
    for (auto& r : reqs) consumed += r.raw.size();
    Progress(consumed);
  }
  *crc = static_cast<uint32_t>(c);
  return std::optional<TensorObject>(std::move(obj));
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
