// Format-aware ingest: a file becomes a byte-exact recipe; the tensors of a
// recognised checkpoint become tensor objects, stored once store-wide and
// delta-encoded chunk by chunk against the matching tensors of the parents.
#pragma once

#include <atomic>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "store/chunker.h"
#include "store/objects.h"
#include "store/store.h"

namespace lfs {

// A RandomAccess over a file read through the Env (import sources, spooled drafts).
class EnvFileAccess final : public formats::RandomAccess {
 public:
  static Result<std::unique_ptr<EnvFileAccess>> Open(Env* env, const std::string& path);
  uint64_t Size() const override { return size_; }
  Status ReadAt(uint64_t off, size_t n, std::string* out) const override;

 private:
  EnvFileAccess(std::unique_ptr<RandomAccessFile> f, uint64_t size)
      : f_(std::move(f)), size_(size) {}
  std::unique_ptr<RandomAccessFile> f_;
  uint64_t size_;
  // Readahead already requested up to here: imports read front to back, and
  // asking the kernel for the next tens of MiB keeps the disk busy while the
  // CPU encodes (plain readahead is 128 KiB and waits on every 1 MiB read).
  mutable std::atomic<uint64_t> hinted_{0};
};

// Parent tensors a child's tensors may be delta-encoded against.
class DeltaBases {
 public:
  // Where a base comes from: the version's own earlier files, its
  // predecessor checkpoint, or its parents 0, 1, ... (a merge is the mean of
  // parents 0 and 1, never of a predecessor).
  static constexpr int kOwnFiles = -2;
  static constexpr int kPredecessor = -1;
  struct Base {
    Digest object;
    formats::DType dtype = formats::DType::kUnknown;
    std::vector<int64_t> shape;
    int origin = 0;
  };
  // Call for each tensor of each source, best first.
  void Add(const TensorRef& t, int origin = 0);
  // Candidate base objects for a tensor: same name first, then same dtype+shape.
  std::vector<Base> Candidates(const std::string& name, formats::DType dtype,
                               const std::vector<int64_t>& shape) const;
  // The best parent's tensor of exactly this name, or null.
  const Base* Named(const std::string& name) const;
  bool empty() const { return by_name_.empty(); }

 private:
  std::unordered_map<std::string, std::vector<Base>> by_name_;
  std::map<std::string, std::vector<Base>> by_shape_;
};

struct IngestOptions {
  const DeltaBases* bases = nullptr;
  uint32_t tensor_chunk_bytes = 1 << 20;  // see store/FORMAT.md "Chunk sizes"
  // Bytes read ahead of the encoding workers (memory bound of the pipeline).
  uint64_t max_in_flight_bytes = 32 << 20;
  CdcParams cdc;
  formats::ParseLimits limits;
  std::function<void(const std::string&)> log;        // fallback reasons etc.
  std::function<void(uint64_t bytes_done)> progress;  // called as bytes are consumed
};

struct IngestedFile {
  Digest digest;  // XXH3-128 of the whole file: the file object's key
  uint64_t size = 0;
  formats::Format format = formats::Format::kGeneric;
  std::string note;  // reason a checkpoint-looking file was stored generically
  uint64_t tensors = 0, tensors_deduped = 0, tensors_derived = 0;
};

class Ingester {
 public:
  Ingester(WriteBatch& batch, IngestOptions opts);
  Result<IngestedFile> AddFile(const std::string& name, const formats::RandomAccess& src);
  // Writes the new tensor and file records; run inside WriteBatch::Commit(extra)
  // before anything references the files.
  Status Apply(WriteTxn& txn);

 private:
  Result<Digest> AddTensorData(const std::string& name, formats::DType dtype,
                               const std::vector<int64_t>& shape, const formats::RandomAccess& src,
                               uint64_t offset, uint64_t nbytes, Hasher* file_hash,
                               IngestedFile* stats);
  Status AddGenericBytes(const formats::RandomAccess& src, uint64_t offset, uint64_t nbytes,
                         Hasher* file_hash, std::vector<Extent>* extents);
  Result<std::optional<TensorObject>> FindTensor(const Digest& d);
  // Whether a derivation of parent tensors (proto: everything but the
  // chunks) predicts the tensor's first bytes well enough to store it as
  // that derivation plus the XOR residual.
  Result<bool> ProbeDerivation(const TensorObject& proto, const formats::RandomAccess& in,
                               uint64_t offset, uint64_t nbytes);
  // The derivations worth trying for this tensor, most specific first.
  std::vector<TensorObject> DerivationCandidates(const std::string& name, formats::DType dtype,
                                                 const std::vector<int64_t>& shape,
                                                 const std::vector<DeltaBases::Base>& cands,
                                                 const formats::RandomAccess& src, uint64_t offset,
                                                 uint64_t nbytes);
  void Progress(uint64_t n);
  // A tensor whose batches the workers may still be encoding.
  struct TensorInProgress {
    TensorObject obj;  // chunks and crc32 grow as its batches finish, in order
    Digest digest;     // set once all its bytes were read
    bool read_done = false;
    bool release = false;  // stored already: its chunks' refs are given back
    size_t batches = 0;    // started and not finished
  };
  struct InFlightBatch {
    std::shared_ptr<TensorInProgress> tensor;
    std::vector<size_t> lens;
    uint64_t bytes = 0;
  };
  // Waits for the oldest started batch and files its chunks with its tensor.
  Status FinishOldestBatch();
  Status FinishInFlight();  // all of them: before anything else uses the batch
  void CompleteTensor(TensorInProgress& t);

  std::deque<InFlightBatch> in_flight_;
  uint64_t in_flight_bytes_ = 0;
  Status failed_;                   // a batch that could not be finished: Apply refuses
  std::vector<std::string> spare_;  // chunk buffers handed back by the batch

  WriteBatch& batch_;
  IngestOptions opts_;
  CdcChunker chunker_;
  std::map<Digest, TensorObject> new_tensors_;
  std::map<Digest, int64_t> tensor_refs_;
  std::map<Digest, FileRecipe> new_files_;
  uint64_t bytes_done_ = 0;
};

}  // namespace lfs
