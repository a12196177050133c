#include "lineage/sync.h"

#include <gtest/gtest.h>

#include <cerrno>
#include <cstdio>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <set>

#include "store/coding.h"
#include "store/fsck.h"
#include "store/pack.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace lfs::lineage {
namespace {

using ::lfs::testing::F32;
using json = nlohmann::json;
using Files = std::map<std::string, std::string>;

std::vector<float> WeightLike(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 0.02f);
  std::vector<float> v(n);
  for (auto& f : v) f = nd(rng);
  return v;
}

// A safetensors file: 8-byte LE header length, JSON header, data.
std::string Safetensors(const std::vector<std::pair<std::string, std::vector<float>>>& ts) {
  nlohmann::ordered_json h = nlohmann::ordered_json::object();
  std::string data;
  for (const auto& [name, vals] : ts) {
    std::string bytes = F32(vals);
    h[name] = {{"dtype", "F32"},
               {"shape", {static_cast<int64_t>(vals.size())}},
               {"data_offsets", {data.size(), data.size() + bytes.size()}}};
    data += bytes;
  }
  std::string js = h.dump();
  while (js.size() % 8) js.push_back(' ');
  std::string out(8, '\0');
  for (int i = 0; i < 8; i++) {
    out[i] = static_cast<char>(static_cast<uint64_t>(js.size()) >> (8 * i));
  }
  return out + js + data;
}

// Two tensors of 2.5 MiB each (3 chunks apiece); `tweak` perturbs a slice of
// the second one, as a fine-tune touching a few rows would.
std::string Checkpoint(uint32_t seed, int tweak = -1) {
  auto a = WeightLike(640 * 1024, seed);
  auto b = WeightLike(640 * 1024, seed + 1);
  if (tweak >= 0) {
    std::mt19937 rng(static_cast<uint32_t>(tweak));
    std::normal_distribution<float> nd(0.0f, 0.001f);
    for (size_t i = 0; i < 256 * 1024; i++) b[i] += nd(rng);
  }
  return Safetensors({{"layer.a", a}, {"layer.b", b}});
}

Result<VersionKey> MakeVersion(Lineage& lin, const std::string& model, const std::string& name,
                               std::vector<ParentSpec> parents, const Files& files,
                               bool commit = true, const std::string& metadata = "{}") {
  Lineage::DraftOptions o;
  o.name = name;
  o.parents = std::move(parents);
  o.create_model = true;
  o.author = "tester";
  o.message = "made " + model + "/" + name;
  o.metadata_json = metadata;
  LFS_ASSIGN_OR_RETURN(Version v, lin.CreateDraft(model, o));
  for (const auto& [fname, bytes] : files) {
    LFS_RETURN_IF_ERROR(lin.AddFile(v.key, fname, formats::MemoryAccess(bytes)).status());
  }
  if (commit) LFS_RETURN_IF_ERROR(lin.Commit(v.key));
  return v.key;
}

ParentSpec P(const std::string& m, const std::string& v, Relation r = Relation::kFinetune) {
  return ParentSpec{{m, v}, r};
}

std::string ReadAll(Store& store, const Digest& file) {
  auto r = FileReader::Open(store, file);
  if (!r.ok()) return "<open failed: " + r.status().ToString() + ">";
  std::string out((*r)->size(), '\0');
  auto n = (*r)->ReadAt(0, out.size(), out.data());
  if (!n.ok()) return "<read failed: " + n.status().ToString() + ">";
  out.resize(*n);
  return out;
}

std::map<Digest, ChunkEntry> Chunks(Store& s) {
  std::map<Digest, ChunkEntry> out;
  ReadTxn txn(s.db());
  EXPECT_OK(txn.Scan(Table::kChunks, "", [&](std::string_view k, std::string_view v) {
    auto d = Digest::Decode(reinterpret_cast<const uint8_t*>(k.data()), k.size());
    auto e = ChunkEntry::Decode(v);
    if (d && e.ok()) out[*d] = *e;
    return true;
  }));
  return out;
}

struct Side {
  testing::TempDir dir;
  std::unique_ptr<Store> store;
  std::unique_ptr<Lineage> lin;
  std::unique_ptr<StoreRemote> remote;

  void Open(Env* env = nullptr) {
    remote.reset();
    lin.reset();
    store.reset();
    StoreOptions so;
    so.env = env;
    auto s = Store::Open(dir.path(), so);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    store = std::move(s).value();
    lin = std::make_unique<Lineage>(*store);
    remote = std::make_unique<StoreRemote>(*store);
  }
  void Create(Env* env = nullptr) {
    StoreOptions so;
    so.env = env;
    ASSERT_OK(Store::Create(dir.path(), so));
    Open(env);
  }

  // fsck (chunks, tensors, refcounts) plus what the store layer cannot see:
  // file counts by versions and the children table against the parent edges.
  void ExpectConsistent(const std::string& who) {
    FsckReport rep;
    ASSERT_OK(Fsck(*store, &rep));
    for (const auto& e : rep.errors) ADD_FAILURE() << who << " fsck: " << e;
    std::map<Digest, uint64_t> file_refs;
    std::set<std::string> edges;
    auto models = lin->ListModels();
    ASSERT_OK(models);
    for (const auto& m : *models) {
      auto vs = lin->ListVersions(m);
      ASSERT_OK(vs);
      for (const auto& v : *vs) {
        for (const auto& [n, fe] : v.files) file_refs[fe.digest]++;
        for (const auto& p : v.parents) {
          if (!p.tombstone) edges.insert(ChildDbKey(p.parent, v.key));
        }
      }
    }
    ReadTxn txn(store->db());
    std::map<Digest, uint64_t> recorded;
    ASSERT_OK(txn.Scan(Table::kFiles, "", [&](std::string_view k, std::string_view v) {
      auto d = Digest::Decode(reinterpret_cast<const uint8_t*>(k.data()), k.size());
      auto f = FileRecipe::Decode(v);
      if (d && f.ok()) recorded[*d] = f->refs;
      return true;
    }));
    EXPECT_EQ(recorded, file_refs) << who << ": file reference counts";
    std::set<std::string> children;
    ASSERT_OK(txn.Scan(Table::kChildren, "", [&](std::string_view k, std::string_view) {
      children.emplace(k);
      return true;
    }));
    EXPECT_EQ(children, edges) << who << ": children entries";
  }

  std::vector<Version> Committed() {
    std::vector<Version> out;
    auto models = lin->ListModels();
    EXPECT_OK(models);
    for (const auto& m : *models) {
      auto vs = lin->ListVersions(m);
      EXPECT_OK(vs);
      for (const auto& v : *vs) {
        if (v.committed()) out.push_back(v);
      }
    }
    return out;
  }
};

// Every committed version of `from` is on `to` under the same name and reads
// back bit-exactly, with its lineage record intact.
void ExpectSameVersions(Side& from, Side& to) {
  for (const Version& v : from.Committed()) {
    SCOPED_TRACE(v.key.str());
    auto r = to.lin->GetVersion(v.key);
    ASSERT_OK(r);
    EXPECT_TRUE(r->committed());
    EXPECT_EQ(r->ContentId(), v.ContentId());
    EXPECT_EQ(r->author, v.author);
    EXPECT_EQ(r->message, v.message);
    EXPECT_EQ(r->created_ns, v.created_ns);
    EXPECT_EQ(r->committed_ns, v.committed_ns);
    EXPECT_EQ(json::parse(r->metadata_json), json::parse(v.metadata_json));
    EXPECT_EQ(r->predecessor, v.predecessor);
    ASSERT_EQ(r->parents.size(), v.parents.size());
    for (size_t i = 0; i < v.parents.size(); i++) {
      EXPECT_EQ(r->parents[i].parent, v.parents[i].parent);
      EXPECT_EQ(r->parents[i].relation, v.parents[i].relation);
      EXPECT_EQ(r->parents[i].tombstone, v.parents[i].tombstone);
      EXPECT_EQ(r->parents[i].content_id, v.parents[i].content_id);
    }
    for (const auto& [name, fe] : v.files) {
      std::string bytes = ReadAll(*to.store, fe.digest);
      EXPECT_EQ(bytes.size(), fe.size) << name;
      EXPECT_EQ(Digest::Of(bytes), fe.digest) << name;
      EXPECT_TRUE(bytes == ReadAll(*from.store, fe.digest)) << name;
    }
  }
}

class SyncTest : public ::testing::Test {
 protected:
  void SetUp() override {
    a_.Create();
    b_.Create();
  }
  // base/v1 -> ft/v1 -> ft/v2 (predecessor), base/v1 -> q/v1 (quantize).
  void MakeFamily(Side& s) {
    ASSERT_OK(MakeVersion(*s.lin, "base", "v1", {},
                          {{"model.safetensors", Checkpoint(1)}, {"config.json", "{\"d\":4}"}}));
    ASSERT_OK(MakeVersion(*s.lin, "ft", "v1", {P("base", "v1")},
                          {{"model.safetensors", Checkpoint(1, 10)}, {"config.json", "{\"d\":4}"}},
                          true, R"({"lr": 0.001})"));
    ASSERT_OK(MakeVersion(*s.lin, "ft", "v2", {P("base", "v1")},
                          {{"model.safetensors", Checkpoint(1, 11)}}));
    ASSERT_OK(MakeVersion(*s.lin, "q", "v1", {P("base", "v1", Relation::kQuantize)},
                          {{"model.safetensors", Checkpoint(1, 12)}}));
  }
  Result<SyncStats> Run(Remote& from, Remote& to, SyncOptions o = {}) { return Sync(from, to, o); }
  Side a_, b_;
};

TEST_F(SyncTest, CloneEqualsSourceAndSecondRunMovesNothing) {
  MakeFamily(a_);
  ASSERT_OK(a_.lin->Tag("ft", "best", "v1"));
  // A draft stays home; a removed parent travels as a tombstone edge.
  ASSERT_OK(MakeVersion(*a_.lin, "ft", "wip", {P("ft", "v2")}, {{"x.bin", "draft"}}, false));
  ASSERT_OK(MakeVersion(*a_.lin, "tmp", "v1", {}, {{"t.bin", std::string(100000, 't')}}));
  ASSERT_OK(MakeVersion(*a_.lin, "orphan", "v1", {P("tmp", "v1")}, {{"o.bin", "orphan"}}));
  ASSERT_OK(a_.lin->RemoveVersion({"tmp", "v1"}, true));

  ASSERT_OK_AND_ASSIGN(SyncStats st, Run(*a_.remote, *b_.remote));
  EXPECT_EQ(st.versions_sent, 5u);
  EXPECT_EQ(st.drafts_skipped, 1u);
  EXPECT_EQ(st.chunks_present, 0u);  // an empty receiver
  EXPECT_EQ(st.chunks_needed, st.chunks_sent);
  EXPECT_TRUE(st.renamed.empty());
  EXPECT_GT(st.frame_bytes, 0u);
  ExpectSameVersions(a_, b_);
  EXPECT_CODE(b_.lin->GetVersion({"ft", "wip"}), kNotFound);
  ASSERT_OK_AND_ASSIGN(Version orphan, b_.lin->GetVersion({"orphan", "v1"}));
  ASSERT_EQ(orphan.parents.size(), 1u);
  EXPECT_TRUE(orphan.parents[0].tombstone);
  ASSERT_OK_AND_ASSIGN(Model ft, b_.lin->GetModel("ft"));
  EXPECT_EQ(ft.tags["best"], "v1");
  ASSERT_OK_AND_ASSIGN(auto kids, b_.lin->Children({"base", "v1"}));
  EXPECT_EQ(kids.size(), 3u);
  // Same chunks, frames copied verbatim (same encodings), same counts; the
  // draft's one chunk stayed home.
  auto ca = Chunks(*a_.store), cb = Chunks(*b_.store);
  EXPECT_EQ(ca.size(), cb.size() + 1);
  for (const auto& [d, e] : cb) {
    ASSERT_TRUE(ca.count(d));
    EXPECT_EQ(ca[d].codec, e.codec);
    EXPECT_EQ(ca[d].frame_len, e.frame_len);
    EXPECT_EQ(ca[d].refs, e.refs);
  }
  a_.ExpectConsistent("sender");
  b_.ExpectConsistent("receiver");

  ASSERT_OK_AND_ASSIGN(SyncStats again, Run(*a_.remote, *b_.remote));
  EXPECT_EQ(again.versions_sent, 0u);
  EXPECT_EQ(again.versions_present, 5u);
  EXPECT_EQ(again.chunks_sent, 0u);
  EXPECT_EQ(again.frame_bytes, 0u);
  b_.ExpectConsistent("receiver after a second run");
}

TEST_F(SyncTest, DeltaBasesNewInTheSameVersionAndShallowerReceivers) {
  // The second checkpoint of one version deltas against the first: on the
  // receiver both frames arrive in one batch, base first.
  ASSERT_OK(MakeVersion(*a_.lin, "run", "v1", {},
                        {{"a.safetensors", Checkpoint(5)}, {"b.safetensors", Checkpoint(5, 20)}}));
  ASSERT_OK(MakeVersion(*a_.lin, "run", "v2", {}, {{"c.safetensors", Checkpoint(5, 21)}}));
  auto ca = Chunks(*a_.store);
  size_t deltas = 0;
  for (const auto& [d, e] : ca) deltas += !e.base.empty();
  ASSERT_GT(deltas, 0u);
  ASSERT_OK_AND_ASSIGN(SyncStats st, Run(*a_.remote, *b_.remote));
  EXPECT_EQ(st.chunks_sent, ca.size());
  ExpectSameVersions(a_, b_);
  b_.ExpectConsistent("receiver");
  // A receiver whose chains must stay shorter stores those chunks standalone.
  Side shallow;
  ASSERT_OK(Store::Create(shallow.dir.path()));
  {
    StoreOptions so;
    so.max_delta_depth = 0;
    auto s = Store::Open(shallow.dir.path(), so);
    ASSERT_OK(s);
    shallow.store = std::move(s).value();
    shallow.lin = std::make_unique<Lineage>(*shallow.store);
    shallow.remote = std::make_unique<StoreRemote>(*shallow.store);
  }
  ASSERT_OK(Run(*a_.remote, *shallow.remote));
  for (const auto& [d, e] : Chunks(*shallow.store)) {
    EXPECT_TRUE(e.base.empty()) << d.Hex();
  }
  ExpectSameVersions(a_, shallow);
  shallow.ExpectConsistent("shallow receiver");
}

TEST_F(SyncTest, PushOfAChildMovesOnlyItsNewChunks) {
  MakeFamily(a_);
  ASSERT_OK(Run(*a_.remote, *b_.remote));
  auto before = Chunks(*b_.store);
  ASSERT_OK(MakeVersion(*a_.lin, "ft", "v3", {P("ft", "v2")},
                        {{"model.safetensors", Checkpoint(1, 13)}}));
  // What the receiver lacks, from the two indexes.
  auto after_a = Chunks(*a_.store);
  uint64_t lacking = 0, lacking_bytes = 0;
  for (const auto& [d, e] : after_a) {
    if (!before.count(d)) {
      lacking++;
      lacking_bytes += e.frame_len;
    }
  }
  ASSERT_GT(lacking, 0u);
  ASSERT_LT(lacking, after_a.size() / 2);  // the family is mostly there already

  SyncOptions dry;
  dry.dry_run = true;
  ASSERT_OK_AND_ASSIGN(SyncStats plan, Run(*a_.remote, *b_.remote, dry));
  EXPECT_EQ(Chunks(*b_.store).size(), before.size());  // a dry run changes nothing
  EXPECT_CODE(b_.lin->GetVersion({"ft", "v3"}), kNotFound);

  ASSERT_OK_AND_ASSIGN(SyncStats st, Run(*a_.remote, *b_.remote));
  EXPECT_EQ(st.versions_sent, 1u);
  EXPECT_EQ(st.versions_present, 4u);
  EXPECT_EQ(st.chunks_sent, lacking);
  EXPECT_GT(st.chunks_present, 0u);  // unchanged chunks of the new checkpoint
  EXPECT_EQ(st.chunks_needed, st.chunks_present + st.chunks_sent);
  EXPECT_EQ(st.frame_bytes, lacking_bytes);
  EXPECT_EQ(plan.chunks_sent, st.chunks_sent);
  EXPECT_EQ(plan.frame_bytes, st.frame_bytes);
  EXPECT_EQ(plan.versions_sent, 1u);
  EXPECT_EQ(Chunks(*b_.store).size(), after_a.size());
  ExpectSameVersions(a_, b_);
  b_.ExpectConsistent("receiver");
}

TEST_F(SyncTest, ModelOptionSendsThatModelAndItsAncestorsOnly) {
  MakeFamily(a_);
  SyncOptions o;
  o.model = "ft";
  ASSERT_OK_AND_ASSIGN(SyncStats st, Run(*a_.remote, *b_.remote, o));
  EXPECT_EQ(st.versions_sent, 3u);  // base/v1, ft/v1, ft/v2
  EXPECT_OK(b_.lin->GetVersion({"base", "v1"}));
  EXPECT_OK(b_.lin->GetVersion({"ft", "v2"}));
  EXPECT_CODE(b_.lin->GetModel("q"), kNotFound);
  b_.ExpectConsistent("receiver");
  o.model = "nope";
  EXPECT_CODE(Run(*a_.remote, *b_.remote, o), kNotFound);
}

TEST_F(SyncTest, NameClashIsStoredUnderAPredictableNameAndRoundTripsToNothing) {
  ASSERT_OK(MakeVersion(*a_.lin, "m", "v1", {}, {{"w.bin", std::string(300000, 'a')}}));
  ASSERT_OK(MakeVersion(*a_.lin, "kid", "v1", {P("m", "v1")}, {{"k.bin", "kid"}}));
  ASSERT_OK(MakeVersion(*b_.lin, "m", "v1", {}, {{"w.bin", std::string(300000, 'b')}}));
  ASSERT_OK_AND_ASSIGN(Version am, a_.lin->GetVersion({"m", "v1"}));
  ASSERT_OK_AND_ASSIGN(Version bm, b_.lin->GetVersion({"m", "v1"}));
  std::string renamed = "v1-" + am.ContentId().Hex().substr(5, 8);
  EXPECT_EQ(ClashName("v1", am.ContentId()), renamed);

  ASSERT_OK_AND_ASSIGN(SyncStats st, Run(*a_.remote, *b_.remote));
  ASSERT_EQ(st.renamed.size(), 1u);
  EXPECT_EQ(st.renamed[0].first, "m/v1");
  EXPECT_EQ(st.renamed[0].second, "m/" + renamed);
  // The receiver keeps its own m/v1; the incoming one and the edge to it moved.
  ASSERT_OK_AND_ASSIGN(Version kept, b_.lin->GetVersion({"m", "v1"}));
  EXPECT_EQ(kept.ContentId(), bm.ContentId());
  ASSERT_OK_AND_ASSIGN(Version got, b_.lin->GetVersion({"m", renamed}));
  EXPECT_EQ(got.ContentId(), am.ContentId());
  // It is older than the receiver's own m/v1, which stays the latest.
  ASSERT_OK_AND_ASSIGN(auto latest, b_.lin->Latest("m"));
  EXPECT_EQ(latest, std::optional<std::string>("v1"));
  ASSERT_OK_AND_ASSIGN(Version kid, b_.lin->GetVersion({"kid", "v1"}));
  ASSERT_EQ(kid.parents.size(), 1u);
  EXPECT_EQ(kid.parents[0].parent.str(), "m/" + renamed);
  ASSERT_OK_AND_ASSIGN(auto kids, b_.lin->Children({"m", renamed}));
  ASSERT_EQ(kids.size(), 1u);
  EXPECT_EQ(kids[0].first.str(), "kid/v1");
  b_.ExpectConsistent("receiver");

  // Again: everything is recognised, nothing moves.
  ASSERT_OK_AND_ASSIGN(SyncStats again, Run(*a_.remote, *b_.remote));
  EXPECT_EQ(again.versions_sent, 0u);
  EXPECT_EQ(again.versions_present, 2u);
  EXPECT_TRUE(again.renamed.empty());
  ASSERT_EQ(again.matched.size(), 1u);
  EXPECT_EQ(again.matched[0].second, "m/" + renamed);
  // Pull back: B's own m/v1 clashes on A; B's m/<renamed> is A's m/v1.
  ASSERT_OK_AND_ASSIGN(SyncStats back, Run(*b_.remote, *a_.remote));
  EXPECT_EQ(back.versions_sent, 1u);
  EXPECT_EQ(back.sent, std::vector<std::string>{"m/v1-" + bm.ContentId().Hex().substr(5, 8)});
  ASSERT_EQ(back.matched.size(), 1u);
  EXPECT_EQ(back.matched[0].first, "m/" + renamed);
  EXPECT_EQ(back.matched[0].second, "m/v1");
  ASSERT_OK_AND_ASSIGN(Model m, a_.lin->GetModel("m"));
  EXPECT_EQ(m.versions.size(), 2u);
  a_.ExpectConsistent("sender after the pull back");
}

TEST_F(SyncTest, TestResultsAndDefinitionsMerge) {
  MakeFamily(a_);
  ASSERT_OK(Run(*a_.remote, *b_.remote));
  VersionKey k{"ft", "v1"};
  ASSERT_OK(a_.lin->PutMetadataKey(
      k, "tests",
      R"({"acc": {"passed": true, "time_ns": 100}, "loss": {"passed": true, "time_ns": 300}})"));
  ASSERT_OK(b_.lin->PutMetadataKey(
      k, "tests",
      R"({"acc": {"passed": false, "time_ns": 200}, "ppl": {"passed": true, "time_ns": 50}})"));
  auto put_def = [](Store& s, const std::string& name, const std::string& def) {
    auto b = s.BeginWrite();
    if (!b.ok()) return b.status();
    return (*b)->Commit([&](WriteTxn& txn) {
      return txn.Put(Table::kMeta, std::string(kTestDefPrefix) + name, def);
    });
  };
  ASSERT_OK(put_def(*a_.store, "acc", R"({"cmd": "eval-a {path}"})"));
  ASSERT_OK(put_def(*a_.store, "loss", R"({"cmd": "loss {path}"})"));
  ASSERT_OK(put_def(*b_.store, "acc", R"({"cmd": "eval-b {path}"})"));

  // Tags: added when missing, the receiver's own kept on a clash.
  ASSERT_OK(a_.lin->Tag("ft", "best", "v1"));
  ASSERT_OK(a_.lin->Tag("ft", "stable", "v1"));
  ASSERT_OK(b_.lin->Tag("ft", "best", "v2"));

  ASSERT_OK_AND_ASSIGN(SyncStats st, Run(*a_.remote, *b_.remote));
  EXPECT_EQ(st.versions_sent, 0u);
  EXPECT_EQ(st.tags_added, 1u);
  EXPECT_EQ(st.tag_clashes, std::vector<std::string>{"ft:best"});
  ASSERT_OK_AND_ASSIGN(Model ft, b_.lin->GetModel("ft"));
  EXPECT_EQ(ft.tags["best"], "v2");
  EXPECT_EQ(ft.tags["stable"], "v1");
  EXPECT_EQ(st.test_results_merged, 1u);  // loss; B's acc is newer
  EXPECT_EQ(st.test_defs_added, 1u);
  EXPECT_EQ(st.test_def_clashes, std::vector<std::string>{"acc"});
  ASSERT_OK_AND_ASSIGN(Version v, b_.lin->GetVersion(k));
  json tests = json::parse(v.metadata_json)["tests"];
  EXPECT_EQ(tests["acc"]["time_ns"], 200);
  EXPECT_EQ(tests["acc"]["passed"], false);
  EXPECT_EQ(tests["loss"]["time_ns"], 300);
  EXPECT_EQ(tests["ppl"]["time_ns"], 50);
  EXPECT_EQ(json::parse(v.metadata_json)["lr"], 0.001);  // other metadata untouched
  ASSERT_OK_AND_ASSIGN(auto defs, b_.remote->ListTestDefinitions());
  EXPECT_EQ(defs["acc"], R"({"cmd": "eval-b {path}"})");
  EXPECT_EQ(defs["loss"], R"({"cmd": "loss {path}"})");
  // A new version carries its results verbatim.
  ASSERT_OK(MakeVersion(*a_.lin, "ft", "v3", {P("ft", "v2")}, {{"n.bin", "new"}}, true,
                        R"({"tests": {"acc": {"passed": true, "time_ns": 7}}})"));
  ASSERT_OK(Run(*a_.remote, *b_.remote));
  ASSERT_OK_AND_ASSIGN(Version v3, b_.lin->GetVersion({"ft", "v3"}));
  EXPECT_EQ(json::parse(v3.metadata_json)["tests"]["acc"]["time_ns"], 7);
  b_.ExpectConsistent("receiver");
}

// Serves a forged frame for one chunk: a valid checksum around bytes that are
// not the chunk, as a lying or broken sender would.
class ForgingRemote : public Remote {
 public:
  explicit ForgingRemote(StoreRemote& inner) : in_(inner) {}
  std::string Describe() const override { return "forger"; }
  Result<std::vector<Model>> ListModels() override { return in_.ListModels(); }
  Result<std::vector<Version>> ListVersions(const std::string& m) override {
    return in_.ListVersions(m);
  }
  Result<std::optional<Version>> FindVersion(const VersionKey& k) override {
    return in_.FindVersion(k);
  }
  Result<std::vector<std::optional<ChunkInfo>>> StatChunks(const std::vector<Digest>& c) override {
    return in_.StatChunks(c);
  }
  Result<std::vector<bool>> HaveFiles(const std::vector<Digest>& f) override {
    return in_.HaveFiles(f);
  }
  Result<std::vector<bool>> HaveTensors(const std::vector<Digest>& t) override {
    return in_.HaveTensors(t);
  }
  Result<FileRecipe> GetFile(const Digest& d) override { return in_.GetFile(d); }
  Result<TensorObject> GetTensor(const Digest& d) override { return in_.GetTensor(d); }
  Result<std::string> ReadFrame(const Digest& d) override {
    LFS_ASSIGN_OR_RETURN(std::string frame, in_.ReadFrame(d));
    if (++served_ != 3) return frame;
    FrameHeader h;
    std::string_view payload;
    LFS_RETURN_IF_ERROR(DecodeFrame(frame, &h, &payload));
    h.codec = codec::CodecId::kRaw;
    h.base = Digest();
    return EncodeFrame(h, std::string(h.raw_len, 'x'));
  }
  Result<std::map<std::string, std::string>> ListTestDefinitions() override {
    return in_.ListTestDefinitions();
  }
  Result<ApplyStats> ApplyVersion(const VersionTransfer&) override {
    return Status::ReadOnly("forger");
  }
  Result<uint64_t> MergeTestResults(const VersionKey&, const std::string&) override {
    return Status::ReadOnly("forger");
  }
  Result<std::vector<std::string>> AddTestDefinitions(const std::map<std::string, std::string>&,
                                                      uint64_t*) override {
    return Status::ReadOnly("forger");
  }
  Result<std::vector<std::string>> MergeTags(const std::string&,
                                             const std::map<std::string, std::string>&,
                                             uint64_t*) override {
    return Status::ReadOnly("forger");
  }

 private:
  StoreRemote& in_;
  int served_ = 0;
};

TEST_F(SyncTest, TamperedFramesAreRefusedAndLeaveTheReceiverConsistent) {
  MakeFamily(a_);
  // 1. A forged frame with a valid checksum: the decoded bytes give it away.
  ForgingRemote forger(*a_.remote);
  auto r = Run(forger, *b_.remote);
  EXPECT_CODE(r, kCorruption);
  EXPECT_NE(r.status().message().find("do not match its address"), std::string::npos)
      << r.status().ToString();
  EXPECT_TRUE(b_.Committed().empty());
  b_.ExpectConsistent("receiver after a forged frame");

  // 2. A byte flipped inside a frame of the sender's pack (the sender serves
  //    frames verbatim, without checking them).
  auto chunks = Chunks(*a_.store);
  const auto& [victim, e] = *chunks.begin();
  std::string pack = a_.store->PackPath(e.pack_id);
  uint64_t at = e.offset + kFrameHeaderSize + e.frame_len / 4;
  {
    FILE* f = std::fopen(pack.c_str(), "r+b");
    ASSERT_NE(f, nullptr);
    ASSERT_EQ(std::fseek(f, static_cast<long>(at), SEEK_SET), 0);
    int c = std::fgetc(f);
    ASSERT_EQ(std::fseek(f, static_cast<long>(at), SEEK_SET), 0);
    std::fputc(c ^ 0x5a, f);
    std::fclose(f);
  }
  r = Run(*a_.remote, *b_.remote);
  EXPECT_CODE(r, kCorruption);
  EXPECT_NE(r.status().message().find(victim.Hex()), std::string::npos) << r.status().ToString();
  b_.ExpectConsistent("receiver after a damaged frame");
  for (const Version& v : b_.Committed()) {
    for (const auto& [name, fe] : v.files) {
      EXPECT_EQ(Digest::Of(ReadAll(*b_.store, fe.digest)), fe.digest) << v.key.str() << name;
    }
  }
}

TEST_F(SyncTest, FailedWriteOnTheReceiverLeavesItConsistentAndARerunCompletes) {
  MakeFamily(a_);
  FaultInjectionEnv fenv(Env::Default());
  b_.Open(&fenv);
  // How many appends a whole sync takes, on a scratch receiver.
  uint64_t total_appends = 0;
  {
    Side scratch;
    FaultInjectionEnv count_env(Env::Default());
    scratch.Create(&count_env);
    ASSERT_OK(Run(*a_.remote, *scratch.remote));
    total_appends = count_env.op_count(FaultInjectionEnv::Op::kAppend);
  }
  ASSERT_GT(total_appends, 10u);
  // Late enough that the first versions are in, early enough to hit the last.
  fenv.FailNth(FaultInjectionEnv::Op::kAppend, total_appends - 2, EIO);
  auto r = Run(*a_.remote, *b_.remote);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Status::Code::kIOError) << r.status().ToString();
  EXPECT_NE(r.status().message().find("sync of "), std::string::npos) << r.status().ToString();
  // Some versions arrived whole, the rest not at all.
  size_t arrived = b_.Committed().size();
  EXPECT_GT(arrived, 0u);
  EXPECT_LT(arrived, 4u);
  b_.ExpectConsistent("receiver after the failed write");
  for (const Version& v : b_.Committed()) {
    for (const auto& [name, fe] : v.files) {
      EXPECT_EQ(Digest::Of(ReadAll(*b_.store, fe.digest)), fe.digest) << v.key.str() << name;
    }
  }
  fenv.Reset();
  ASSERT_OK_AND_ASSIGN(SyncStats st, Run(*a_.remote, *b_.remote));
  EXPECT_EQ(st.versions_present, arrived);
  EXPECT_EQ(st.versions_sent, 4u - arrived);
  ExpectSameVersions(a_, b_);
  b_.ExpectConsistent("receiver after the rerun");
  // Reopened (the failed batch's torn tail is cut by the next writer): still clean.
  b_.Open();
  b_.ExpectConsistent("reopened receiver");
}

// Forwards everything; hooks let a test lie about records or act between the
// plan and the receiver's apply (as a concurrent writer would).
class Relay : public Remote {
 public:
  explicit Relay(Remote& inner) : in_(inner) {}
  std::function<void(FileRecipe*)> on_file;
  std::function<void(const Digest&, TensorObject*)> on_tensor;
  std::function<void(const VersionTransfer&)> before_apply;

  std::string Describe() const override { return "relay"; }
  Result<std::vector<Model>> ListModels() override { return in_.ListModels(); }
  Result<std::vector<Version>> ListVersions(const std::string& m) override {
    return in_.ListVersions(m);
  }
  Result<std::optional<Version>> FindVersion(const VersionKey& k) override {
    return in_.FindVersion(k);
  }
  Result<std::vector<std::optional<ChunkInfo>>> StatChunks(const std::vector<Digest>& c) override {
    return in_.StatChunks(c);
  }
  Result<std::vector<bool>> HaveFiles(const std::vector<Digest>& f) override {
    return in_.HaveFiles(f);
  }
  Result<std::vector<bool>> HaveTensors(const std::vector<Digest>& t) override {
    return in_.HaveTensors(t);
  }
  Result<FileRecipe> GetFile(const Digest& d) override {
    LFS_ASSIGN_OR_RETURN(FileRecipe f, in_.GetFile(d));
    if (on_file) on_file(&f);
    return f;
  }
  Result<TensorObject> GetTensor(const Digest& d) override {
    LFS_ASSIGN_OR_RETURN(TensorObject o, in_.GetTensor(d));
    if (on_tensor) on_tensor(d, &o);
    return o;
  }
  Result<std::string> ReadFrame(const Digest& d) override { return in_.ReadFrame(d); }
  Result<std::map<std::string, std::string>> ListTestDefinitions() override {
    return in_.ListTestDefinitions();
  }
  Result<ApplyStats> ApplyVersion(const VersionTransfer& t) override {
    if (before_apply) before_apply(t);
    return in_.ApplyVersion(t);
  }
  Result<uint64_t> MergeTestResults(const VersionKey& k, const std::string& j) override {
    return in_.MergeTestResults(k, j);
  }
  Result<std::vector<std::string>> AddTestDefinitions(const std::map<std::string, std::string>& d,
                                                      uint64_t* added) override {
    return in_.AddTestDefinitions(d, added);
  }
  Result<std::vector<std::string>> MergeTags(const std::string& m,
                                             const std::map<std::string, std::string>& t,
                                             uint64_t* added) override {
    return in_.MergeTags(m, t, added);
  }

 private:
  Remote& in_;
};

TEST_F(SyncTest, PredecessorThatDidNotTravelIsDropped) {
  // m/v2's predecessor is a draft that stays home; r/v2's was removed on the
  // sender, and the receiver holds an unrelated r/v1.
  ASSERT_OK(MakeVersion(*a_.lin, "m", "v1", {}, {{"w.bin", "one"}}));
  ASSERT_OK(MakeVersion(*a_.lin, "m", "wip", {}, {{"w.bin", "draft"}}, false));
  ASSERT_OK(MakeVersion(*a_.lin, "m", "v2", {}, {{"w.bin", "two"}}));
  ASSERT_OK(MakeVersion(*a_.lin, "m", "v3", {}, {{"w.bin", "three"}}));
  ASSERT_OK(MakeVersion(*a_.lin, "r", "v1", {}, {{"r.bin", "sender's r1"}}));
  ASSERT_OK(MakeVersion(*a_.lin, "r", "v2", {}, {{"r.bin", "r2"}}));
  ASSERT_OK(a_.lin->RemoveVersion({"r", "v1"}, true));
  ASSERT_OK(MakeVersion(*b_.lin, "r", "v1", {}, {{"r.bin", "receiver's r1"}}));
  ASSERT_OK_AND_ASSIGN(Version a2, a_.lin->GetVersion({"m", "v2"}));
  ASSERT_EQ(a2.predecessor, std::optional<std::string>("wip"));
  ASSERT_OK_AND_ASSIGN(Version ar2, a_.lin->GetVersion({"r", "v2"}));
  ASSERT_EQ(ar2.predecessor, std::optional<std::string>("v1"));

  ASSERT_OK(Run(*a_.remote, *b_.remote));
  ASSERT_OK_AND_ASSIGN(Version b2, b_.lin->GetVersion({"m", "v2"}));
  EXPECT_EQ(b2.predecessor, std::nullopt);
  ASSERT_OK_AND_ASSIGN(Version b3, b_.lin->GetVersion({"m", "v3"}));
  EXPECT_EQ(b3.predecessor, std::optional<std::string>("v2"));  // it travelled: kept
  ASSERT_OK_AND_ASSIGN(Version br2, b_.lin->GetVersion({"r", "v2"}));
  EXPECT_EQ(br2.predecessor, std::nullopt);
  b_.ExpectConsistent("receiver");
}

TEST_F(SyncTest, ClashNamesOfLongNamesStayValidAndRoundTrip) {
  const std::string ascii(250, 'n');
  std::string emoji = "x";  // 4-byte characters: the cut must not split one
  for (int i = 0; i < 62; i++) emoji += "\xF0\x9F\x98\x80";
  for (const std::string& name : {ascii, emoji}) {
    ASSERT_OK(MakeVersion(*a_.lin, "m", name, {}, {{"w.bin", "sender " + name}}));
    ASSERT_OK(MakeVersion(*b_.lin, "m", name, {}, {{"w.bin", "receiver " + name}}));
    ASSERT_OK_AND_ASSIGN(Version av, a_.lin->GetVersion({"m", name}));
    for (bool full : {false, true}) {
      std::string c = ClashName(name, av.ContentId(), full);
      EXPECT_OK(ValidateName("version", c));
      EXPECT_LE(c.size(), 255u);
    }
  }
  ASSERT_OK_AND_ASSIGN(SyncStats st, Run(*a_.remote, *b_.remote));
  EXPECT_EQ(st.versions_sent, 2u);
  ASSERT_EQ(st.renamed.size(), 2u);
  b_.ExpectConsistent("receiver");
  ASSERT_OK_AND_ASSIGN(SyncStats again, Run(*a_.remote, *b_.remote));
  EXPECT_EQ(again.versions_sent, 0u);
  EXPECT_EQ(again.matched.size(), 2u);
  // Pull back: the renamed ones are the sender's own, only B's own travel.
  ASSERT_OK_AND_ASSIGN(SyncStats back, Run(*b_.remote, *a_.remote));
  EXPECT_EQ(back.versions_sent, 2u);
  EXPECT_EQ(back.matched.size(), 2u);
  ASSERT_OK_AND_ASSIGN(Model m, a_.lin->GetModel("m"));
  EXPECT_EQ(m.versions.size(), 4u);
  a_.ExpectConsistent("sender after the pull back");
}

TEST_F(SyncTest, FullHexClashNameRoundTripsToNothing) {
  ASSERT_OK(MakeVersion(*a_.lin, "m", "v1", {}, {{"w.bin", "X"}}));
  ASSERT_OK_AND_ASSIGN(Version av, a_.lin->GetVersion({"m", "v1"}));
  const std::string short_name = ClashName("v1", av.ContentId(), false);
  const std::string full_name = ClashName("v1", av.ContentId(), true);
  ASSERT_OK(MakeVersion(*b_.lin, "m", "v1", {}, {{"w.bin", "Y"}}));
  ASSERT_OK(MakeVersion(*b_.lin, "m", short_name, {}, {{"w.bin", "Z"}}));
  ASSERT_OK_AND_ASSIGN(SyncStats st, Run(*a_.remote, *b_.remote));
  ASSERT_EQ(st.renamed.size(), 1u);
  EXPECT_EQ(st.renamed[0].second, "m/" + full_name);
  ASSERT_OK_AND_ASSIGN(SyncStats back, Run(*b_.remote, *a_.remote));
  EXPECT_CODE(a_.lin->GetVersion({"m", full_name}), kNotFound);
  bool matched = false;
  for (const auto& [from, to] : back.matched) matched |= from == "m/" + full_name && to == "m/v1";
  EXPECT_TRUE(matched);
  a_.ExpectConsistent("sender after the pull back");
}

TEST_F(SyncTest, TombstoneEdgeComesBackToLifeWhenTheReceiverHoldsTheParent) {
  ASSERT_OK(MakeVersion(*a_.lin, "m", "v1", {}, {{"w.bin", std::string(100000, 'm')}}));
  ASSERT_OK(MakeVersion(*a_.lin, "n", "v1", {}, {{"w.bin", std::string(100000, 'n')}}));
  ASSERT_OK(MakeVersion(*b_.lin, "n", "v1", {}, {{"w.bin", std::string(100000, 'N')}}));
  ASSERT_OK_AND_ASSIGN(Version an, a_.lin->GetVersion({"n", "v1"}));
  const std::string renamed = ClashName("v1", an.ContentId());
  ASSERT_OK(Run(*a_.remote, *b_.remote));
  ASSERT_OK(b_.lin->GetVersion({"n", renamed}));
  // Children made after the sync, their parents then removed on the sender.
  ASSERT_OK(MakeVersion(*a_.lin, "kid", "v1", {P("m", "v1")}, {{"k.bin", "kid"}}));
  ASSERT_OK(MakeVersion(*a_.lin, "kid2", "v1", {P("n", "v1")}, {{"k.bin", "kid2"}}));
  ASSERT_OK(a_.lin->RemoveVersion({"m", "v1"}, true));
  ASSERT_OK(a_.lin->RemoveVersion({"n", "v1"}, true));
  ASSERT_OK(Run(*a_.remote, *b_.remote));
  ASSERT_OK_AND_ASSIGN(Version kid, b_.lin->GetVersion({"kid", "v1"}));
  ASSERT_EQ(kid.parents.size(), 1u);
  EXPECT_FALSE(kid.parents[0].tombstone);
  EXPECT_EQ(kid.parents[0].parent.str(), "m/v1");
  ASSERT_OK_AND_ASSIGN(Version kid2, b_.lin->GetVersion({"kid2", "v1"}));
  ASSERT_EQ(kid2.parents.size(), 1u);
  EXPECT_FALSE(kid2.parents[0].tombstone);
  EXPECT_EQ(kid2.parents[0].parent.str(), "n/" + renamed);  // not B's own n/v1
  ASSERT_OK_AND_ASSIGN(auto kids, b_.lin->Children({"m", "v1"}));
  ASSERT_EQ(kids.size(), 1u);
  EXPECT_EQ(kids[0].first.str(), "kid/v1");
  ASSERT_OK_AND_ASSIGN(auto kids2, b_.lin->Children({"n", renamed}));
  EXPECT_EQ(kids2.size(), 1u);
  ASSERT_OK_AND_ASSIGN(auto none, b_.lin->Children({"n", "v1"}));
  EXPECT_TRUE(none.empty());
  b_.ExpectConsistent("receiver");
  // On a receiver without the parent it stays a tombstone.
  Side c;
  c.Create();
  ASSERT_OK(Run(*a_.remote, *c.remote));
  ASSERT_OK_AND_ASSIGN(Version ckid, c.lin->GetVersion({"kid", "v1"}));
  EXPECT_TRUE(ckid.parents[0].tombstone);
  c.ExpectConsistent("fresh receiver");
}

TEST_F(SyncTest, ForgedObjectRecordsAreRefused) {
  ASSERT_OK(MakeVersion(*a_.lin, "base", "v1", {}, {{"model.safetensors", Checkpoint(3)}}));
  ASSERT_OK_AND_ASSIGN(Version av, a_.lin->GetVersion({"base", "v1"}));
  ASSERT_OK_AND_ASSIGN(FileRecipe real,
                       LoadFile(*a_.store, av.files.at("model.safetensors").digest));
  size_t tensor_extent = real.extents.size();
  for (size_t i = 0; i < real.extents.size(); i++) {
    if (real.extents[i].kind == Extent::Kind::kTensor) {
      tensor_extent = i;
      break;
    }
  }
  ASSERT_LT(tensor_extent, real.extents.size());
  struct Forgery {
    const char* what;
    std::function<void(FileRecipe*)> file;
    std::function<void(const Digest&, TensorObject*)> tensor;
  };
  std::vector<Forgery> forgeries = {
      {"extents longer than the file", [](FileRecipe* f) { f->extents.back().length += 1; }, {}},
      {"an extent past its tensor",
       [&](FileRecipe* f) { f->extents[tensor_extent].object_offset += 8; },
       {}},
      {"a generic extent past its chunk",
       [](FileRecipe* f) {
         ASSERT_EQ(f->extents[0].kind, Extent::Kind::kChunk);
         f->extents[0].object_offset += 1 << 20;
       },
       {}},
      {"a tensor view past its object",
       [](FileRecipe* f) {
         ASSERT_FALSE(f->tensors.empty());
         f->tensors.back().object_offset += 8;
       },
       {}},
      {"tensor chunks out of order",
       {},
       [](const Digest&, TensorObject* o) {
         if (o->chunks.size() > 1) std::swap(o->chunks.front(), o->chunks.back());
       }},
      {"a tensor longer than its chunks",
       {},
       [](const Digest&, TensorObject* o) { o->nbytes += 4; }},
      {"a tensor derived from itself",
       {},
       [](const Digest& self, TensorObject* o) {
         o->derivation = Derivation::kCast;
         o->from_dtype = formats::DType::kF32;
         o->to_dtype = formats::DType::kBF16;
         o->derived_from = self;
       }},
  };
  for (const auto& fg : forgeries) {
    SCOPED_TRACE(fg.what);
    Relay relay(*a_.remote);
    relay.on_file = fg.file;
    relay.on_tensor = fg.tensor;
    auto r = Run(relay, *b_.remote);
    EXPECT_CODE(r, kCorruption);
    EXPECT_TRUE(b_.Committed().empty());
    b_.ExpectConsistent("receiver");
  }
  ASSERT_OK(Run(*a_.remote, *b_.remote));  // the honest sender still gets through
  ExpectSameVersions(a_, b_);
  b_.ExpectConsistent("receiver after the honest sync");
}

TEST_F(SyncTest, ConcurrentSyncTakingTheClashNameMakesThisOneChooseAnother) {
  ASSERT_OK(MakeVersion(*a_.lin, "m", "v1", {}, {{"w.bin", "X"}}));
  ASSERT_OK(MakeVersion(*a_.lin, "kid", "v1", {P("m", "v1")}, {{"k.bin", "kid"}}));
  ASSERT_OK(MakeVersion(*b_.lin, "m", "v1", {}, {{"w.bin", "Y"}}));
  ASSERT_OK_AND_ASSIGN(Version av, a_.lin->GetVersion({"m", "v1"}));
  const std::string short_name = ClashName("v1", av.ContentId(), false);
  const std::string full_name = ClashName("v1", av.ContentId(), true);
  Relay relay(*b_.remote);
  bool raced = false;
  relay.before_apply = [&](const VersionTransfer& t) {
    if (raced || t.version.key.version != short_name) return;
    raced = true;  // another writer takes the planned name first
    EXPECT_OK(MakeVersion(*b_.lin, "m", short_name, {}, {{"w.bin", "Z"}}));
  };
  ASSERT_OK_AND_ASSIGN(SyncStats st, Run(*a_.remote, relay));
  EXPECT_TRUE(raced);
  ASSERT_EQ(st.renamed.size(), 1u);
  EXPECT_EQ(st.renamed[0].second, "m/" + full_name);
  ASSERT_OK_AND_ASSIGN(Version got, b_.lin->GetVersion({"m", full_name}));
  EXPECT_EQ(got.ContentId(), av.ContentId());
  ASSERT_OK_AND_ASSIGN(Version kid, b_.lin->GetVersion({"kid", "v1"}));
  EXPECT_EQ(kid.parents[0].parent.str(), "m/" + full_name);
  b_.ExpectConsistent("receiver");
}

// p1/v1, p2/v1 and merge/v1 whose tensor is their mean (stored as kMean2).
void MakeMerge(Side& s, Digest* merged) {
  const size_t n = 512 * 1024;
  auto a = WeightLike(n, 41), b = WeightLike(n, 42);
  std::vector<float> m(n);
  for (size_t i = 0; i < n; i++) m[i] = 0.5f * a[i] + 0.5f * b[i];
  ASSERT_OK(MakeVersion(*s.lin, "p1", "v1", {}, {{"w.safetensors", Safetensors({{"w", a}})}}));
  ASSERT_OK(MakeVersion(*s.lin, "p2", "v1", {}, {{"w.safetensors", Safetensors({{"w", b}})}}));
  ASSERT_OK(MakeVersion(*s.lin, "merge", "v1",
                        {P("p1", "v1", Relation::kMerge), P("p2", "v1", Relation::kMerge)},
                        {{"w.safetensors", Safetensors({{"w", m}})}}));
  ASSERT_OK_AND_ASSIGN(Version v, s.lin->GetVersion({"merge", "v1"}));
  ASSERT_OK_AND_ASSIGN(FileRecipe f, LoadFile(*s.store, v.files.at("w.safetensors").digest));
  for (const auto& e : f.extents) {
    if (e.kind != Extent::Kind::kTensor) continue;
    ASSERT_OK_AND_ASSIGN(TensorObject o, LoadTensor(*s.store, e.digest));
    ASSERT_EQ(o.derivation, Derivation::kMean2);
    *merged = e.digest;
  }
}

TEST_F(SyncTest, MergeWhoseSecondSourceIsAlreadyOnTheReceiver) {
  Digest merged;
  MakeMerge(a_, &merged);
  SyncOptions o;
  o.model = "p2";
  ASSERT_OK(Run(*a_.remote, *b_.remote, o));
  ASSERT_OK_AND_ASSIGN(SyncStats st, Run(*a_.remote, *b_.remote));
  EXPECT_EQ(st.versions_sent, 2u);
  ASSERT_OK_AND_ASSIGN(TensorObject got, LoadTensor(*b_.store, merged));
  EXPECT_EQ(got.derivation, Derivation::kMean2);
  ExpectSameVersions(a_, b_);
  a_.ExpectConsistent("sender");
  b_.ExpectConsistent("receiver");
}

TEST_F(SyncTest, MergeWhoseSecondParentWasRemovedOnTheSender) {
  Digest merged;
  MakeMerge(a_, &merged);
  ASSERT_OK(a_.lin->RemoveVersion({"p2", "v1"}, true));
  a_.ExpectConsistent("sender after the removal");
  ASSERT_OK_AND_ASSIGN(SyncStats st, Run(*a_.remote, *b_.remote));
  EXPECT_EQ(st.versions_sent, 2u);
  ExpectSameVersions(a_, b_);
  a_.ExpectConsistent("sender");
  b_.ExpectConsistent("receiver");
  // A forged record without the second source is refused.
  Side c;
  c.Create();
  Relay relay(*a_.remote);
  relay.on_tensor = [](const Digest&, TensorObject* o) { o->derived_from2 = Digest(); };
  EXPECT_CODE(Run(relay, *c.remote), kCorruption);
  c.ExpectConsistent("receiver of the forged merge");
}

}  // namespace
}  // namespace lfs::lineage
