#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <thread>
#include <unordered_map>

#include "store/coding.h"
#include "store/crc32.h"
#include "store/pack.h"
#include "store/store.h"

namespace lfs {

namespace {
constexpr char kMetaFormat[] = "format";
constexpr char kMetaNextPack[] = "next_pack";
constexpr char kMetaActivePack[] = "active_pack";
// 2 added codec 4 (segmented chunks). A version-1 store is read as it is and
// upgraded when opened for writing, so that an older lineagefs refuses it up
// front instead of failing on every segmented chunk.
constexpr char kFormatVersion[] = "lineagefs-store-2";
constexpr char kFormatVersion1[] = "lineagefs-store-1";
constexpr size_t kCacheShards = 16;
}  // namespace

// ---------------------------------------------------------------------------
// Index values

std::string ChunkEntry::Encode() const {
  std::string v;
  PutFixed64(&v, pack_id);
  PutFixed64(&v, offset);
  PutFixed32(&v, frame_len);
  PutFixed32(&v, raw_len);
  PutFixed8(&v, static_cast<uint8_t>(codec));
  PutFixed8(&v, elem_width);
  PutFixed8(&v, depth);
  PutFixed8(&v, 0);
  PutFixed32(&v, refs);
  PutDigest(&v, base);
  return v;
}

Result<ChunkEntry> ChunkEntry::Decode(std::string_view v) {
  Decoder d(v);
  ChunkEntry e;
  e.pack_id = d.Fixed64();
  e.offset = d.Fixed64();
  e.frame_len = d.Fixed32();
  e.raw_len = d.Fixed32();
  uint8_t c = d.Fixed8();
  e.elem_width = d.Fixed8();
  e.depth = d.Fixed8();
  d.Fixed8();
  e.refs = d.Fixed32();
  e.base = d.DigestValue();
  if (!d.ok() || !d.done() || !codec::ValidCodecId(c)) {
    return Status::Corruption("malformed chunk index entry");
  }
  e.codec = static_cast<codec::CodecId>(c);
  return e;
}

std::string PackEntry::Encode() const {
  std::string v;
  PutFixed64(&v, length);
  PutFixed8(&v, sealed ? 1 : 0);
  return v;
}

Result<PackEntry> PackEntry::Decode(std::string_view v) {
  Decoder d(v);
  PackEntry e;
  e.length = d.Fixed64();
  e.sealed = d.Fixed8() != 0;
  if (!d.ok()) return Status::Corruption("malformed pack entry");
  return e;
}

Status AdjustChunkRefs(WriteTxn& txn, const Digest& first, int64_t first_delta) {
  // Iterative: releasing a chunk may release its base, and so on.
  std::vector<std::pair<Digest, int64_t>> work{{first, first_delta}};
  while (!work.empty()) {
    auto [d, delta] = work.back();
    work.pop_back();
    std::string key = d.Encode();
    LFS_ASSIGN_OR_RETURN(auto v, txn.Get(Table::kChunks, key));
    if (!v) return Status::Corruption("reference to unknown chunk " + d.Hex());
    LFS_ASSIGN_OR_RETURN(ChunkEntry e, ChunkEntry::Decode(*v));
    int64_t refs = static_cast<int64_t>(e.refs) + delta;
    if (refs < 0) return Status::Corruption("reference count below zero for chunk " + d.Hex());
    if (refs == 0) {
      LFS_RETURN_IF_ERROR(txn.Del(Table::kChunks, key));
      if (!e.base.empty()) work.push_back({e.base, -1});
    } else {
      e.refs = static_cast<uint32_t>(refs);
      LFS_RETURN_IF_ERROR(txn.Put(Table::kChunks, key, e.Encode()));
    }
  }
  return Status::OK();
}

// ---------------------------------------------------------------------------
// Worker pool: runs encode jobs on all cores.

class Store::WorkerPool {
 public:
  explicit WorkerPool(int n) {
    for (int i = 0; i < n; i++) threads_.emplace_back([this] { Loop(); });
  }
  ~WorkerPool() {
    {
      std::lock_guard<std::mutex> l(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
  }
  // A set of n items run by fn(0..n-1); heap-allocated and shared with the
  // pool's jobs, so a caller may return before every helper has started.
  struct Group {
    Group(size_t n, std::function<void(size_t)> fn) : n(n), fn(std::move(fn)) {}
    const size_t n;
    const std::function<void(size_t)> fn;
    std::mutex mu;
    std::condition_variable done_cv;
    size_t next = 0, finished = 0;
    // Runs items until none is left to take.
    void Run() {
      for (;;) {
        size_t i;
        {
          std::lock_guard<std::mutex> l(mu);
          if (next >= n) return;
          i = next++;
        }
        fn(i);
        std::lock_guard<std::mutex> l(mu);
        if (++finished == n) done_cv.notify_all();
      }
    }
  };
  // Starts fn(0..n-1) on the pool and returns at once; Wait() finishes it.
  std::shared_ptr<Group> Submit(size_t n, std::function<void(size_t)> fn) {
    auto g = std::make_shared<Group>(n, std::move(fn));
    size_t helpers = std::min(threads_.size(), n);
    if (helpers > 0) {
      {
        std::lock_guard<std::mutex> l(mu_);
        for (size_t i = 0; i < helpers; i++) jobs_.push_back([g] { g->Run(); });
      }
      cv_.notify_all();
    }
    return g;
  }
  // The calling thread runs what no worker has taken yet, then waits for the rest.
  static void Wait(Group& g) {
    g.Run();
    std::unique_lock<std::mutex> l(g.mu);
    g.done_cv.wait(l, [&] { return g.finished == g.n; });
  }
  // Runs fn(0..n-1) across the pool and the calling thread; returns when done.
  void ParallelFor(size_t n, const std::function<void(size_t)>& fn) {
    if (n <= 1 || threads_.empty()) {
      for (size_t i = 0; i < n; i++) fn(i);
      return;
    }
    Wait(*Submit(n, fn));
  }

 private:
  void Loop() {
    std::unique_lock<std::mutex> l(mu_);
    for (;;) {
      cv_.wait(l, [&] { return stop_ || !jobs_.empty(); });
      if (stop_ && jobs_.empty()) return;
      auto job = std::move(jobs_.front());
      jobs_.pop_front();
      l.unlock();
      job();
      l.lock();
    }
  }
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;
  std::vector<std::thread> threads_;
  bool stop_ = false;
};

void Store::ParallelFor(size_t n, const std::function<void(size_t)>& fn) {
  workers_->ParallelFor(n, fn);
}

// ---------------------------------------------------------------------------
// Decoded-chunk cache: sharded LRU bounded in bytes.

struct Store::Cache {
  struct Shard {
    std::mutex mu;
    std::list<std::pair<Digest, std::shared_ptr<const std::string>>> lru;
    std::unordered_map<Digest, decltype(lru)::iterator> map;
    uint64_t bytes = 0;
  };
  explicit Cache(size_t capacity) : capacity(capacity) {}
  Shard& ShardFor(const Digest& d) { return shards[d.bytes[0] % kCacheShards]; }
  std::shared_ptr<const std::string> Get(const Digest& d) {
    Shard& s = ShardFor(d);
    std::lock_guard<std::mutex> l(s.mu);
    auto it = s.map.find(d);
    if (it == s.map.end()) {
      misses++;
      return nullptr;
    }
    hits++;
    s.lru.splice(s.lru.begin(), s.lru, it->second);
    return it->second->second;
  }
  // Like Get, without counting a miss or refreshing the entry.
  std::shared_ptr<const std::string> Peek(const Digest& d) {
    Shard& s = ShardFor(d);
    std::lock_guard<std::mutex> l(s.mu);
    auto it = s.map.find(d);
    return it == s.map.end() ? nullptr : it->second->second;
  }
  void Put(const Digest& d, std::shared_ptr<const std::string> v) {
    size_t per_shard = capacity / kCacheShards;
    if (v->size() > per_shard) return;
    Shard& s = ShardFor(d);
    std::lock_guard<std::mutex> l(s.mu);
    if (s.map.count(d)) return;
    s.bytes += v->size();
    s.lru.emplace_front(d, std::move(v));
    s.map[d] = s.lru.begin();
    while (s.bytes > per_shard && !s.lru.empty()) {
      s.bytes -= s.lru.back().second->size();
      s.map.erase(s.lru.back().first);
      s.lru.pop_back();
    }
  }
  void Clear() {
    for (auto& s : shards) {
      std::lock_guard<std::mutex> l(s.mu);
      s.lru.clear();
      s.map.clear();
      s.bytes = 0;
    }
  }
  uint64_t Bytes() {
    uint64_t b = 0;
    for (auto& s : shards) {
      std::lock_guard<std::mutex> l(s.mu);
      b += s.bytes;
    }
    return b;
  }
  size_t capacity;
  Shard shards[kCacheShards];
  std::atomic<uint64_t> hits{0}, misses{0}, loads{0}, partial_loads{0};
};

// Every chunk is decoded on one of these threads (one per core, 2 to 8):
// demand loads first, then prefetches. Decoding needs a frame buffer
// and plane scratch per thread (~3 MiB); on the FUSE threads, which libfuse
// starts and stops as load changes, that scratch was per FUSE thread and its
// churn fragmented the heap (a 16 MiB cache ran at 66 MB RSS). Here it is a
// fixed few buffers, and at most this many chunks are being decoded at once.
struct Store::Decoders {
  static constexpr size_t kMaxQueuedPrefetches = 32;
  struct Job {
    Digest d;
    int depth = 0;
    std::shared_ptr<Store::Flight> flight;
    bool registered = false;  // the flight is in inflight_ (erase it when done)
  };
  explicit Decoders(Store* s) : store(s) {
    // More would not help a mount's 8 FUSE threads and would each keep ~3 MiB.
    unsigned n = std::clamp(std::thread::hardware_concurrency(), 2u, 8u);
    for (unsigned i = 0; i < n; i++) threads.emplace_back([this] { Loop(); });
  }
  ~Decoders() {
    {
      std::lock_guard<std::mutex> l(mu);
      stop = true;
    }
    cv.notify_all();
    for (auto& t : threads) t.join();
    // Nobody reads while the store closes; fail anything left all the same.
    for (auto& j : demand) {
      store->FinishLoad(j.d, j.registered, j.flight, Status::Busy("the store is closing"));
    }
  }
  bool Submit(Job j) {
    {
      std::lock_guard<std::mutex> l(mu);
      if (stop) return false;
      demand.push_back(std::move(j));
    }
    cv.notify_one();
    return true;
  }
  void AddPrefetch(const Digest& d) {
    {
      std::lock_guard<std::mutex> l(mu);
      if (stop || queued.size() >= kMaxQueuedPrefetches || !queued.insert(d).second) return;
      prefetch.push_back(d);
    }
    cv.notify_one();
  }
  void Loop() {
    current = this;
    std::unique_lock<std::mutex> l(mu);
    for (;;) {
      cv.wait(l, [&] { return stop || !demand.empty() || !prefetch.empty(); });
      if (stop) return;
      if (!demand.empty()) {
        Job j = std::move(demand.front());
        demand.pop_front();
        l.unlock();
        Result<std::shared_ptr<const std::string>> r = store->cache_->Peek(j.d);
        if (!*r) r = store->LoadChunk(j.d, j.depth);
        store->FinishLoad(j.d, j.registered, j.flight, std::move(r));
        l.lock();
        continue;
      }
      Digest d = prefetch.front();
      prefetch.pop_front();
      l.unlock();
      Prefetch(d);
      l.lock();
      queued.erase(d);
    }
  }
  // Errors surface to the reader that needs the bytes.
  void Prefetch(const Digest& d) {
    if (!store->cache_->Peek(d)) (void)LoadHere(d, 0, /*skip_if_loading=*/true);
  }
  // Loads d on this (decoder) thread, as the registered flight when nobody
  // else is loading it, so that readers wait for this decode instead of
  // queueing a second one (a reader catching up with the prefetcher). When
  // someone is, it decodes the chunk too rather than wait (decoders never
  // wait for one another), or, for a prefetch, leaves it to them.
  Result<std::shared_ptr<const std::string>> LoadHere(const Digest& d, int depth,
                                                      bool skip_if_loading = false);
  // The pool this thread decodes for (null on other threads). Not the
  // store's decoders_: ~Store clears that before these threads are joined.
  static thread_local Decoders* current;
  Store* store;
  std::mutex mu;
  std::condition_variable cv;
  std::deque<Job> demand;
  std::deque<Digest> prefetch;
  std::set<Digest> queued;
  std::vector<std::thread> threads;
  bool stop = false;
};
thread_local Store::Decoders* Store::Decoders::current = nullptr;

struct Store::PackFiles {
  std::mutex mu;
  std::map<uint64_t, std::shared_ptr<RandomAccessFile>> open;
};

// ---------------------------------------------------------------------------
// Open / create

Status Store::Create(const std::string& path, const StoreOptions& opts) {
  Env* env = opts.env ? opts.env : Env::Default();
  LFS_RETURN_IF_ERROR(env->CreateDirIfMissing(path));
  if (env->Exists(path + "/index/data.mdb")) {
    return Status::AlreadyExists("a store already exists at " + path);
  }
  LFS_RETURN_IF_ERROR(env->CreateDirIfMissing(path + "/index"));
  LFS_RETURN_IF_ERROR(env->CreateDirIfMissing(path + "/packs"));
  LFS_RETURN_IF_ERROR(env->CreateDirIfMissing(path + "/staging"));
  Db::Options dbo;
  dbo.map_size = opts.map_size;
  LFS_ASSIGN_OR_RETURN(auto db, Db::Open(path + "/index", dbo));
  WriteTxn txn(*db);
  LFS_RETURN_IF_ERROR(txn.Put(Table::kMeta, kMetaFormat, kFormatVersion));
  LFS_RETURN_IF_ERROR(txn.Put(Table::kMeta, kMetaNextPack, KeyU64(1)));
  LFS_RETURN_IF_ERROR(txn.Commit());
  return env->SyncDir(path);
}

Result<std::unique_ptr<Store>> Store::Open(const std::string& path, const StoreOptions& opts) {
  std::unique_ptr<Store> s(new Store);
  s->path_ = path;
  s->opts_ = opts;
  s->env_ = opts.env ? opts.env : Env::Default();
  if (!s->env_->Exists(path + "/index/data.mdb")) {
    return Status::NotFound("no lineagefs store at " + path + " (run `lineagefs init " + path +
                            "`)");
  }
  Db::Options dbo;
  dbo.map_size = opts.map_size;
  dbo.read_only = opts.read_only;
  LFS_ASSIGN_OR_RETURN(s->db_, Db::Open(path + "/index", dbo));
  {
    std::optional<std::string> fmt;
    {
      ReadTxn txn(*s->db_);
      LFS_ASSIGN_OR_RETURN(fmt, txn.Get(Table::kMeta, kMetaFormat));
    }
    if (!fmt || (*fmt != kFormatVersion && *fmt != kFormatVersion1)) {
      return Status::Corruption("unknown store format at " + path + " (" +
                                (fmt ? *fmt : std::string("none")) +
                                "): written by a newer lineagefs?");
    }
    if (*fmt == kFormatVersion1 && !opts.read_only) {
      WriteTxn txn(*s->db_);
      LFS_RETURN_IF_ERROR(txn.Put(Table::kMeta, kMetaFormat, kFormatVersion));
      LFS_RETURN_IF_ERROR(txn.Commit());
    }
  }
  s->cache_ = std::make_unique<Cache>(opts.cache_bytes);
  s->packs_ = std::make_unique<PackFiles>();
  int threads = opts.encode_threads > 0 ? opts.encode_threads
                                        : static_cast<int>(std::thread::hardware_concurrency());
  // One worker per core: the ingesting thread mostly reads and hashes ahead
  // while the workers encode, and helps only when it must wait.
  s->workers_ = std::make_unique<WorkerPool>(std::max(1, threads));
  s->inflight_ = std::make_unique<InFlight>();
  s->decoders_ = std::make_unique<Decoders>(s.get());
  return s;
}

// The decoder threads use the store: stop them first.
Store::~Store() { decoders_.reset(); }

void Store::Prefetch(const Digest& d) {
  if (cache_->Get(d)) return;
  decoders_->AddPrefetch(d);
}

std::string Store::PackPath(uint64_t id) const { return path_ + "/packs/" + PackFileName(id); }

Result<std::shared_ptr<RandomAccessFile>> Store::PackFile(uint64_t id) const {
  std::lock_guard<std::mutex> l(packs_->mu);
  auto it = packs_->open.find(id);
  if (it != packs_->open.end()) return it->second;
  LFS_ASSIGN_OR_RETURN(auto f, env_->OpenRandomAccess(PackPath(id)));
  std::shared_ptr<RandomAccessFile> sf(std::move(f));
  if (packs_->open.size() >= 256) packs_->open.erase(packs_->open.begin());
  packs_->open[id] = sf;
  return sf;
}

void Store::ForgetPackFile(uint64_t id) const {
  std::lock_guard<std::mutex> l(packs_->mu);
  packs_->open.erase(id);
}

Result<std::optional<ChunkEntry>> Store::FindChunk(const Digest& d) const {
  ReadTxn txn(*db_);
  LFS_ASSIGN_OR_RETURN(auto v, txn.Get(Table::kChunks, d.Encode()));
  if (!v) return std::optional<ChunkEntry>();
  LFS_ASSIGN_OR_RETURN(ChunkEntry e, ChunkEntry::Decode(*v));
  return std::optional<ChunkEntry>(e);
}

Result<std::string> Store::ReadFrame(const ChunkEntry& e) const {
  std::string frame(e.frame_len, '\0');
  LFS_ASSIGN_OR_RETURN(auto f, PackFile(e.pack_id));
  LFS_RETURN_IF_ERROR(f->ReadExact(e.offset, e.frame_len, frame.data()));
  return frame;
}

Result<std::shared_ptr<const std::string>> Store::ReadChunk(const Digest& d) {
  return ReadChunkDepth(d, 0);
}

// One decode per chunk at a time: the kernel's readahead sends several
// requests into the same 1 MiB chunk at once and the prefetcher may be
// decoding it already; without this each of them read and decoded it (the
// daemon read() 1.4-4.4x the packs' bytes on a sequential read).
struct Store::Flight {
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  std::shared_ptr<const std::string> value;  // null when the load failed
  Status error;
};
struct Store::InFlight {
  std::mutex mu;
  std::unordered_map<Digest, std::shared_ptr<Flight>> flights;
};

Result<std::shared_ptr<const std::string>> Store::Decoders::LoadHere(const Digest& d, int depth,
                                                                     bool skip_if_loading) {
  std::shared_ptr<Flight> f;
  {
    std::lock_guard<std::mutex> l(store->inflight_->mu);
    auto [it, fresh] = store->inflight_->flights.try_emplace(d);
    if (fresh) f = it->second = std::make_shared<Flight>();
  }
  if (!f) {
    if (skip_if_loading) return std::shared_ptr<const std::string>();
    return store->LoadChunk(d, depth);
  }
  // A leader that finished between our cache miss and our registration has
  // already filled the cache.
  Result<std::shared_ptr<const std::string>> r = store->cache_->Peek(d);
  if (!*r) r = store->LoadChunk(d, depth);
  store->FinishLoad(d, /*registered=*/true, f, r);
  return r;
}

namespace {
Result<std::shared_ptr<const std::string>> Await(Store::Flight& f) {
  std::unique_lock<std::mutex> l(f.mu);
  f.cv.wait(l, [&] { return f.done; });
  if (f.value) return f.value;
  return f.error;
}
}  // namespace

void Store::FinishLoad(const Digest& d, bool registered, const std::shared_ptr<Flight>& f,
                       Result<std::shared_ptr<const std::string>> r) {
  if (registered) {
    std::lock_guard<std::mutex> l(inflight_->mu);
    inflight_->flights.erase(d);
  }
  {
    std::lock_guard<std::mutex> l(f->mu);
    f->done = true;
    if (r.ok()) {
      f->value = *r;
    } else {
      f->error = r.status();
    }
  }
  f->cv.notify_all();
}

Result<std::shared_ptr<const std::string>> Store::LoadOnDecoder(const Digest& d, int depth,
                                                                std::shared_ptr<Flight> f,
                                                                bool registered) {
  if (!decoders_->Submit({d, depth, f, registered})) {
    FinishLoad(d, registered, f, Status::Busy("the store is closing"));
  }
  return Await(*f);
}

Result<std::shared_ptr<const std::string>> Store::ReadChunkDepth(const Digest& d, int depth) {
  if (auto hit = cache_->Get(d)) return hit;
  // A decoder thread never waits for another load (they could all end up
  // waiting for jobs queued behind them): it decodes a base itself, even one
  // another thread is decoding already.
  if (Decoders* self = Decoders::current) return self->LoadHere(d, depth);
  std::shared_ptr<Flight> f;
  bool leader = false;
  {
    std::lock_guard<std::mutex> l(inflight_->mu);
    auto& slot = inflight_->flights[d];
    if (!slot) {
      slot = std::make_shared<Flight>();
      leader = true;
    }
    f = slot;
  }
  if (leader) return LoadOnDecoder(d, depth, std::move(f), /*registered=*/true);
  auto r = Await(*f);
  if (r.ok()) return r;
  // The leader failed: try once more so that our caller gets its own error
  // (or the bytes, if the failure was a gc race).
  return LoadOnDecoder(d, depth, std::make_shared<Flight>(), /*registered=*/false);
}

namespace {
// Frames are read into a per-thread buffer: no allocation, no zero-fill.
char* FrameScratch(size_t n) {
  thread_local std::unique_ptr<char[]> buf;
  thread_local size_t cap = 0;
  if (n > cap) {
    cap = std::max(n, size_t{2} << 20);
    buf.reset(new char[cap]);
  }
  return buf.get();
}
}  // namespace

Result<std::shared_ptr<const std::string>> Store::LoadChunk(const Digest& d, int depth) {
  if (depth > opts_.max_delta_depth + 1) {
    return Status::Corruption("delta chain of chunk " + d.Hex() + " exceeds its bound");
  }
  cache_->loads++;
  ChunkEntry e;
  std::shared_ptr<const std::string> base;
  std::string_view frame;
  // Gc may move a chunk to a new pack and delete the old one between our index
  // lookup and the read: look it up again once.
  for (int attempt = 0;; attempt++) {
    LFS_ASSIGN_OR_RETURN(auto found, FindChunk(d));
    if (!found) return Status::NotFound("chunk " + d.Hex() + " is not in the index");
    e = *found;
    // The base first: its read reuses this thread's frame buffer.
    if (!e.base.empty() && !base) {
      LFS_ASSIGN_OR_RETURN(base, ReadChunkDepth(e.base, depth + 1));
    }
    char* buf = FrameScratch(e.frame_len);
    auto file = PackFile(e.pack_id);
    Status rs = file.ok() ? (*file)->ReadExact(e.offset, e.frame_len, buf) : file.status();
    if (rs.ok()) {
      frame = std::string_view(buf, e.frame_len);
      break;
    }
    ForgetPackFile(e.pack_id);
    if (attempt == 1 || !rs.IsNotFound()) {
      return rs.Annotate("chunk " + d.Hex() + " in pack " + PackFileName(e.pack_id));
    }
  }
  // The frame checksum is checked only when something is wrong (for the
  // precise message): the digest check of the decoded bytes below covers
  // every byte that matters, and hashing each frame twice cost ~5% of a read.
  auto precise = [&frame](Status s) {
    FrameHeader h2;
    std::string_view p2;
    Status c = DecodeFrame(frame, &h2, &p2, /*check_sum=*/true);
    return c.ok() ? s : c;
  };
  FrameHeader h;
  std::string_view payload;
  Status s = DecodeFrame(frame, &h, &payload, /*check_sum=*/false);
  if (s.ok() && h.digest != d) s = Status::Corruption("frame holds another chunk");
  if (s.ok() && (h.raw_len != e.raw_len || h.codec != e.codec)) {
    s = Status::Corruption("frame disagrees with the index");
  }
  if (s.ok() && h.base != e.base) {
    s = Status::Corruption("frame's delta base disagrees with the index");
  }
  if (!s.ok()) {
    return precise(s).Annotate("chunk " + d.Hex() + " at " + PackFileName(e.pack_id) + ":" +
                               std::to_string(e.offset));
  }
  auto out = std::make_shared<std::string>();
  s = codec::Decode(h.codec, payload, h.raw_len, h.elem_width,
                    base ? std::string_view(*base) : std::string_view(), out.get());
  if (s.ok() && Digest::Of(*out) != d) {
    s = Status::Corruption("decoded bytes do not match their address");
  }
  if (!s.ok()) {
    return precise(s).Annotate("chunk " + d.Hex() + " at " + PackFileName(e.pack_id) + ":" +
                               std::to_string(e.offset));
  }
  std::shared_ptr<const std::string> result = std::move(out);
  cache_->Put(d, result);
  return result;
}

Status Store::VerifySegments(const Digest& d, const std::string& raw) {
  LFS_ASSIGN_OR_RETURN(auto found, FindChunk(d));
  if (!found || found->codec != codec::CodecId::kSegmented) return Status::OK();
  LFS_ASSIGN_OR_RETURN(std::string frame, ReadFrame(*found));
  FrameHeader h;
  std::string_view payload;
  LFS_RETURN_IF_ERROR(DecodeFrame(frame, &h, &payload, /*check_sum=*/true));
  return codec::CheckSegments(payload, raw);
}

Result<ChunkPiece> Store::ReadChunkRange(const Digest& d, uint64_t off, size_t n) {
  return ReadChunkRangeDepth(d, off, n, 0);
}

Result<ChunkPiece> Store::ReadChunkRangeDepth(const Digest& d, uint64_t off, size_t n, int depth) {
  if (auto hit = cache_->Get(d)) return ChunkPiece{std::move(hit), 0};
  auto whole = [&]() -> Result<ChunkPiece> {
    LFS_ASSIGN_OR_RETURN(auto chunk, ReadChunkDepth(d, depth));
    return ChunkPiece{std::move(chunk), 0};
  };
  bool loading;
  {
    std::lock_guard<std::mutex> l(inflight_->mu);
    loading = inflight_->flights.count(d) != 0;
  }
  // Being decoded whole already (a sequential reader's prefetch): wait for it.
  if (loading) return whole();
  auto found = FindChunk(d);
  if (!found.ok() || !*found || (*found)->codec != codec::CodecId::kSegmented ||
      depth > opts_.max_delta_depth + 1) {
    return whole();
  }
  const ChunkEntry& e = **found;
  if (off >= e.raw_len) return whole();
  n = static_cast<size_t>(std::min<uint64_t>(std::max<size_t>(n, 1), e.raw_len - off));
  if (n >= e.raw_len / 2) return whole();
  auto piece = ReadSegments(d, e, off, n, depth);
  if (piece.ok()) return piece;
  return whole();
}

Result<ChunkPiece> Store::ReadSegments(const Digest& d, const ChunkEntry& e, uint64_t off, size_t n,
                                       int depth) {
  LFS_ASSIGN_OR_RETURN(auto file, PackFile(e.pack_id));
  // The header and the table, assuming the usual segment size; read again
  // when the table says it is longer.
  const size_t guess = (e.raw_len + codec::kSegmentBytes - 1) / codec::kSegmentBytes;
  std::string head(
      std::min<size_t>(e.frame_len, kFrameHeaderSize + codec::SegmentTableBytes(guess)), '\0');
  LFS_RETURN_IF_ERROR(file->ReadExact(e.offset, head.size(), head.data()));
  FrameHeader h;
  LFS_RETURN_IF_ERROR(DecodeFrameHeader(head, &h));
  if (h.digest != d || h.codec != e.codec || h.raw_len != e.raw_len || h.base != e.base ||
      kFrameHeaderSize + uint64_t{h.payload_len} + kFrameTrailerSize != e.frame_len) {
    return Status::Corruption("frame disagrees with the index");
  }
  if (head.size() >= kFrameHeaderSize + 8) {
    uint32_t n_segments;
    std::memcpy(&n_segments, head.data() + kFrameHeaderSize + 4, 4);
    const size_t want = kFrameHeaderSize + codec::SegmentTableBytes(n_segments);
    if (want > head.size() && want <= e.frame_len) {
      head.resize(want);
      LFS_RETURN_IF_ERROR(file->ReadExact(e.offset, head.size(), head.data()));
    }
  }
  std::string_view payload_head = std::string_view(head).substr(kFrameHeaderSize);
  LFS_ASSIGN_OR_RETURN(codec::SegmentTable st, codec::ParseSegmentTable(payload_head, e.raw_len));
  if (st.payload_bytes != h.payload_len) return Status::Corruption("segment table overruns");
  const size_t first = off / st.segment_bytes;
  const size_t last = (off + n - 1) / st.segment_bytes;
  const auto& s0 = st.segments[first];
  const auto& s1 = st.segments[last];
  std::string body(s1.payload_offset + s1.payload_len - s0.payload_offset, '\0');
  LFS_RETURN_IF_ERROR(
      file->ReadExact(e.offset + kFrameHeaderSize + s0.payload_offset, body.size(), body.data()));
  const uint64_t span = s1.raw_offset + s1.raw_len - s0.raw_offset;
  ChunkPiece base;
  bool need_base = false;
  for (size_t i = first; i <= last; i++) {
    need_base |= st.segments[i].codec == codec::CodecId::kXorDelta;
  }
  if (need_base) {
    LFS_ASSIGN_OR_RETURN(base, ReadChunkRangeDepth(e.base, s0.raw_offset, span, depth + 1));
    if (base.offset > s0.raw_offset || base.offset + base.bytes->size() < s0.raw_offset + span) {
      return Status::Corruption("delta base shorter than its chunk");
    }
  }
  auto out = std::make_shared<std::string>(span, '\0');
  for (size_t i = first; i <= last; i++) {
    const auto& s = st.segments[i];
    std::string_view base_piece;
    if (need_base) {
      base_piece = std::string_view(*base.bytes).substr(s.raw_offset - base.offset, s.raw_len);
    }
    LFS_RETURN_IF_ERROR(codec::DecodeSegment(
        s, std::string_view(body).substr(s.payload_offset - s0.payload_offset, s.payload_len),
        base_piece, out->data() + (s.raw_offset - s0.raw_offset)));
  }
  cache_->partial_loads++;
  return ChunkPiece{std::move(out), s0.raw_offset};
}

CacheStats Store::cache_stats() const {
  CacheStats s;
  s.hits = cache_->hits;
  s.misses = cache_->misses;
  s.bytes = cache_->Bytes();
  s.capacity = cache_->capacity;
  s.loads = cache_->loads;
  s.partial_loads = cache_->partial_loads;
  return s;
}

void Store::DropCache() { cache_->Clear(); }

void Store::CacheFresh(const Digest& d, std::string_view raw) {
  cache_->Put(d, std::make_shared<const std::string>(raw));
}

Status Store::PackUsage(uint64_t* pack_bytes, uint64_t* live_bytes) const {
  *pack_bytes = *live_bytes = 0;
  ReadTxn txn(*db_);
  LFS_RETURN_IF_ERROR(txn.Scan(Table::kPacks, "", [&](std::string_view, std::string_view v) {
    auto p = PackEntry::Decode(v);
    if (p.ok()) *pack_bytes += p->length;
    return true;
  }));
  return txn.Scan(Table::kChunks, "", [&](std::string_view, std::string_view v) {
    auto e = ChunkEntry::Decode(v);
    if (e.ok()) *live_bytes += e->frame_len;
    return true;
  });
}

// ---------------------------------------------------------------------------
// WriteBatch

struct WriteBatch::Impl {
  std::unique_ptr<FileLock> lock;
  // The pack being appended to.
  uint64_t pack_id = 0;
  std::unique_ptr<WritableFile> pack;
  bool pack_created = false;  // created by this batch (needs a dir fsync)
  std::map<uint64_t, PackEntry> pack_updates;
  std::vector<uint64_t> created_packs;
  uint64_t next_pack = 0;
  std::unordered_map<Digest, ChunkEntry> new_chunks;
  std::unordered_map<Digest, int64_t> ref_deltas;
  std::unordered_map<Digest, ChunkEntry> moved_chunks;  // gc relocations
  bool done = false;
};

struct WriteBatch::Prepared {
  Digest digest;
  uint32_t crc32 = 0;   // of the raw chunk, when the request asked for it
  bool exists = false;  // already in the index or the batch
  std::string frame;
  ChunkEntry entry;
  Status status;
};

// Chunks being encoded by the workers (StartChunks .. FinishChunks). The
// batch waits for its jobs before it finishes in any way (they point into it).
struct WriteBatch::Pending {
  std::vector<OwnedChunk> chunks;
  std::vector<ChunkRequest> reqs;
  std::vector<bool> want_crc32;
  std::vector<Prepared> prep;
  std::shared_ptr<Store::WorkerPool::Group> group;
};

WriteBatch::WriteBatch(Store* s) : store_(s), impl_(new Impl) {}

WriteBatch::~WriteBatch() {
  WaitPending();
  if (!impl_->done) Abort();
}

void WriteBatch::WaitPending() {
  for (auto& p : pending_) Store::WorkerPool::Wait(*p->group);
  pending_.clear();
}

Result<std::unique_ptr<WriteBatch>> Store::BeginWrite() {
  if (opts_.read_only) return Status::ReadOnly("store opened read-only");
  std::unique_ptr<WriteBatch> b(new WriteBatch(this));
  LFS_ASSIGN_OR_RETURN(b->impl_->lock, env_->Lock(path_ + "/LOCK"));
  ReadTxn txn(*db_);
  LFS_ASSIGN_OR_RETURN(auto next, txn.Get(Table::kMeta, kMetaNextPack));
  if (!next) return Status::Corruption("store meta lacks next_pack");
  b->impl_->next_pack = DecodeKeyU64(*next);
  LFS_ASSIGN_OR_RETURN(auto active, txn.Get(Table::kMeta, kMetaActivePack));
  if (active) {
    uint64_t id = DecodeKeyU64(*active);
    LFS_ASSIGN_OR_RETURN(auto pv, txn.Get(Table::kPacks, KeyU64(id)));
    if (!pv) return Status::Corruption("active pack missing from the packs table");
    LFS_ASSIGN_OR_RETURN(PackEntry pe, PackEntry::Decode(*pv));
    if (!pe.sealed && pe.length < opts_.pack_target_bytes) {
      // Cut any torn tail a crashed writer left past the committed length.
      LFS_ASSIGN_OR_RETURN(b->impl_->pack, env_->OpenAppendable(PackPath(id), pe.length));
      b->impl_->pack_id = id;
      b->impl_->pack_updates[id] = pe;
    } else if (!pe.sealed) {
      pe.sealed = true;
      b->impl_->pack_updates[id] = pe;
    }
  }
  return b;
}

namespace {
// Stage 1 of storing a chunk (any thread): hash, look up, pick a delta base
// within the depth bound, encode, frame.
void PrepareChunk(Store& st, const ChunkRequest& r, WriteBatch::Prepared* p) {
  if (r.raw.size() > UINT32_MAX - 1024) {
    p->status = Status::InvalidArgument("chunk larger than 4 GiB");
    return;
  }
  p->digest = Digest::Of(r.raw.data(), r.raw.size());
  auto found = st.FindChunk(p->digest);
  if (!found.ok()) {
    p->status = found.status();
    return;
  }
  if (*found) {
    p->exists = true;
    return;
  }
  std::optional<ChunkEntry> base_entry;
  std::shared_ptr<const std::string> base_raw;
  Digest base_digest;
  if (r.base && *r.base != p->digest) {
    // Walk up the base's own chain until the new chunk's depth fits the bound.
    Digest cand = *r.base;
    for (int hops = 0; hops <= st.options().max_delta_depth + 1; hops++) {
      auto be = st.FindChunk(cand);
      if (!be.ok() || !*be || (*be)->raw_len != r.raw.size()) break;
      if ((*be)->depth + 1 <= st.options().max_delta_depth) {
        auto braw = st.ReadChunk(cand);
        if (braw.ok()) {
          base_entry = **be;
          base_digest = cand;
          base_raw = *braw;
        }
        break;
      }
      cand = (*be)->base;
    }
  }
  codec::EncodeOptions eo;
  eo.elem_width = r.elem_width;
  std::string_view base_view = base_raw ? std::string_view(*base_raw) : std::string_view();
  codec::Encoded enc = codec::Encode(r.raw, eo, base_raw ? &base_view : nullptr);
  FrameHeader h;
  h.codec = enc.codec;
  h.elem_width = static_cast<uint8_t>(r.elem_width);
  h.raw_len = static_cast<uint32_t>(r.raw.size());
  h.digest = p->digest;
  if (enc.uses_base) h.base = base_digest;
  p->frame = EncodeFrame(h, enc.payload);
  p->entry.frame_len = static_cast<uint32_t>(p->frame.size());
  p->entry.raw_len = h.raw_len;
  p->entry.codec = enc.codec;
  p->entry.elem_width = h.elem_width;
  p->entry.base = h.base;
  p->entry.depth = enc.uses_base ? base_entry->depth + 1 : 0;
}
}  // namespace

Result<Digest> WriteBatch::PutChunk(std::string_view raw, int elem_width,
                                    std::optional<Digest> base) {
  LFS_ASSIGN_OR_RETURN(auto v, PutChunks({ChunkRequest{raw, elem_width, base}}));
  return v[0];
}

Result<std::vector<Digest>> WriteBatch::PutChunks(const std::vector<ChunkRequest>& reqs) {
  if (impl_->done) return Status::InvalidArgument("batch already finished");
  if (!pending_.empty()) return Status::InvalidArgument("PutChunks while chunks are pending");
  std::vector<Prepared> prep(reqs.size());
  store_->workers().ParallelFor(reqs.size(),
                                [&](size_t i) { PrepareChunk(*store_, reqs[i], &prep[i]); });
  return AppendPrepared(prep);
}

Status WriteBatch::StartChunks(std::vector<OwnedChunk> chunks) {
  if (impl_->done) return Status::InvalidArgument("batch already finished");
  auto p = std::make_unique<Pending>();
  p->chunks = std::move(chunks);
  for (const auto& c : p->chunks) {
    p->reqs.push_back(ChunkRequest{c.raw, c.elem_width, c.base});
    p->want_crc32.push_back(c.want_crc32);
  }
  p->prep.resize(p->reqs.size());
  Store* st = store_;
  Pending* raw = p.get();
  p->group = st->workers().Submit(p->reqs.size(), [st, raw](size_t i) {
    const ChunkRequest& r = raw->reqs[i];
    // The caller's running crc32 (zip views need it) is combined from these:
    // computing it here keeps the reading thread free.
    if (raw->want_crc32[i]) raw->prep[i].crc32 = Crc32(r.raw);
    OwnedChunk& owned = raw->chunks[i];
    if (owned.transform) {
      Status s = owned.transform(owned.raw.data(), owned.raw.size());
      if (!s.ok()) {
        raw->prep[i].status = s;
        return;
      }
    }
    PrepareChunk(*st, r, &raw->prep[i]);
    // Float tensor chunks (StartChunks is the tensor path; derived residuals
    // and generic chunks never serve as delta bases), and only those a delta
    // may still be made against (below the depth bound).
    const Prepared& pr = raw->prep[i];
    if (r.elem_width > 1 && !owned.transform && pr.status.ok() && !pr.exists &&
        pr.entry.depth < st->options().max_delta_depth) {
      st->CacheFresh(raw->prep[i].digest, r.raw);
    }
  });
  pending_.push_back(std::move(p));
  return Status::OK();
}

Result<std::vector<Digest>> WriteBatch::FinishChunks(std::vector<std::string>* recycled,
                                                     std::vector<uint32_t>* crc32s) {
  if (pending_.empty()) return Status::InvalidArgument("FinishChunks without StartChunks");
  std::unique_ptr<Pending> p = std::move(pending_.front());
  pending_.pop_front();
  Store::WorkerPool::Wait(*p->group);
  if (crc32s) {
    crc32s->clear();
    for (const auto& pr : p->prep) crc32s->push_back(pr.crc32);
  }
  auto out = AppendPrepared(p->prep);
  if (recycled) {
    for (auto& c : p->chunks) recycled->push_back(std::move(c.raw));
  }
  return out;
}

// Stage 2 (serial): appends the new frames in order and counts references.
Result<std::vector<Digest>> WriteBatch::AppendPrepared(std::vector<Prepared>& prep) {
  std::vector<Digest> out;
  out.reserve(prep.size());
  for (size_t i = 0; i < prep.size(); i++) {
    Prepared& p = prep[i];
    LFS_RETURN_IF_ERROR(p.status);
    out.push_back(p.digest);
    impl_->ref_deltas[p.digest] += 1;
    if (p.exists || impl_->new_chunks.count(p.digest)) {
      chunks_dedup_++;
      continue;
    }
    LFS_RETURN_IF_ERROR(StartPackIfNeeded());
    p.entry.pack_id = impl_->pack_id;
    p.entry.offset = impl_->pack->Size();
    LFS_RETURN_IF_ERROR(impl_->pack->Append(p.frame));
    bytes_appended_ += p.frame.size();
    chunks_new_++;
    impl_->new_chunks[p.digest] = p.entry;
    p.frame.clear();
    p.frame.shrink_to_fit();
  }
  return out;
}

Status WriteBatch::StartPackIfNeeded() {
  Store& st = *store_;
  if (impl_->pack && impl_->pack->Size() < st.options().pack_target_bytes) return Status::OK();
  if (impl_->pack) {
    // Seal the full pack: sync it now, record its final length.
    LFS_RETURN_IF_ERROR(impl_->pack->Sync());
    impl_->pack_updates[impl_->pack_id] = PackEntry{impl_->pack->Size(), true};
    LFS_RETURN_IF_ERROR(impl_->pack->Close());
  }
  uint64_t id = impl_->next_pack++;
  LFS_ASSIGN_OR_RETURN(impl_->pack, st.env()->OpenAppendable(st.PackPath(id), 0));
  impl_->created_packs.push_back(id);
  impl_->pack_id = id;
  LFS_RETURN_IF_ERROR(impl_->pack->Append(PackHeader()));
  impl_->pack_updates[id] = PackEntry{impl_->pack->Size(), false};
  return Status::OK();
}

Status WriteBatch::MoveFrame(const Digest& d, std::string_view frame, const ChunkEntry& e) {
  LFS_RETURN_IF_ERROR(StartPackIfNeeded());
  ChunkEntry moved = e;
  moved.pack_id = impl_->pack_id;
  moved.offset = impl_->pack->Size();
  LFS_RETURN_IF_ERROR(impl_->pack->Append(frame));
  bytes_appended_ += frame.size();
  impl_->moved_chunks[d] = moved;
  return Status::OK();
}

Status WriteBatch::AppendNewFrame(const Digest& d, std::string_view frame, ChunkEntry e) {
  LFS_RETURN_IF_ERROR(StartPackIfNeeded());
  e.pack_id = impl_->pack_id;
  e.offset = impl_->pack->Size();
  e.frame_len = static_cast<uint32_t>(frame.size());
  e.refs = 0;
  LFS_RETURN_IF_ERROR(impl_->pack->Append(frame));
  bytes_appended_ += frame.size();
  chunks_new_++;
  impl_->new_chunks[d] = e;
  return Status::OK();
}

Result<std::shared_ptr<const std::string>> WriteBatch::RawForBase(const Digest& d, int hops,
                                                                  uint8_t* depth) {
  if (hops > store_->options().max_delta_depth + 1) {
    return Status::Corruption("delta chain of chunk " + d.Hex() + " exceeds its bound");
  }
  auto it = impl_->new_chunks.find(d);
  if (it == impl_->new_chunks.end()) {
    LFS_ASSIGN_OR_RETURN(auto found, store_->FindChunk(d));
    if (!found) return Status::NotFound("delta base " + d.Hex() + " is not in the store");
    *depth = found->depth;
    return store_->ReadChunk(d);
  }
  // Appended by this batch: not synced yet, but the file holds the bytes.
  const ChunkEntry& e = it->second;
  *depth = e.depth;
  LFS_ASSIGN_OR_RETURN(std::string frame, store_->ReadFrame(e));
  FrameHeader h;
  std::string_view payload;
  LFS_RETURN_IF_ERROR(DecodeFrame(frame, &h, &payload));
  std::shared_ptr<const std::string> base;
  if (!h.base.empty()) {
    uint8_t unused;
    LFS_ASSIGN_OR_RETURN(base, RawForBase(h.base, hops + 1, &unused));
  }
  auto out = std::make_shared<std::string>();
  LFS_RETURN_IF_ERROR(codec::Decode(h.codec, payload, h.raw_len, h.elem_width,
                                    base ? std::string_view(*base) : std::string_view(),
                                    out.get()));
  return std::shared_ptr<const std::string>(std::move(out));
}

Result<bool> WriteBatch::PutFrame(const Digest& d, std::string_view frame) {
  if (impl_->done) return Status::InvalidArgument("batch already finished");
  if (impl_->new_chunks.count(d)) return false;
  LFS_ASSIGN_OR_RETURN(auto found, store_->FindChunk(d));
  if (found) return false;
  auto bad = [&](const std::string& why) {
    return Status::Corruption("received chunk " + d.Hex() + " refused: " + why);
  };
  FrameHeader h;
  std::string_view payload;
  Status s = DecodeFrame(frame, &h, &payload);
  if (!s.ok()) return bad(s.message());
  if (h.digest != d) return bad("the frame holds chunk " + h.digest.Hex());
  ChunkEntry e;
  e.raw_len = h.raw_len;
  e.codec = h.codec;
  e.elem_width = h.elem_width;
  std::shared_ptr<const std::string> base;
  if (!h.base.empty()) {
    if (h.base == d) return bad("the frame is its own delta base");
    uint8_t base_depth = 0;
    auto br = RawForBase(h.base, 1, &base_depth);
    if (!br.ok()) return br.status().Annotate("delta base of received chunk " + d.Hex());
    base = std::move(br).value();
    e.base = h.base;
    e.depth = static_cast<uint8_t>(base_depth + 1);
  }
  std::string raw;
  s = codec::Decode(h.codec, payload, h.raw_len, h.elem_width,
                    base ? std::string_view(*base) : std::string_view(), &raw);
  if (!s.ok()) return bad(s.message());
  if (Digest::Of(raw) != d) return bad("its decoded bytes do not match its address");
  if (h.codec == codec::CodecId::kSegmented) {
    // Partial reads trust the segment checksums, and a base the segments do
    // not use would pin a chain for nothing.
    auto table = codec::ParseSegmentTable(payload, h.raw_len);
    if (!table.ok()) return bad(table.status().message());
    if (table->uses_base != !h.base.empty()) return bad("its base does not match its segments");
    s = codec::CheckSegments(payload, raw);
    if (!s.ok()) return bad(s.message());
  }
  if (e.depth > store_->options().max_delta_depth) {
    // The base sits deeper here than on the sender: a verbatim copy would
    // break the read bound, so this one chunk is stored standalone.
    codec::EncodeOptions eo;
    eo.elem_width = h.elem_width;
    codec::Encoded enc = codec::Encode(raw, eo, nullptr);
    FrameHeader nh = h;
    nh.codec = enc.codec;
    nh.base = Digest();
    e.codec = enc.codec;
    e.base = Digest();
    e.depth = 0;
    LFS_RETURN_IF_ERROR(AppendNewFrame(d, EncodeFrame(nh, enc.payload), e));
    return true;
  }
  LFS_RETURN_IF_ERROR(AppendNewFrame(d, frame, e));
  return true;
}

void WriteBatch::AddRef(const Digest& d, int64_t delta) { impl_->ref_deltas[d] += delta; }

Status WriteBatch::Commit(const std::function<Status(WriteTxn&)>& extra) {
  if (impl_->done) return Status::InvalidArgument("batch already finished");
  if (!pending_.empty()) {
    WaitPending();
    return Status::InvalidArgument("commit with chunks started but not finished");
  }
  Store& st = *store_;
  // 1. Durability of pack bytes before anything references them.
  if (impl_->pack) {
    LFS_RETURN_IF_ERROR(impl_->pack->Sync());
    auto& pe = impl_->pack_updates[impl_->pack_id];
    pe.length = impl_->pack->Size();
  }
  if (!impl_->created_packs.empty()) LFS_RETURN_IF_ERROR(st.env()->SyncDir(st.path() + "/packs"));
  // 2. One transaction makes it all reachable.
  WriteTxn txn(st.db());
  LFS_RETURN_IF_ERROR(txn.begin_status());
  // Entries first, then base references: a received chunk's base may be new
  // in this batch too.
  std::vector<Digest> with_base;
  for (auto& [d, e] : impl_->new_chunks) {
    std::string key = d.Encode();
    LFS_ASSIGN_OR_RETURN(auto existing, txn.Get(Table::kChunks, key));
    if (existing) continue;  // another writer stored it first: ours is dead space
    ChunkEntry ne = e;
    ne.refs = 0;
    LFS_RETURN_IF_ERROR(txn.Put(Table::kChunks, key, ne.Encode()));
    if (!ne.base.empty()) with_base.push_back(d);
  }
  for (const Digest& d : with_base) {
    LFS_RETURN_IF_ERROR(AdjustChunkRefs(txn, impl_->new_chunks[d].base, +1));
  }
  // Increments first so that a chunk released and re-added in one batch survives.
  for (auto& [d, delta] : impl_->ref_deltas) {
    if (delta > 0) LFS_RETURN_IF_ERROR(AdjustChunkRefs(txn, d, delta));
  }
  for (auto& [d, delta] : impl_->ref_deltas) {
    if (delta < 0) LFS_RETURN_IF_ERROR(AdjustChunkRefs(txn, d, delta));
  }
  // A chunk stored by this batch whose references cancelled out (its tensor
  // turned out to exist already) must not linger in the index.
  for (auto& [d, e] : impl_->new_chunks) {
    auto it = impl_->ref_deltas.find(d);
    if (it == impl_->ref_deltas.end() || it->second == 0) {
      LFS_ASSIGN_OR_RETURN(auto v, txn.Get(Table::kChunks, d.Encode()));
      if (v) {
        LFS_ASSIGN_OR_RETURN(ChunkEntry ce, ChunkEntry::Decode(*v));
        if (ce.refs == 0) LFS_RETURN_IF_ERROR(AdjustChunkRefs(txn, d, 0));
      }
    }
  }
  for (auto& [d, moved] : impl_->moved_chunks) {
    std::string key = d.Encode();
    LFS_ASSIGN_OR_RETURN(auto v, txn.Get(Table::kChunks, key));
    if (!v) continue;  // released meanwhile
    LFS_ASSIGN_OR_RETURN(ChunkEntry cur, ChunkEntry::Decode(*v));
    cur.pack_id = moved.pack_id;
    cur.offset = moved.offset;
    LFS_RETURN_IF_ERROR(txn.Put(Table::kChunks, key, cur.Encode()));
  }
  for (auto& [id, pe] : impl_->pack_updates) {
    LFS_RETURN_IF_ERROR(txn.Put(Table::kPacks, KeyU64(id), pe.Encode()));
  }
  LFS_RETURN_IF_ERROR(txn.Put(Table::kMeta, kMetaNextPack, KeyU64(impl_->next_pack)));
  if (impl_->pack) {
    LFS_RETURN_IF_ERROR(txn.Put(Table::kMeta, kMetaActivePack, KeyU64(impl_->pack_id)));
  }
  if (extra) LFS_RETURN_IF_ERROR(extra(txn));
  LFS_RETURN_IF_ERROR(txn.Commit());
  impl_->done = true;
  if (impl_->pack) (void)impl_->pack->Close();
  impl_->lock.reset();
  return Status::OK();
}

void WriteBatch::Abort() {
  WaitPending();
  if (impl_->done) return;
  impl_->done = true;
  Store& st = *store_;
  // Nothing references the appended bytes: drop packs this batch created; the
  // active pack's tail is cut by the next writer (its committed length stands).
  if (impl_->pack) (void)impl_->pack->Close();
  for (uint64_t id : impl_->created_packs) (void)st.env()->Remove(st.PackPath(id));
  impl_->lock.reset();
}

}  // namespace lfs

// ---------------------------------------------------------------------------
// Garbage collection

namespace lfs {

Status Store::Gc(const GcOptions& opts, GcStats* stats) {
  *stats = GcStats();
  LFS_ASSIGN_OR_RETURN(auto batch, BeginWrite());
  // Live bytes per pack, from the index.
  std::map<uint64_t, uint64_t> live;
  std::map<uint64_t, PackEntry> packs;
  std::map<uint64_t, std::vector<std::pair<Digest, ChunkEntry>>> chunks_in;
  std::optional<uint64_t> active;
  {
    ReadTxn txn(*db_);
    LFS_RETURN_IF_ERROR(txn.Scan(Table::kPacks, "", [&](std::string_view k, std::string_view v) {
      auto p = PackEntry::Decode(v);
      if (p.ok()) packs[DecodeKeyU64(k)] = *p;
      return true;
    }));
    Status bad;
    LFS_RETURN_IF_ERROR(txn.Scan(Table::kChunks, "", [&](std::string_view k, std::string_view v) {
      auto e = ChunkEntry::Decode(v);
      auto d = Digest::Decode(reinterpret_cast<const uint8_t*>(k.data()), k.size());
      if (!e.ok() || !d) {
        bad = Status::Corruption("malformed chunk index entry");
        return false;
      }
      live[e->pack_id] += e->frame_len;
      chunks_in[e->pack_id].push_back({*d, *e});
      return true;
    }));
    LFS_RETURN_IF_ERROR(bad);
    LFS_ASSIGN_OR_RETURN(auto a, txn.Get(Table::kMeta, kMetaActivePack));
    if (a) active = DecodeKeyU64(*a);
  }
  std::vector<uint64_t> retire;
  for (const auto& [id, pe] : packs) {
    if (active && id == *active && !pe.sealed) continue;  // still being filled
    uint64_t payload = pe.length > kPackHeaderSize ? pe.length - kPackHeaderSize : 0;
    if (payload == 0) continue;
    double frac = static_cast<double>(live[id]) / static_cast<double>(payload);
    if (frac >= opts.min_live_fraction) continue;
    for (const auto& [d, e] : chunks_in[id]) {
      LFS_ASSIGN_OR_RETURN(std::string frame, ReadFrame(e));
      FrameHeader h;
      std::string_view payload_view;
      LFS_RETURN_IF_ERROR(DecodeFrame(frame, &h, &payload_view).Annotate("gc: chunk " + d.Hex()));
      LFS_RETURN_IF_ERROR(batch->MoveFrame(d, frame, e));
    }
    retire.push_back(id);
    stats->bytes_reclaimed += pe.length - live[id];
  }
  LFS_RETURN_IF_ERROR(batch->Commit([&](WriteTxn& txn) {
    for (uint64_t id : retire) LFS_RETURN_IF_ERROR(txn.Del(Table::kPacks, KeyU64(id)));
    return Status::OK();
  }));
  // Only now, with nothing referencing them, do the old packs go.
  for (uint64_t id : retire) {
    ForgetPackFile(id);
    if (live[id] > 0) stats->packs_rewritten++;
    stats->packs_deleted++;
    (void)env_->Remove(PackPath(id));
  }
  // Pack files no committed state knows (a crashed writer's new packs).
  auto lock = env_->Lock(path_ + "/LOCK");
  if (lock.ok()) {
    ReadTxn txn(*db_);
    LFS_ASSIGN_OR_RETURN(auto names, env_->ListDir(path_ + "/packs"));
    for (const auto& n : names) {
      if (n.size() != 21 || n.substr(16) != ".pack") continue;
      uint64_t id = std::strtoull(n.substr(0, 16).c_str(), nullptr, 16);
      LFS_ASSIGN_OR_RETURN(auto v, txn.Get(Table::kPacks, KeyU64(id)));
      if (!v) {
        (void)env_->Remove(PackPath(id));
        stats->orphan_files_removed++;
      }
    }
  }
  return env_->SyncDir(path_ + "/packs");
}

Status Store::VerifyChunks(std::vector<ChunkProblem>* problems, uint64_t* chunks_checked) {
  *chunks_checked = 0;
  std::vector<Digest> all;
  {
    ReadTxn txn(*db_);
    LFS_RETURN_IF_ERROR(txn.Scan(Table::kChunks, "", [&](std::string_view k, std::string_view) {
      auto d = Digest::Decode(reinterpret_cast<const uint8_t*>(k.data()), k.size());
      if (d) all.push_back(*d);
      return true;
    }));
  }
  DropCache();
  for (const Digest& d : all) {
    auto r = ReadChunk(d);
    (*chunks_checked)++;
    if (!r.ok()) {
      problems->push_back({d, r.status().ToString()});
      continue;
    }
    // A segment checksum that went bad is invisible to whole-chunk reads but
    // fails partial ones: check the frame's own checksum and the segments.
    Status s = VerifySegments(d, **r);
    if (!s.ok()) problems->push_back({d, s.ToString()});
  }
  DropCache();
  return Status::OK();
}

}  // namespace lfs
