// Objects above chunks: tensor data objects and byte-exact file recipes.
//
// A tensor object is the bytes of one tensor (or one .pt storage record), cut
// into fixed-size chunks from its start so chunk i of a child lines up with
// chunk i of its parent. A file recipe lists extents that concatenate to the
// file's exact bytes: generic chunks (content-defined) or ranges of tensor
// objects. Reference counts: files are counted by versions (lineage), tensors
// by file extents, chunks by tensors, generic extents and delta children.
#pragma once

#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "store/digest.h"
#include "store/formats/format.h"
#include "store/lmdb.h"
#include "store/store.h"

namespace lfs {

// Frozen: how a derived tensor's bytes follow from other tensors'. Chunks
// hold the XOR residual of the bytes against the prediction.
enum class Derivation : uint8_t {
  kNone = 0,
  kCast = 1,    // cast(src, from_dtype -> to_dtype), round to nearest even
  kMean2 = 2,   // F32: 0.5f*a + 0.5f*b per element (linear merge of two parents)
  kPrune = 3,   // src, with +0.0 where |src| <= threshold (magnitude pruning)
  kQuant = 4,   // I8: clamp(rint(src / scale), -qmax, qmax), scale per row or per tensor
  kQScale = 5,  // F32: the kQuant scale of each row: max(amax|row| / qmax, eps)
};

struct TensorObject {
  uint64_t nbytes = 0;
  uint32_t chunk_bytes = 0;
  uint8_t elem_width = 1;
  uint32_t crc32 = 0;  // of the bytes: synthesized zip views need it
  uint32_t refs = 0;
  // Chunks hold the bytes, or for a derived tensor the XOR residual against
  // the prediction (all-zero chunks when the prediction is exact: they dedup
  // to one chunk, so a bf16 cast of a stored fp32 tensor costs ~nothing).
  std::vector<Digest> chunks;
  Derivation derivation = Derivation::kNone;
  formats::DType from_dtype = formats::DType::kUnknown;
  formats::DType to_dtype = formats::DType::kUnknown;
  Digest derived_from;   // holds a reference on that tensor
  Digest derived_from2;  // kMean2's second source (also referenced)
  // Parameters (store/FORMAT.md): kPrune: threshold = |x| bit pattern (sign
  // cleared); kQuant/kQScale: row_len elements per row (kQuant: 0 = one
  // scale, scale_bits, for the whole tensor), qmax, eps_bits (F32).
  uint32_t threshold = 0;
  uint64_t row_len = 0;
  uint32_t qmax = 0;
  uint32_t eps_bits = 0;
  uint32_t scale_bits = 0;

  std::string Encode() const;
  static Result<TensorObject> Decode(std::string_view v);
};

// A named tensor inside a file (for .pt: a view of a storage object).
struct TensorRef {
  std::string name;
  formats::DType dtype = formats::DType::kUnknown;
  std::vector<int64_t> shape;
  Digest object;               // the tensor (or storage) data object
  uint64_t object_offset = 0;  // first byte of this tensor inside the object
  uint64_t nbytes = 0;         // bytes of a contiguous view (0 when not contiguous)
  bool contiguous = true;
  std::vector<int64_t> stride;  // .pt only
  int64_t storage_offset = 0;   // .pt only, elements
};

struct Extent {
  enum class Kind : uint8_t { kChunk = 0, kTensor = 1 };  // frozen
  Kind kind = Kind::kChunk;
  Digest digest;
  uint64_t object_offset = 0;
  uint64_t length = 0;
};

struct FileRecipe {
  formats::Format format = formats::Format::kGeneric;
  uint64_t size = 0;
  uint32_t refs = 0;
  std::string note;  // why a checkpoint-looking file was stored generically
  std::vector<Extent> extents;
  std::vector<TensorRef> tensors;

  std::string Encode() const;
  static Result<FileRecipe> Decode(std::string_view v);
};

Result<std::optional<TensorObject>> GetTensor(const Txn& txn, const Digest& d);
Result<std::optional<FileRecipe>> GetFile(const Txn& txn, const Digest& d);
Result<FileRecipe> LoadFile(const Store& store, const Digest& d);  // own short txn
Result<TensorObject> LoadTensor(const Store& store, const Digest& d);

// Reference changes with cascading release (file -> tensors -> chunks).
Status AdjustFileRefs(WriteTxn& txn, const Digest& file, int64_t delta);
Status AdjustTensorRefs(WriteTxn& txn, const Digest& tensor, int64_t delta);

// Bytes in place: a range inside a cached chunk (or a buffer of their own),
// kept alive by `hold`; a null hold means the reader itself owns the bytes.
// Lets the mount reply straight from the chunk cache, without a copy.
struct ByteRef {
  std::shared_ptr<const std::string> hold;
  const char* data = nullptr;
  size_t size = 0;
};

// How a read is served from chunks that are not cached.
struct ReadHint {
  // Chunks past the range to decode in the background (a sequential reader
  // wants some; a random one wants none).
  int prefetch = 0;
  // Decode only the segments of a kSegmented chunk the range needs, without
  // caching them (a random or a first read: see Store::ReadChunkRange).
  bool partial = false;
};

// Random-access reader of an object's bytes through the chunk cache.
class ObjectReader {
 public:
  // Reads [off, off+n) of a tensor object into out (n bytes, or fewer at EOF).
  static Result<size_t> ReadTensor(Store& store, const TensorObject& t, uint64_t off, size_t n,
                                   char* out);
  // The same bytes as references appended to *out; returns their total.
  static Result<size_t> TensorRefs(Store& store, const TensorObject& t, uint64_t off, size_t n,
                                   ReadHint hint, std::vector<ByteRef>* out);
};

// Writes the prediction of bytes [off, off + n) of a derived tensor into out
// (the reader XORs it with the residual; the writer makes the residual with
// the same function, so what is read back is what was written).
Status PredictDerived(Store& store, const TensorObject& t, uint64_t off, size_t n, char* out);

// The cast predictions of Derivation::kCast (round to nearest even, as torch).
// Converts n elements of `from` at src into `to` at dst; false when unsupported.
bool CastElements(formats::DType from, formats::DType to, const char* src, size_t n, char* dst);
bool CastSupported(formats::DType from, formats::DType to);

// Visits the pieces of a byte sequence laid end to end that cover
// [off, off + n): visit(i, offset in piece i, length, bytes done so far) ->
// Status. starts[i] is where piece i begins (starts[0] == 0), length(i) its
// length, total the sequence's size. Returns the bytes covered (n clipped at
// the end). One walk for every reader of recipes and synthesized files.
template <typename Length, typename Visit>
Result<size_t> WalkPieces(const std::vector<uint64_t>& starts, uint64_t total, uint64_t off,
                          size_t n, Length length, Visit visit) {
  if (off >= total) return size_t{0};
  n = static_cast<size_t>(std::min<uint64_t>(n, total - off));
  size_t i =
      static_cast<size_t>(std::upper_bound(starts.begin(), starts.end(), off) - starts.begin()) - 1;
  size_t done = 0;
  while (done < n && i < starts.size()) {
    uint64_t in = off + done - starts[i];
    size_t take = static_cast<size_t>(std::min<uint64_t>(n - done, length(i) - in));
    LFS_RETURN_IF_ERROR(visit(i, in, take, done));
    done += take;
    i++;
  }
  return done;
}

// Reads a file recipe at any offset; immutable, so safe to share across threads.
class FileReader {
 public:
  static Result<std::shared_ptr<FileReader>> Open(Store& store, const Digest& file);
  FileReader(Store& store, FileRecipe recipe);
  uint64_t size() const { return recipe_.size; }
  const FileRecipe& recipe() const { return recipe_; }
  // Reads up to n bytes at off; returns bytes read (0 at EOF).
  Result<size_t> ReadAt(uint64_t off, size_t n, char* out) const;
  // The same bytes as references appended to *out; returns their total.
  Result<size_t> ReadRefs(uint64_t off, size_t n, ReadHint hint, std::vector<ByteRef>* out) const;

 private:
  Result<std::shared_ptr<const TensorObject>> Tensor(const Digest& d) const;
  Store& store_;
  FileRecipe recipe_;
  std::vector<uint64_t> starts_;  // file offset of each extent
  mutable std::mutex mu_;
  mutable std::map<Digest, std::shared_ptr<const TensorObject>> tensors_;
};

}  // namespace lfs
