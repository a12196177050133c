// The chunk store: content-addressed, deduplicated, compressed chunks in
// immutable pack files, indexed in LMDB.
//
// Concurrency: any number of reader threads and processes; one writer at a
// time across processes (a WriteBatch holds an exclusive flock on STORE/LOCK
// from BeginWrite until Commit/Abort). LMDB serialises its own write
// transactions too; the flock additionally covers appending to the active pack.
//
// Write protocol (crash safety): chunk frames are appended to the active pack
// and fdatasync'd (and the packs directory fsync'd when a pack was created)
// before the one LMDB transaction that makes them reachable commits. Bytes
// past a pack's committed length are a torn tail: the next writer cuts them.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "store/codec.h"
#include "store/digest.h"
#include "store/env.h"
#include "store/lmdb.h"
#include "store/status.h"

namespace lfs {

struct StoreOptions {
  Env* env = nullptr;                     // nullptr: Env::Default()
  uint64_t pack_target_bytes = 64 << 20;  // a pack is sealed once it reaches this size
  size_t cache_bytes = 256 << 20;         // decoded-chunk cache
  int max_delta_depth = 3;                // a read decodes at most this + 1 chunks
  int encode_threads = 0;                 // worker threads (0: one per core); callers help too
  bool read_only = false;
  uint64_t map_size = 1ull << 40;
};

// A chunk index entry (table "chunks", key = 17-byte digest).
struct ChunkEntry {
  uint64_t pack_id = 0;
  uint64_t offset = 0;     // of the frame in the pack
  uint32_t frame_len = 0;  // header + payload + trailer
  uint32_t raw_len = 0;
  codec::CodecId codec = codec::CodecId::kRaw;
  uint8_t elem_width = 1;
  uint8_t depth = 0;  // delta chain length below this chunk (0: standalone)
  uint32_t refs = 0;
  Digest base;  // delta base: kXorDelta, or kSegmented with XOR segments; else empty

  std::string Encode() const;
  static Result<ChunkEntry> Decode(std::string_view v);
};

struct PackEntry {
  uint64_t length = 0;  // committed length: bytes past it are a torn tail
  bool sealed = false;
  std::string Encode() const;
  static Result<PackEntry> Decode(std::string_view v);
};

// Applies a reference-count change to a chunk inside txn. A chunk whose count
// reaches zero leaves the index (its bytes become dead space for gc) and
// releases its delta base in turn.
Status AdjustChunkRefs(WriteTxn& txn, const Digest& d, int64_t delta);

class Store;

// Some bytes of a chunk: bytes[0] is the chunk's byte `offset`.
struct ChunkPiece {
  std::shared_ptr<const std::string> bytes;
  uint64_t offset = 0;
};

struct ChunkRequest {
  std::string_view raw;
  int elem_width = 1;
  std::optional<Digest> base;  // a committed chunk to try a lossless delta against
};

// A chunk handed over to the batch (StartChunks): its bytes live in the batch
// while the workers encode it.
struct OwnedChunk {
  std::string raw;
  int elem_width = 1;
  std::optional<Digest> base;
  bool want_crc32 = false;  // FinishChunks reports the zlib crc32 of raw (done on a worker)
  // Run on the worker after the crc32 and before encoding: rewrites raw in
  // place (same length), e.g. into its residual against a prediction. Such a
  // chunk is never cached as a future delta base.
  std::function<Status(char* bytes, size_t len)> transform;
};

class WriteBatch {
 public:
  ~WriteBatch();  // aborts when not committed
  // Stores each chunk unless already present (in the index or this batch) and
  // adds one reference to it. Encoding runs on the store's worker threads;
  // frames are appended in request order.
  Result<std::vector<Digest>> PutChunks(const std::vector<ChunkRequest>& reqs);
  Result<Digest> PutChunk(std::string_view raw, int elem_width, std::optional<Digest> base = {});
  // Stores a chunk from an encoded frame another store wrote (sync), verbatim
  // unless its delta chain would exceed max_delta_depth here (then it is
  // re-encoded standalone). Never trusts the frame: checksum, header address
  // and the hash of the decoded bytes are verified first (Corruption). Its
  // delta base must be in the index or in this batch. Adds no reference: the
  // caller counts it with AddRef. Returns false when the chunk is present.
  Result<bool> PutFrame(const Digest& d, std::string_view frame);
  // PutChunks in two halves, so the caller can read the next chunks while the
  // workers encode these: StartChunks returns at once; FinishChunks waits for
  // the oldest set started, appends it and returns its digests (and hands the
  // chunks' buffers back into *recycled when given). Several sets may be
  // pending; they are appended in the order they were started.
  Status StartChunks(std::vector<OwnedChunk> chunks);
  Result<std::vector<Digest>> FinishChunks(std::vector<std::string>* recycled = nullptr,
                                           std::vector<uint32_t>* crc32s = nullptr);
  // Further reference changes, applied at commit.
  void AddRef(const Digest& d, int64_t delta);
  // Makes everything durable and reachable atomically; `extra` runs inside the
  // same LMDB transaction (for tensor/file/version records).
  Status Commit(const std::function<Status(WriteTxn&)>& extra = nullptr);
  void Abort();
  Store& store() { return *store_; }
  uint64_t bytes_appended() const { return bytes_appended_; }
  uint64_t chunks_new() const { return chunks_new_; }
  uint64_t chunks_dedup() const { return chunks_dedup_; }

 private:
  friend class Store;
  explicit WriteBatch(Store* s);
  // Gc: copies an encoded frame verbatim into the current pack and records
  // the chunk's new location (refs are kept from the index at commit).
  Status MoveFrame(const Digest& d, std::string_view frame, const ChunkEntry& e);
  Status StartPackIfNeeded();
  // Appends a verified frame as a new chunk of this batch.
  Status AppendNewFrame(const Digest& d, std::string_view frame, ChunkEntry e);
  // Decoded bytes and chain depth of a chunk in the index or in this batch.
  Result<std::shared_ptr<const std::string>> RawForBase(const Digest& d, int hops, uint8_t* depth);
  void WaitPending();

 public:
  struct Prepared;  // one chunk after stage 1 (chunk_store.cc)
 private:
  struct Pending;
  Result<std::vector<Digest>> AppendPrepared(std::vector<Prepared>& prep);
  std::deque<std::unique_ptr<Pending>> pending_;  // started, in order
  struct Impl;
  Store* store_;
  std::unique_ptr<Impl> impl_;
  uint64_t bytes_appended_ = 0, chunks_new_ = 0, chunks_dedup_ = 0;
};

struct CacheStats {
  uint64_t hits = 0, misses = 0, bytes = 0, capacity = 0;
  uint64_t loads = 0;          // chunks read from packs and decoded (one per miss, at best)
  uint64_t partial_loads = 0;  // ReadChunkRange calls served by decoding segments
};

struct GcOptions {
  double min_live_fraction = 0.5;  // sealed packs below this are rewritten
};
struct GcStats {
  uint64_t packs_rewritten = 0, packs_deleted = 0, bytes_reclaimed = 0, orphan_files_removed = 0;
};

struct ChunkProblem {
  Digest digest;
  std::string problem;
};

class Store {
 public:
  static Status Create(const std::string& path, const StoreOptions& opts = {});
  static Result<std::unique_ptr<Store>> Open(const std::string& path,
                                             const StoreOptions& opts = {});
  ~Store();

  const std::string& path() const { return path_; }
  const Db& db() const { return *db_; }
  const StoreOptions& options() const { return opts_; }
  Env* env() const { return env_; }

  // Verified bytes of a chunk: a mismatch with its address is Corruption.
  Result<std::shared_ptr<const std::string>> ReadChunk(const Digest& d);
  Result<std::optional<ChunkEntry>> FindChunk(const Digest& d) const;
  // Verified bytes covering at least [off, off+n) of a chunk (n clipped to
  // it). The whole chunk (ReadChunk) when it is cached, not kSegmented, or the
  // range spans half of it, or it is being decoded whole (then this waits for
  // it); otherwise only the segments holding the range,
  // read and decoded on this thread, each checked against its own checksum,
  // and not cached: a random reader's kernel page cache keeps what it read.
  // Any failure there falls back to ReadChunk (which says precisely what).
  Result<ChunkPiece> ReadChunkRange(const Digest& d, uint64_t off, size_t n);

  // Takes the cross-process writer lock (blocking).
  Result<std::unique_ptr<WriteBatch>> BeginWrite();

  // Rewrites sealed packs whose live fraction is low; removes pack files that
  // no committed state references. Takes the writer lock.
  Status Gc(const GcOptions& opts, GcStats* stats);
  // Reads and verifies every indexed chunk and every pack; appends problems.
  Status VerifyChunks(std::vector<ChunkProblem>* problems, uint64_t* chunks_checked);

  // Decodes a chunk into the cache in the background (sequential readers ask
  // for the next chunks while the kernel still consumes the current one).
  // Best effort: dropped when the queue is full or the chunk is cached.
  void Prefetch(const Digest& d);

  CacheStats cache_stats() const;
  void DropCache();
  // Total bytes in pack files (committed lengths) and live frame bytes.
  Status PackUsage(uint64_t* pack_bytes, uint64_t* live_bytes) const;

  // Internal (WriteBatch): a chunk just encoded goes into the decoded cache,
  // since the next checkpoint of a model is delta-encoded against it (saves
  // decoding it back through its own delta chain).
  void CacheFresh(const Digest& d, std::string_view raw);
  // Internal (WriteBatch): reads a frame without the cache.
  Result<std::string> ReadFrame(const ChunkEntry& e) const;
  std::string PackPath(uint64_t id) const;
  class WorkerPool;
  WorkerPool& workers() { return *workers_; }
  // Runs fn(0..n-1) on the worker threads and the caller; returns when all are done.
  void ParallelFor(size_t n, const std::function<void(size_t)>& fn);

 private:
  Store() = default;
  Result<std::shared_ptr<const std::string>> ReadChunkDepth(const Digest& d, int depth);
  // fsck: a kSegmented chunk's frame checksum and segment checksums against
  // its verified bytes.
  Status VerifySegments(const Digest& d, const std::string& raw);
  Result<ChunkPiece> ReadChunkRangeDepth(const Digest& d, uint64_t off, size_t n, int depth);
  Result<ChunkPiece> ReadSegments(const Digest& d, const ChunkEntry& e, uint64_t off, size_t n,
                                  int depth);
  // Reads, decodes and verifies a chunk, then caches it (no in-flight check).
  Result<std::shared_ptr<const std::string>> LoadChunk(const Digest& d, int depth);
  Result<std::shared_ptr<RandomAccessFile>> PackFile(uint64_t id) const;
  void ForgetPackFile(uint64_t id) const;

  std::string path_;
  StoreOptions opts_;
  Env* env_ = nullptr;
  std::unique_ptr<Db> db_;
  struct Cache;
  std::unique_ptr<Cache> cache_;
  struct PackFiles;
  std::unique_ptr<PackFiles> packs_;
  std::unique_ptr<WorkerPool> workers_;
  struct InFlight;
  std::unique_ptr<InFlight> inflight_;
  struct Decoders;
  std::unique_ptr<Decoders> decoders_;

 public:
  struct Flight;  // one load of a chunk, awaited by every reader of it (chunk_store.cc)

 private:
  // Loads a chunk on a decoder thread and waits for it; `registered`: f is in
  // inflight_ under d (the load removes it).
  Result<std::shared_ptr<const std::string>> LoadOnDecoder(const Digest& d, int depth,
                                                           std::shared_ptr<Flight> f,
                                                           bool registered);
  void FinishLoad(const Digest& d, bool registered, const std::shared_ptr<Flight>& f,
                  Result<std::shared_ptr<const std::string>> r);
};

}  // namespace lfs
