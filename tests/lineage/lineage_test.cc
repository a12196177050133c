#include "lineage/lineage.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>
#include <random>
#include <set>

#include "lineage/diff.h"
#include "lineage/usage.h"
#include "store/formats/safetensors.h"
#include "store/fsck.h"
#include "store/objects.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace lfs::lineage {
namespace {

// ---------------------------------------------------------------------------
// Helpers

using ::lfs::testing::F32;

std::vector<float> WeightLike(size_t n, uint32_t seed, float scale = 0.02f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, scale);
  std::vector<float> v(n);
  for (auto& f : v) f = nd(rng);
  return v;
}

struct TensorSpec {
  std::string name;
  std::string dtype;  // safetensors spelling: "F32", "BF16", ...
  std::vector<int64_t> shape;
  std::string data;
};

// A safetensors file written by hand: 8-byte LE header length, JSON, data.
std::string Safetensors(const std::vector<TensorSpec>& ts) {
  nlohmann::ordered_json h = nlohmann::ordered_json::object();
  uint64_t off = 0;
  std::string data;
  for (const auto& t : ts) {
    h[t.name] = {
        {"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {off, off + t.data.size()}}};
    off += t.data.size();
    data += t.data;
  }
  std::string js = h.dump();
  while (js.size() % 8) js.push_back(' ');
  std::string out(8, '\0');
  for (int i = 0; i < 8; i++)
    out[i] = static_cast<char>(static_cast<uint64_t>(js.size()) >> (8 * i));
  return out + js + data;
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

std::vector<std::string> Names(const std::vector<std::pair<VersionKey, Relation>>& v) {
  std::vector<std::string> out;
  for (const auto& [k, r] : v) out.push_back(k.str());
  return out;
}
std::vector<std::string> Names(const std::vector<VersionKey>& v) {
  std::vector<std::string> out;
  for (const auto& k : v) out.push_back(k.str());
  return out;
}

uint64_t PackBytes(Store& s) {
  uint64_t p = 0, l = 0;
  EXPECT_OK(s.PackUsage(&p, &l));
  return p;
}

using Files = std::map<std::string, std::string>;

// Creates (model created when missing), fills and optionally commits a version.
Result<VersionKey> MakeVersion(Lineage& lin, const std::string& model,
                               std::optional<std::string> name,
                               std::vector<ParentSpec> parents = {}, const Files& files = {},
                               bool commit = true) {
  Lineage::DraftOptions o;
  o.name = std::move(name);
  o.parents = std::move(parents);
  o.create_model = true;
  o.author = "tester";
  LFS_ASSIGN_OR_RETURN(Version v, lin.CreateDraft(model, o));
  for (const auto& [fname, bytes] : files) {
    LFS_ASSIGN_OR_RETURN(auto f, lin.AddFile(v.key, fname, formats::MemoryAccess(bytes)));
    (void)f;
  }
  if (commit) LFS_RETURN_IF_ERROR(lin.Commit(v.key));
  return v.key;
}

Lineage::DraftOptions Opts(std::vector<ParentSpec> parents = {}, bool create_model = false) {
  Lineage::DraftOptions o;
  o.parents = std::move(parents);
  o.create_model = create_model;
  return o;
}

ParentSpec P(const VersionKey& k, Relation r = Relation::kFinetune) { return ParentSpec{k, r}; }

class LineageTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_OK(Store::Create(dir_.path(), opts_));
    Reopen();
  }
  void Reopen() {
    lin_.reset();
    store_.reset();
    auto s = Store::Open(dir_.path(), opts_);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    store_ = std::move(s).value();
    lin_ = std::make_unique<Lineage>(*store_);
  }
  void ExpectFsckClean() {
    FsckReport rep;
    ASSERT_OK(Fsck(*store_, &rep));
    for (const auto& e : rep.errors) ADD_FAILURE() << "fsck: " << e;
  }

  testing::TempDir dir_;
  StoreOptions opts_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<Lineage> lin_;
};

// ---------------------------------------------------------------------------
// Names, relations, keys

TEST(LineageNamesTest, ValidateNameRefusals) {
  const std::vector<std::string> bad = {
      "",
      ".",
      "..",
      "a/b",
      "/",
      std::string("a\0b", 3),
      std::string(1, '\0'),
      "tab\there",
      "new\nline",
      "esc\x1b",
      "del\x7f",
      std::string(256, 'x'),
  };
  for (const auto& n : bad) {
    EXPECT_CODE(ValidateName("model", n), kInvalidArgument);
  }
  for (const std::string n :
       {"a", "...", ".hidden", "a.b", "bert-base_v2", "ünïcødé", "a b", "@x", "latest"}) {
    EXPECT_OK(ValidateName("model", n));
  }
  EXPECT_OK(ValidateName("model", std::string(255, 'x')));
}

TEST(LineageNamesTest, ParseRelationAndNames) {
  for (Relation r : {Relation::kFinetune, Relation::kQuantize, Relation::kPrune, Relation::kDistill,
                     Relation::kAdapter, Relation::kMerge, Relation::kOther}) {
    auto back = ParseRelation(RelationName(r));
    ASSERT_TRUE(back.has_value()) << RelationName(r);
    EXPECT_EQ(*back, r);
  }
  EXPECT_EQ(ParseRelation("fine-tune"), Relation::kFinetune);
  EXPECT_EQ(ParseRelation("finetuned"), Relation::kFinetune);
  EXPECT_EQ(ParseRelation("quantized"), Relation::kQuantize);
  EXPECT_EQ(ParseRelation("pruned"), Relation::kPrune);
  EXPECT_EQ(ParseRelation("lora"), Relation::kAdapter);
  EXPECT_EQ(ParseRelation("merged"), Relation::kMerge);
  EXPECT_FALSE(ParseRelation("").has_value());
  EXPECT_FALSE(ParseRelation("Finetune").has_value());
  EXPECT_FALSE(ParseRelation("bogus").has_value());
  EXPECT_EQ(static_cast<int>(Relation::kFinetune), 1);  // frozen numbers
  EXPECT_EQ(static_cast<int>(Relation::kOther), 7);
}

TEST(LineageNamesTest, VersionKeyParse) {
  auto k = VersionKey::Parse("bert/v2");
  ASSERT_OK(k);
  EXPECT_EQ(k->model, "bert");
  EXPECT_EQ(k->version, "v2");
  EXPECT_EQ(k->str(), "bert/v2");
  for (const char* s : {"bert", "bert/v2/x", "/v2", "bert/", "", "/", "../v1", "bert/.."}) {
    SCOPED_TRACE(s);
    EXPECT_CODE(VersionKey::Parse(s), kInvalidArgument);
  }
}

// ---------------------------------------------------------------------------
// Models

TEST_F(LineageTest, CreateModelAndRefusals) {
  ASSERT_OK(lin_->CreateModel("bert"));
  ASSERT_OK(lin_->CreateModel("alpha"));
  EXPECT_CODE(lin_->CreateModel("bert"), kAlreadyExists);
  for (const auto& n : {std::string(""), std::string("."), std::string(".."), std::string("a/b"),
                        std::string("x\0y", 3), std::string("c\x01"), std::string(256, 'm')}) {
    EXPECT_CODE(lin_->CreateModel(n), kInvalidArgument);
  }
  ASSERT_OK_AND_ASSIGN(auto models, lin_->ListModels());
  EXPECT_EQ(models, (std::vector<std::string>{"alpha", "bert"}));
  ASSERT_OK_AND_ASSIGN(Model m, lin_->GetModel("bert"));
  EXPECT_EQ(m.name, "bert");
  EXPECT_TRUE(m.versions.empty());
  EXPECT_GT(m.created_ns, 0);
  EXPECT_CODE(lin_->GetModel("nope"), kNotFound);
  // Survives a reopen.
  Reopen();
  ASSERT_OK_AND_ASSIGN(models, lin_->ListModels());
  EXPECT_EQ(models.size(), 2u);
}

TEST_F(LineageTest, RenameModelCarriesVersionsAndEdges) {
  ASSERT_OK_AND_ASSIGN(VersionKey b1, MakeVersion(*lin_, "base", "v1", {}, {{"f", "one"}}));
  ASSERT_OK_AND_ASSIGN(VersionKey b2, MakeVersion(*lin_, "base", "v2", {P(b1)}, {{"f", "two"}}));
  ASSERT_OK_AND_ASSIGN(VersionKey f1, MakeVersion(*lin_, "ft", "v1", {P(b1)}, {{"f", "three"}}));
  ASSERT_OK_AND_ASSIGN(VersionKey q1, MakeVersion(*lin_, "q", "v1", {P(b2, Relation::kQuantize)}));
  ASSERT_OK(lin_->Tag("base", "prod", "v1"));
  ASSERT_OK_AND_ASSIGN(Version b1v, lin_->GetVersion(b1));
  ASSERT_OK_AND_ASSIGN(Version b2v, lin_->GetVersion(b2));

  ASSERT_OK(lin_->RenameModel("base", "foundation"));
  EXPECT_CODE(lin_->GetModel("base"), kNotFound);
  EXPECT_CODE(lin_->GetVersion(b1), kNotFound);
  ASSERT_OK_AND_ASSIGN(Model m, lin_->GetModel("foundation"));
  EXPECT_EQ(m.name, "foundation");
  EXPECT_EQ(m.versions, (std::vector<std::string>{"v1", "v2"}));
  EXPECT_EQ(m.tags.at("prod"), "v1");
  VersionKey n1{"foundation", "v1"}, n2{"foundation", "v2"};
  ASSERT_OK_AND_ASSIGN(Version n1v, lin_->GetVersion(n1));
  EXPECT_EQ(n1v.key, n1);
  EXPECT_TRUE(n1v.committed());
  EXPECT_EQ(n1v.ContentId(), b1v.ContentId());  // content unchanged
  EXPECT_EQ(n1v.files.size(), 1u);
  ASSERT_OK_AND_ASSIGN(Version n2v, lin_->GetVersion(n2));
  ASSERT_EQ(n2v.parents.size(), 1u);
  EXPECT_EQ(n2v.parents[0].parent, n1);  // intra-model edge follows
  EXPECT_EQ(n2v.ContentId(), b2v.ContentId());
  // Children's parent edges read the new name.
  ASSERT_OK_AND_ASSIGN(Version f1v, lin_->GetVersion(f1));
  ASSERT_EQ(f1v.parents.size(), 1u);
  EXPECT_EQ(f1v.parents[0].parent, n1);
  EXPECT_FALSE(f1v.parents[0].tombstone);
  ASSERT_OK_AND_ASSIGN(Version q1v, lin_->GetVersion(q1));
  EXPECT_EQ(q1v.parents[0].parent, n2);
  EXPECT_EQ(q1v.parents[0].relation, Relation::kQuantize);
  // Queries of the renamed versions work.
  ASSERT_OK_AND_ASSIGN(auto kids, lin_->Children(n1));
  EXPECT_EQ(Names(kids), (std::vector<std::string>{"foundation/v2", "ft/v1"}));
  ASSERT_OK_AND_ASSIGN(auto kids2, lin_->Children(n2));
  EXPECT_EQ(Names(kids2), (std::vector<std::string>{"q/v1"}));
  ASSERT_EQ(kids2.size(), 1u);
  EXPECT_EQ(kids2[0].second, Relation::kQuantize);
  ASSERT_OK_AND_ASSIGN(auto old_kids, lin_->Children(b1));
  EXPECT_TRUE(old_kids.empty());
  ASSERT_OK_AND_ASSIGN(auto anc, lin_->Ancestors(q1));
  EXPECT_EQ(Names(anc), (std::vector<std::string>{"foundation/v2", "foundation/v1"}));
  ASSERT_OK_AND_ASSIGN(auto desc, lin_->Descendants(n1));
  EXPECT_EQ(Names(desc), (std::vector<std::string>{"foundation/v2", "ft/v1", "q/v1"}));
  ASSERT_OK_AND_ASSIGN(auto latest, lin_->Latest("foundation"));
  EXPECT_EQ(latest, std::optional<std::string>("v2"));
  // A new version of the renamed model continues its numbering.
  ASSERT_OK_AND_ASSIGN(Version d, lin_->CreateDraft("foundation", {}));
  EXPECT_EQ(d.key.version, "v3");

  // Renaming the child's model moves the children entries too.
  ASSERT_OK(lin_->RenameModel("ft", "ft2"));
  ASSERT_OK_AND_ASSIGN(kids, lin_->Children(n1));
  EXPECT_EQ(Names(kids), (std::vector<std::string>{"foundation/v2", "ft2/v1"}));
  ASSERT_OK_AND_ASSIGN(auto anc2, lin_->Ancestors({"ft2", "v1"}));
  EXPECT_EQ(Names(anc2), (std::vector<std::string>{"foundation/v1"}));

  // Refusals.
  EXPECT_CODE(lin_->RenameModel("nope", "x"), kNotFound);
  EXPECT_CODE(lin_->RenameModel("foundation", "q"), kAlreadyExists);
  EXPECT_CODE(lin_->RenameModel("foundation", "a/b"), kInvalidArgument);
  EXPECT_CODE(lin_->RenameModel("foundation", ""), kInvalidArgument);
  ExpectFsckClean();
}

TEST_F(LineageTest, RenameModelWithLaterIntraModelParent) {
  // v1 is a draft whose parent is v2 of the same model (created later): the
  // rename must still rewrite both the edge and the children entry.
  ASSERT_OK_AND_ASSIGN(VersionKey d1, MakeVersion(*lin_, "m", "v1", {}, {}, /*commit=*/false));
  ASSERT_OK_AND_ASSIGN(VersionKey c2, MakeVersion(*lin_, "m", "v2"));
  ASSERT_OK(lin_->SetParents(d1, {P(c2)}));
  ASSERT_OK(lin_->RenameModel("m", "n"));
  ASSERT_OK_AND_ASSIGN(Version v1, lin_->GetVersion({"n", "v1"}));
  ASSERT_EQ(v1.parents.size(), 1u);
  EXPECT_EQ(v1.parents[0].parent.str(), "n/v2");
  ASSERT_OK_AND_ASSIGN(auto kids, lin_->Children({"n", "v2"}));
  EXPECT_EQ(Names(kids), (std::vector<std::string>{"n/v1"}));
  ASSERT_OK_AND_ASSIGN(auto stale_kids, lin_->Children({"m", "v2"}));
  EXPECT_TRUE(stale_kids.empty());
}

TEST_F(LineageTest, RemoveModel) {
  ASSERT_OK(lin_->CreateModel("empty"));
  ASSERT_OK_AND_ASSIGN(VersionKey k, MakeVersion(*lin_, "full", std::nullopt));
  EXPECT_CODE(lin_->RemoveModel("full"), kNotEmpty);
  EXPECT_CODE(lin_->RemoveModel("nope"), kNotFound);
  ASSERT_OK(lin_->RemoveModel("empty"));
  EXPECT_CODE(lin_->GetModel("empty"), kNotFound);
  ASSERT_OK(lin_->RemoveVersion(k, false));
  ASSERT_OK(lin_->RemoveModel("full"));
  ASSERT_OK_AND_ASSIGN(auto models, lin_->ListModels());
  EXPECT_TRUE(models.empty());
}

// Names are bytes (a mount passes whatever mkdir/creat got). Records are
// JSON, which needs UTF-8: a name that is not UTF-8 must be refused
// (InvalidArgument) or stored faithfully, never thrown as an exception, and
// the store must stay usable.
TEST_F(LineageTest, NonUtf8NamesAreRefusedOrRoundTrip) {
  // Runs f; an exception is a test failure (and nullopt).
  auto no_throw = [](const char* what, auto&& f) -> std::optional<decltype(f())> {
    try {
      return f();
    } catch (const std::exception& e) {
      ADD_FAILURE() << what << " threw: " << e.what();
      return std::nullopt;
    }
  };
  const std::string latin1 = "caf\xe9";  // "café" in Latin-1
  if (auto s = no_throw("CreateModel", [&] { return lin_->CreateModel(latin1); })) {
    if (s->ok()) {
      auto m = lin_->GetModel(latin1);
      ASSERT_OK(m);
      EXPECT_EQ(m->name, latin1);
    } else {
      EXPECT_CODE(*s, kInvalidArgument);
    }
  }
  ASSERT_OK_AND_ASSIGN(VersionKey k, MakeVersion(*lin_, "m", "v1", {}, {}, false));
  if (auto r = no_throw("AddFile", [&] {
        return lin_->AddFile(k, "\xff\xfe.bin", formats::MemoryAccess("x"));
      })) {
    if (r->ok()) {
      auto v = lin_->GetVersion(k);
      ASSERT_OK(v);
      EXPECT_TRUE(v->files.count("\xff\xfe.bin"));
    } else {
      EXPECT_CODE(*r, kInvalidArgument);
    }
  }
  Lineage::DraftOptions o;
  o.name = "v\xff";
  if (auto r = no_throw("CreateDraft", [&] { return lin_->CreateDraft("m", o); })) {
    if (!r->ok()) {
      EXPECT_CODE(*r, kInvalidArgument);
    }
  }
  // Still usable afterwards.
  ASSERT_OK(lin_->CreateModel("after"));
  ASSERT_OK(lin_->AddFile(k, "ok.bin", formats::MemoryAccess("y")));
  ExpectFsckClean();
}

// ---------------------------------------------------------------------------
// Drafts

TEST_F(LineageTest, DraftNames) {
  ASSERT_OK(lin_->CreateModel("m"));
  ASSERT_OK_AND_ASSIGN(Version a, lin_->CreateDraft("m", {}));
  ASSERT_OK_AND_ASSIGN(Version b, lin_->CreateDraft("m", {}));
  EXPECT_EQ(a.key.version, "v1");
  EXPECT_EQ(b.key.version, "v2");
  EXPECT_FALSE(a.committed());
  EXPECT_FALSE(a.predecessor.has_value());
  EXPECT_EQ(b.predecessor, std::optional<std::string>("v1"));
  EXPECT_LT(a.seq, b.seq);
  Lineage::DraftOptions named;
  named.name = "best";
  named.message = "hand named";
  named.metadata_json = R"({"lr": 0.001})";
  ASSERT_OK_AND_ASSIGN(Version c, lin_->CreateDraft("m", named));
  EXPECT_EQ(c.key.version, "best");
  EXPECT_EQ(c.message, "hand named");
  EXPECT_EQ(nlohmann::json::parse(c.metadata_json)["lr"], 0.001);
  // A user name that looks like a default one is skipped by the numbering.
  named.name = "v3";
  ASSERT_OK(lin_->CreateDraft("m", named));
  ASSERT_OK_AND_ASSIGN(Version d, lin_->CreateDraft("m", {}));
  EXPECT_EQ(d.key.version, "v4");
  // Refusals.
  named.name = "latest";
  EXPECT_CODE(lin_->CreateDraft("m", named), kInvalidArgument);
  named.name = "best";
  EXPECT_CODE(lin_->CreateDraft("m", named), kAlreadyExists);
  for (const auto& bad : {std::string(""), std::string(".."), std::string("a/b"),
                          std::string("n\0l", 3), std::string(256, 'v')}) {
    named.name = bad;
    EXPECT_CODE(lin_->CreateDraft("m", named), kInvalidArgument);
  }
  Lineage::DraftOptions badmd;
  badmd.metadata_json = "[1,2]";
  EXPECT_CODE(lin_->CreateDraft("m", badmd), kInvalidArgument);
  badmd.metadata_json = "{not json";
  EXPECT_CODE(lin_->CreateDraft("m", badmd), kInvalidArgument);
  EXPECT_CODE(lin_->CreateDraft("nope", {}), kNotFound);
  EXPECT_CODE(lin_->CreateDraft("a/b", Opts({}, true)), kInvalidArgument);
  ASSERT_OK_AND_ASSIGN(Version e, lin_->CreateDraft("fresh", Opts({}, true)));
  EXPECT_EQ(e.key.str(), "fresh/v1");
  ASSERT_OK_AND_ASSIGN(Model m, lin_->GetModel("m"));
  EXPECT_EQ(m.versions, (std::vector<std::string>{"v1", "v2", "best", "v3", "v4"}));
  ASSERT_OK_AND_ASSIGN(auto list, lin_->ListVersions("m"));
  ASSERT_EQ(list.size(), 5u);
  EXPECT_EQ(list[2].key.version, "best");
  EXPECT_CODE(lin_->ListVersions("nope"), kNotFound);
}

TEST_F(LineageTest, DraftFileOperations) {
  ASSERT_OK_AND_ASSIGN(VersionKey k, MakeVersion(*lin_, "m", "v1", {}, {}, false));
  std::string cfg = R"({"hidden": 64})";
  ASSERT_OK_AND_ASSIGN(auto f, lin_->AddFile(k, "config.json", formats::MemoryAccess(cfg)));
  EXPECT_EQ(f.size, cfg.size());
  EXPECT_EQ(f.digest, Digest::Of(cfg));
  ASSERT_OK(lin_->AddFile(k, "README", formats::MemoryAccess("readme")));
  ASSERT_OK_AND_ASSIGN(Version v, lin_->GetVersion(k));
  ASSERT_EQ(v.files.size(), 2u);
  EXPECT_EQ(v.files.at("config.json").size, cfg.size());
  EXPECT_EQ(ReadAll(*store_, v.files.at("config.json").digest), cfg);
  // Replacing a file.
  ASSERT_OK(lin_->AddFile(k, "README", formats::MemoryAccess("readme 2")));
  ASSERT_OK_AND_ASSIGN(v, lin_->GetVersion(k));
  EXPECT_EQ(ReadAll(*store_, v.files.at("README").digest), "readme 2");
  // Rename, rename onto an existing file (replaces it), remove.
  ASSERT_OK(lin_->RenameFile(k, "README", "README.md"));
  ASSERT_OK_AND_ASSIGN(v, lin_->GetVersion(k));
  EXPECT_FALSE(v.files.count("README"));
  EXPECT_EQ(ReadAll(*store_, v.files.at("README.md").digest), "readme 2");
  ASSERT_OK(lin_->RenameFile(k, "README.md", "config.json"));
  ASSERT_OK_AND_ASSIGN(v, lin_->GetVersion(k));
  ASSERT_EQ(v.files.size(), 1u);
  EXPECT_EQ(ReadAll(*store_, v.files.at("config.json").digest), "readme 2");
  ASSERT_OK(lin_->RenameFile(k, "config.json", "config.json"));  // no-op
  EXPECT_CODE(lin_->RenameFile(k, "missing", "x"), kNotFound);
  EXPECT_CODE(lin_->RenameFile(k, "config.json", "a/b"), kInvalidArgument);
  EXPECT_CODE(lin_->RemoveFile(k, "missing"), kNotFound);
  EXPECT_CODE(lin_->AddFile(k, "..", formats::MemoryAccess("x")), kInvalidArgument);
  EXPECT_CODE(lin_->AddFile(k, "", formats::MemoryAccess("x")), kInvalidArgument);
  EXPECT_CODE(lin_->AddFile({"m", "nope"}, "f", formats::MemoryAccess("x")), kNotFound);
  ASSERT_OK(lin_->RemoveFile(k, "config.json"));
  ASSERT_OK_AND_ASSIGN(v, lin_->GetVersion(k));
  EXPECT_TRUE(v.files.empty());
  // Replaced and removed files released their references.
  ExpectFsckClean();
  uint64_t packs = 0, live = 0;
  ASSERT_OK(store_->PackUsage(&packs, &live));
  EXPECT_EQ(live, 0u);
}

TEST_F(LineageTest, MessagesAndMetadata) {
  ASSERT_OK_AND_ASSIGN(VersionKey k, MakeVersion(*lin_, "m", "v1", {}, {}, false));
  ASSERT_OK(lin_->SetMessage(k, "first try"));
  ASSERT_OK(lin_->SetMetadata(k, R"({"acc": 0.9, "cmd": "train.py"})"));
  EXPECT_CODE(lin_->SetMetadata(k, "[]"), kInvalidArgument);
  EXPECT_CODE(lin_->SetMetadata(k, "{"), kInvalidArgument);
  ASSERT_OK(lin_->SetMetadata(k, R"({"acc": 0.95})"));  // replaces
  ASSERT_OK_AND_ASSIGN(Version v, lin_->GetVersion(k));
  EXPECT_EQ(v.message, "first try");
  auto md = nlohmann::json::parse(v.metadata_json);
  EXPECT_EQ(md["acc"], 0.95);
  EXPECT_FALSE(md.contains("cmd"));
  ASSERT_OK(lin_->Commit(k));
  // Annotation of a committed version is allowed; content is not.
  ASSERT_OK(lin_->PutMetadataKey(k, "tests", R"({"mmlu": 0.61})"));
  EXPECT_CODE(lin_->PutMetadataKey(k, "bad", "{nope"), kInvalidArgument);
  ASSERT_OK_AND_ASSIGN(v, lin_->GetVersion(k));
  md = nlohmann::json::parse(v.metadata_json);
  EXPECT_EQ(md["acc"], 0.95);
  EXPECT_EQ(md["tests"]["mmlu"], 0.61);
  EXPECT_CODE(lin_->SetMessage({"m", "nope"}, "x"), kNotFound);
}

// ---------------------------------------------------------------------------
// Parents

TEST_F(LineageTest, ParentRefusals) {
  ASSERT_OK_AND_ASSIGN(VersionKey base, MakeVersion(*lin_, "base", "v1"));
  ASSERT_OK_AND_ASSIGN(VersionKey draft, MakeVersion(*lin_, "base", "v2", {}, {}, false));
  Lineage::DraftOptions o;
  // Missing parent.
  o.parents = {P({"base", "v9"})};
  EXPECT_CODE(lin_->CreateDraft("ft", Opts(o.parents, true)), kInvalidArgument);
  o.parents = {P({"ghost", "v1"})};
  EXPECT_CODE(lin_->CreateDraft("ft", Opts(o.parents, true)), kInvalidArgument);
  // A refused draft left nothing behind (not even the model it would create).
  EXPECT_CODE(lin_->GetModel("ft"), kNotFound);
  // Draft parent.
  EXPECT_CODE(lin_->CreateDraft("base", Opts({P(draft)})), kInvalidArgument);
  // Duplicate parent.
  EXPECT_CODE(lin_->CreateDraft("base", Opts({P(base), P(base, Relation::kMerge)})),
              kInvalidArgument);
  ASSERT_OK_AND_ASSIGN(Model m, lin_->GetModel("base"));
  EXPECT_EQ(m.versions.size(), 2u);
  // Self parent (only a draft can have its parents set, and a draft cannot be
  // a parent: the self-parent check fires first).
  EXPECT_CODE(lin_->SetParents(draft, {P(draft)}), kInvalidArgument);
  EXPECT_CODE(lin_->SetParents(draft, {P({"base", "v9"})}), kInvalidArgument);
  EXPECT_CODE(lin_->SetParents(draft, {P(base), P(base)}), kInvalidArgument);
  // Parents of a committed version are frozen.
  EXPECT_CODE(lin_->SetParents(base, {}), kReadOnly);
  EXPECT_CODE(lin_->SetParents({"base", "nope"}, {}), kNotFound);
  // A good SetParents, then replacing the parents updates children entries.
  ASSERT_OK_AND_ASSIGN(VersionKey other, MakeVersion(*lin_, "other", "v1"));
  ASSERT_OK(lin_->SetParents(draft, {P(base, Relation::kPrune)}));
  ASSERT_OK_AND_ASSIGN(auto kids, lin_->Children(base));
  ASSERT_EQ(kids.size(), 1u);
  EXPECT_EQ(kids[0].first, draft);
  EXPECT_EQ(kids[0].second, Relation::kPrune);
  ASSERT_OK(lin_->SetParents(draft, {P(other), P(base, Relation::kMerge)}));
  ASSERT_OK_AND_ASSIGN(Version dv, lin_->GetVersion(draft));
  ASSERT_EQ(dv.parents.size(), 2u);
  EXPECT_EQ(dv.parents[0].parent, other);
  EXPECT_EQ(dv.parents[1].relation, Relation::kMerge);
  ASSERT_OK_AND_ASSIGN(Version bv, lin_->GetVersion(base));
  EXPECT_EQ(dv.parents[1].content_id, bv.ContentId().Hex());
  ASSERT_OK_AND_ASSIGN(kids, lin_->Children(base));
  EXPECT_EQ(kids.size(), 1u);
  ASSERT_OK_AND_ASSIGN(kids, lin_->Children(other));
  EXPECT_EQ(kids.size(), 1u);
  ASSERT_OK(lin_->SetParents(draft, {}));
  ASSERT_OK_AND_ASSIGN(kids, lin_->Children(base));
  EXPECT_TRUE(kids.empty());
  ASSERT_OK_AND_ASSIGN(kids, lin_->Children(other));
  EXPECT_TRUE(kids.empty());
}

// A cycle cannot be built through the API: parents must be committed, only
// drafts take new parents, and a draft cannot be anyone's parent, so no draft
// has descendants. The closest thing is reusing a removed version's name: the
// children of the removed version keep a tombstone edge that names it, and
// the new version of that name may then take such a child as its parent. The
// graph walks must not treat the tombstone as a live edge (no loop).
TEST_F(LineageTest, NoCycleThroughReusedNameOfRemovedVersion) {
  ASSERT_OK_AND_ASSIGN(VersionKey a, MakeVersion(*lin_, "A", "v1", {}, {{"f", "a"}}));
  ASSERT_OK_AND_ASSIGN(VersionKey b, MakeVersion(*lin_, "B", "v1", {P(a)}, {{"f", "b"}}));
  // Self parent and draft parent are the only cycle-shaped requests possible.
  ASSERT_OK_AND_ASSIGN(VersionKey d, MakeVersion(*lin_, "C", "v1", {}, {}, false));
  EXPECT_CODE(lin_->SetParents(d, {P(d)}), kInvalidArgument);
  ASSERT_OK_AND_ASSIGN(VersionKey e, MakeVersion(*lin_, "C", "v2", {}, {}, false));
  EXPECT_CODE(lin_->SetParents(d, {P(e)}), kInvalidArgument);
  EXPECT_CODE(lin_->SetParents(e, {P(d)}), kInvalidArgument);

  ASSERT_OK(lin_->RemoveVersion(a, /*force=*/true));
  Lineage::DraftOptions o;
  o.name = "v1";
  ASSERT_OK_AND_ASSIGN(Version a2, lin_->CreateDraft("A", o));
  ASSERT_OK(lin_->SetParents(a2.key, {P(b)}));
  ASSERT_OK(lin_->Commit(a2.key));
  ASSERT_OK_AND_ASSIGN(auto anc_a, lin_->Ancestors(a2.key));
  EXPECT_EQ(Names(anc_a), (std::vector<std::string>{"B/v1"}));
  ASSERT_OK_AND_ASSIGN(auto anc_b, lin_->Ancestors(b));
  EXPECT_EQ(Names(anc_b), (std::vector<std::string>{"A/v1"}));  // the tombstone
  ASSERT_OK_AND_ASSIGN(Version bv, lin_->GetVersion(b));
  EXPECT_TRUE(bv.parents[0].tombstone);
  ASSERT_OK_AND_ASSIGN(auto desc_a, lin_->Descendants(a2.key));
  EXPECT_TRUE(desc_a.empty());
  ASSERT_OK_AND_ASSIGN(auto desc_b, lin_->Descendants(b));
  EXPECT_EQ(Names(desc_b), (std::vector<std::string>{"A/v1"}));
  ASSERT_OK(lin_->StaleReasons(a2.key));
  ASSERT_OK(lin_->StaleReasons(b));
}

// ---------------------------------------------------------------------------
// Commit and immutability

TEST_F(LineageTest, CommittedVersionsAreImmutable) {
  ASSERT_OK_AND_ASSIGN(VersionKey k, MakeVersion(*lin_, "m", "v1", {}, {{"a.txt", "aaa"}}, false));
  ASSERT_OK_AND_ASSIGN(Version before, lin_->GetVersion(k));
  EXPECT_EQ(before.committed_ns, 0);
  EXPECT_EQ(before.mtime_ns(), before.created_ns);
  ASSERT_OK(lin_->Commit(k));
  ASSERT_OK_AND_ASSIGN(Version v, lin_->GetVersion(k));
  EXPECT_TRUE(v.committed());
  EXPECT_GE(v.committed_ns, v.created_ns);
  EXPECT_EQ(v.mtime_ns(), v.committed_ns);
  EXPECT_EQ(v.ContentId(), before.ContentId());
  EXPECT_CODE(lin_->Commit(k), kInvalidArgument);
  EXPECT_CODE(lin_->Commit({"m", "nope"}), kNotFound);
  EXPECT_CODE(lin_->AddFile(k, "b.txt", formats::MemoryAccess("b")), kReadOnly);
  EXPECT_CODE(lin_->AddFile(k, "a.txt", formats::MemoryAccess("b")), kReadOnly);
  EXPECT_CODE(lin_->RemoveFile(k, "a.txt"), kReadOnly);
  EXPECT_CODE(lin_->RenameFile(k, "a.txt", "c.txt"), kReadOnly);
  EXPECT_CODE(lin_->SetMessage(k, "x"), kReadOnly);
  EXPECT_CODE(lin_->SetMetadata(k, "{}"), kReadOnly);
  EXPECT_CODE(lin_->SetParents(k, {}), kReadOnly);
  ASSERT_OK_AND_ASSIGN(Version after, lin_->GetVersion(k));
  EXPECT_EQ(after.ContentId(), v.ContentId());
  EXPECT_EQ(after.files.size(), 1u);
  EXPECT_EQ(ReadAll(*store_, after.files.at("a.txt").digest), "aaa");
}

TEST_F(LineageTest, ContentIdDependsOnNamesAndBytes) {
  ASSERT_OK_AND_ASSIGN(VersionKey a, MakeVersion(*lin_, "m", "a", {}, {{"x", "1"}, {"y", "2"}}));
  ASSERT_OK_AND_ASSIGN(VersionKey b, MakeVersion(*lin_, "m", "b", {}, {{"y", "2"}, {"x", "1"}}));
  ASSERT_OK_AND_ASSIGN(VersionKey c, MakeVersion(*lin_, "m", "c", {}, {{"x", "2"}, {"y", "1"}}));
  ASSERT_OK_AND_ASSIGN(VersionKey d, MakeVersion(*lin_, "m", "d", {}, {{"x1", ""}, {"y", "2"}}));
  ASSERT_OK_AND_ASSIGN(Version va, lin_->GetVersion(a));
  ASSERT_OK_AND_ASSIGN(Version vb, lin_->GetVersion(b));
  ASSERT_OK_AND_ASSIGN(Version vc, lin_->GetVersion(c));
  ASSERT_OK_AND_ASSIGN(Version vd, lin_->GetVersion(d));
  EXPECT_EQ(va.ContentId(), vb.ContentId());
  EXPECT_NE(va.ContentId(), vc.ContentId());
  EXPECT_NE(va.ContentId(), vd.ContentId());
}

// ---------------------------------------------------------------------------
// Removal

TEST_F(LineageTest, RemoveVersionWithChildren) {
  ASSERT_OK_AND_ASSIGN(VersionKey g, MakeVersion(*lin_, "root", "v1", {}, {{"f", "root"}}));
  ASSERT_OK_AND_ASSIGN(VersionKey b1, MakeVersion(*lin_, "base", "v1", {P(g)}, {{"f", "base"}}));
  ASSERT_OK_AND_ASSIGN(VersionKey ft, MakeVersion(*lin_, "ft", "v1", {P(b1)}, {{"f", "ft"}}));
  ASSERT_OK(lin_->Tag("base", "prod", "v1"));
  ASSERT_OK_AND_ASSIGN(Version b1v, lin_->GetVersion(b1));
  std::string cid = b1v.ContentId().Hex();

  EXPECT_CODE(lin_->RemoveVersion(b1, false), kNotEmpty);
  ASSERT_OK(lin_->GetVersion(b1));  // still there
  ASSERT_OK(lin_->RemoveVersion(b1, true));
  EXPECT_CODE(lin_->GetVersion(b1), kNotFound);
  EXPECT_CODE(lin_->RemoveVersion(b1, true), kNotFound);
  ASSERT_OK_AND_ASSIGN(Version ftv, lin_->GetVersion(ft));
  ASSERT_EQ(ftv.parents.size(), 1u);
  EXPECT_TRUE(ftv.parents[0].tombstone);
  EXPECT_EQ(ftv.parents[0].parent, b1);
  EXPECT_EQ(ftv.parents[0].content_id, cid);
  ASSERT_OK_AND_ASSIGN(auto anc, lin_->Ancestors(ft));
  EXPECT_EQ(Names(anc), (std::vector<std::string>{"base/v1"}));  // a tombstone ends the walk
  ASSERT_OK_AND_ASSIGN(auto kids, lin_->Children(g));
  EXPECT_TRUE(kids.empty());  // base/v1 left its parent's children
  ASSERT_OK_AND_ASSIGN(auto desc, lin_->Descendants(g));
  EXPECT_TRUE(desc.empty());
  ASSERT_OK_AND_ASSIGN(Model m, lin_->GetModel("base"));
  EXPECT_TRUE(m.versions.empty());
  EXPECT_FALSE(m.tags.count("prod"));  // tags of a removed version go
  ASSERT_OK_AND_ASSIGN(auto latest, lin_->Latest("base"));
  EXPECT_FALSE(latest.has_value());
  ASSERT_OK_AND_ASSIGN(auto stale, lin_->StaleReasons(ft));
  EXPECT_TRUE(stale.empty());
  // The child still reads; it can now be removed without force.
  ASSERT_OK_AND_ASSIGN(ftv, lin_->GetVersion(ft));
  EXPECT_EQ(ReadAll(*store_, ftv.files.at("f").digest), "ft");
  ASSERT_OK(lin_->RemoveVersion(ft, false));
  ASSERT_OK(lin_->RemoveVersion(g, false));
  ExpectFsckClean();
}

TEST_F(LineageTest, RemoveDraftVersion) {
  ASSERT_OK_AND_ASSIGN(VersionKey b, MakeVersion(*lin_, "base", "v1"));
  ASSERT_OK_AND_ASSIGN(VersionKey d, MakeVersion(*lin_, "ft", "v1", {P(b)}, {{"f", "x"}}, false));
  ASSERT_OK(lin_->RemoveVersion(d, false));
  ASSERT_OK_AND_ASSIGN(auto kids, lin_->Children(b));
  EXPECT_TRUE(kids.empty());
  ExpectFsckClean();
}

TEST_F(LineageTest, RemovingVersionsReleasesFilesAndGcReclaims) {
  opts_.pack_target_bytes = 256 << 10;  // packs seal early so gc can rewrite them
  Reopen();
  std::string big = Safetensors({{"w", "F32", {65536}, F32(WeightLike(65536, 1))},
                                 {"b", "F32", {1024}, F32(WeightLike(1024, 2))}});
  std::string big2 = Safetensors({{"w", "F32", {65536}, F32(WeightLike(65536, 3))},
                                  {"b", "F32", {1024}, F32(WeightLike(1024, 2))}});
  std::mt19937 rng(9);
  std::string generic(300000, '\0');
  for (auto& c : generic) c = static_cast<char>(rng());
  ASSERT_OK_AND_ASSIGN(VersionKey a, MakeVersion(*lin_, "m", "v1", {},
                                                 {{"model.safetensors", big}, {"blob", generic}}));
  ASSERT_OK_AND_ASSIGN(VersionKey b, MakeVersion(*lin_, "m", "v2", {P(a)},
                                                 {{"model.safetensors", big2}, {"blob", generic}}));
  ASSERT_OK_AND_ASSIGN(VersionKey c,
                       MakeVersion(*lin_, "n", "v1", {}, {{"copy.safetensors", big}}));
  ExpectFsckClean();
  // Removing one user of shared content keeps the others readable.
  ASSERT_OK(lin_->RemoveVersion(a, true));
  ExpectFsckClean();
  ASSERT_OK_AND_ASSIGN(Version bv, lin_->GetVersion(b));
  ASSERT_OK_AND_ASSIGN(Version cv, lin_->GetVersion(c));
  store_->DropCache();
  EXPECT_EQ(ReadAll(*store_, bv.files.at("model.safetensors").digest), big2);
  EXPECT_EQ(ReadAll(*store_, bv.files.at("blob").digest), generic);
  EXPECT_EQ(ReadAll(*store_, cv.files.at("copy.safetensors").digest), big);
  // Remove everything.
  ASSERT_OK(lin_->RemoveVersion(b, false));
  ASSERT_OK(lin_->RemoveVersion(c, false));
  ExpectFsckClean();
  uint64_t packs = 0, live = 0;
  ASSERT_OK(store_->PackUsage(&packs, &live));
  EXPECT_EQ(live, 0u);
  EXPECT_GT(packs, 0u);
  GcStats gs;
  ASSERT_OK(store_->Gc(GcOptions{}, &gs));
  EXPECT_GT(gs.bytes_reclaimed, 0u);
  EXPECT_GT(gs.packs_deleted, 0u);
  uint64_t packs_after = 0;
  ASSERT_OK(store_->PackUsage(&packs_after, &live));
  EXPECT_LT(packs_after, packs);
  EXPECT_LE(packs_after, opts_.pack_target_bytes + (1 << 20));  // at most the active pack
  Reopen();
  ExpectFsckClean();
}

// ---------------------------------------------------------------------------
// Tags and latest

TEST_F(LineageTest, TagsAndUntag) {
  ASSERT_OK_AND_ASSIGN(VersionKey v1, MakeVersion(*lin_, "m", std::nullopt));
  ASSERT_OK_AND_ASSIGN(VersionKey v2, MakeVersion(*lin_, "m", std::nullopt));
  ASSERT_OK(lin_->Tag("m", "prod", v1.version));
  ASSERT_OK(lin_->Tag("m", "canary", v2.version));
  ASSERT_OK(lin_->Tag("m", "prod", v2.version));  // moves
  ASSERT_OK_AND_ASSIGN(Model m, lin_->GetModel("m"));
  EXPECT_EQ(m.tags, (std::map<std::string, std::string>{{"canary", "v2"}, {"prod", "v2"}}));
  EXPECT_CODE(lin_->Tag("m", "latest", "v1"), kInvalidArgument);
  EXPECT_CODE(lin_->Tag("m", "a/b", "v1"), kInvalidArgument);
  EXPECT_CODE(lin_->Tag("m", "", "v1"), kInvalidArgument);
  EXPECT_CODE(lin_->Tag("m", "x", "v9"), kNotFound);
  EXPECT_CODE(lin_->Tag("nope", "x", "v1"), kNotFound);
  ASSERT_OK(lin_->Untag("m", "canary"));
  EXPECT_CODE(lin_->Untag("m", "canary"), kNotFound);
  EXPECT_CODE(lin_->Untag("nope", "prod"), kNotFound);
  ASSERT_OK_AND_ASSIGN(m, lin_->GetModel("m"));
  EXPECT_EQ(m.tags, (std::map<std::string, std::string>{{"prod", "v2"}}));
}

TEST_F(LineageTest, LatestSkipsDrafts) {
  ASSERT_OK(lin_->CreateModel("m"));
  ASSERT_OK_AND_ASSIGN(auto l, lin_->Latest("m"));
  EXPECT_FALSE(l.has_value());
  EXPECT_CODE(lin_->Latest("nope"), kNotFound);
  ASSERT_OK_AND_ASSIGN(VersionKey d1, MakeVersion(*lin_, "m", std::nullopt, {}, {}, false));
  ASSERT_OK_AND_ASSIGN(l, lin_->Latest("m"));
  EXPECT_FALSE(l.has_value());
  ASSERT_OK_AND_ASSIGN(VersionKey c2, MakeVersion(*lin_, "m", std::nullopt));
  ASSERT_OK_AND_ASSIGN(VersionKey d3, MakeVersion(*lin_, "m", std::nullopt, {}, {}, false));
  ASSERT_OK_AND_ASSIGN(l, lin_->Latest("m"));
  EXPECT_EQ(l, std::optional<std::string>("v2"));
  ASSERT_OK(lin_->Commit(d1));  // committing an older draft does not make it latest
  ASSERT_OK_AND_ASSIGN(l, lin_->Latest("m"));
  EXPECT_EQ(l, std::optional<std::string>("v2"));
  ASSERT_OK(lin_->Commit(d3));
  ASSERT_OK_AND_ASSIGN(l, lin_->Latest("m"));
  EXPECT_EQ(l, std::optional<std::string>("v3"));
  ASSERT_OK(lin_->RemoveVersion(d3, false));
  ASSERT_OK_AND_ASSIGN(l, lin_->Latest("m"));
  EXPECT_EQ(l, std::optional<std::string>(c2.version));
}

// ---------------------------------------------------------------------------
// Queries

TEST_F(LineageTest, StaleReasons) {
  ASSERT_OK_AND_ASSIGN(VersionKey b1, MakeVersion(*lin_, "base", std::nullopt, {}, {{"f", "b1"}}));
  ASSERT_OK_AND_ASSIGN(VersionKey f1,
                       MakeVersion(*lin_, "ft", std::nullopt, {P(b1)}, {{"f", "f1"}}));
  ASSERT_OK_AND_ASSIGN(VersionKey g1,
                       MakeVersion(*lin_, "ftft", std::nullopt, {P(f1)}, {{"f", "g1"}}));
  ASSERT_OK_AND_ASSIGN(auto s, lin_->StaleReasons(f1));
  EXPECT_TRUE(s.empty());
  // A draft of the base does not make anything stale.
  ASSERT_OK_AND_ASSIGN(VersionKey b2,
                       MakeVersion(*lin_, "base", std::nullopt, {}, {{"f", "b2"}}, false));
  ASSERT_OK_AND_ASSIGN(s, lin_->StaleReasons(f1));
  EXPECT_TRUE(s.empty());
  ASSERT_OK(lin_->Commit(b2));
  ASSERT_OK_AND_ASSIGN(s, lin_->StaleReasons(f1));
  ASSERT_EQ(s.size(), 1u);
  EXPECT_EQ(s[0].ancestor, b1);
  EXPECT_EQ(s[0].newer, "v2");
  ASSERT_OK_AND_ASSIGN(s, lin_->StaleReasons(b2));
  EXPECT_TRUE(s.empty());
  // Transitively: the grandchild is stale through base/v1; then ft moves too.
  ASSERT_OK_AND_ASSIGN(s, lin_->StaleReasons(g1));
  ASSERT_EQ(s.size(), 1u);
  EXPECT_EQ(s[0].ancestor, b1);
  ASSERT_OK(MakeVersion(*lin_, "ft", std::nullopt, {P(b2)}, {{"f", "f2"}}));
  ASSERT_OK(MakeVersion(*lin_, "base", std::nullopt, {}, {{"f", "b3"}}));
  ASSERT_OK_AND_ASSIGN(s, lin_->StaleReasons(g1));
  ASSERT_EQ(s.size(), 2u);
  EXPECT_EQ(s[0].ancestor, f1);
  EXPECT_EQ(s[0].newer, "v2");
  EXPECT_EQ(s[1].ancestor, b1);
  EXPECT_EQ(s[1].newer, "v3");                             // the newest committed one
  EXPECT_CODE(lin_->StaleReasons({"base", "nope"}), kOk);  // unknown: no ancestors
}

// base -> a -> c -> m ; base -> b -> m (m is a merge of c and b).
TEST_F(LineageTest, AncestorsAndDescendantsWithMerge) {
  ASSERT_OK_AND_ASSIGN(VersionKey base, MakeVersion(*lin_, "base", "v1"));
  ASSERT_OK_AND_ASSIGN(VersionKey a, MakeVersion(*lin_, "a", "v1", {P(base)}));
  ASSERT_OK_AND_ASSIGN(VersionKey b, MakeVersion(*lin_, "b", "v1", {P(base, Relation::kDistill)}));
  ASSERT_OK_AND_ASSIGN(VersionKey c, MakeVersion(*lin_, "c", "v1", {P(a, Relation::kPrune)}));
  ASSERT_OK_AND_ASSIGN(VersionKey m, MakeVersion(*lin_, "m", "v1",
                                                 {P(c, Relation::kMerge), P(b, Relation::kMerge)}));
  ASSERT_OK_AND_ASSIGN(auto anc, lin_->Ancestors(m));
  EXPECT_EQ(Names(anc), (std::vector<std::string>{"c/v1", "b/v1", "a/v1", "base/v1"}));
  ASSERT_EQ(anc.size(), 4u);
  EXPECT_EQ(anc[0].second, Relation::kMerge);
  EXPECT_EQ(anc[1].second, Relation::kMerge);
  EXPECT_EQ(anc[2].second, Relation::kPrune);
  EXPECT_EQ(anc[3].second, Relation::kDistill);  // first edge met (from b)
  ASSERT_OK_AND_ASSIGN(auto anc_base, lin_->Ancestors(base));
  EXPECT_TRUE(anc_base.empty());
  ASSERT_OK_AND_ASSIGN(auto desc, lin_->Descendants(base));
  EXPECT_EQ(Names(desc), (std::vector<std::string>{"a/v1", "b/v1", "c/v1", "m/v1"}));
  ASSERT_OK_AND_ASSIGN(auto desc_b, lin_->Descendants(b));
  EXPECT_EQ(Names(desc_b), (std::vector<std::string>{"m/v1"}));
  ASSERT_OK_AND_ASSIGN(auto desc_m, lin_->Descendants(m));
  EXPECT_TRUE(desc_m.empty());
  ASSERT_OK_AND_ASSIGN(auto kids, lin_->Children(base));
  ASSERT_EQ(kids.size(), 2u);
  EXPECT_EQ(kids[0].second, Relation::kFinetune);
  EXPECT_EQ(kids[1].second, Relation::kDistill);
  // BFS property on a deeper chain: every descendant comes after its parent.
  VersionKey prev = m;
  for (int i = 0; i < 5; i++) {
    ASSERT_OK_AND_ASSIGN(prev, MakeVersion(*lin_, "chain", std::nullopt, {P(prev)}));
  }
  ASSERT_OK_AND_ASSIGN(desc, lin_->Descendants(base));
  ASSERT_EQ(desc.size(), 9u);
  EXPECT_EQ(desc.back(), prev);
  ASSERT_OK_AND_ASSIGN(anc, lin_->Ancestors(prev));
  ASSERT_EQ(anc.size(), 9u);
  EXPECT_EQ(anc[0].first.str(), "chain/v4");
  EXPECT_EQ(anc.back().first, base);
}

TEST_F(LineageTest, TensorIndexAcrossTwoFiles) {
  std::string s1 = Safetensors(
      {{"embed.weight", "F32", {2, 2}, F32({1, 2, 3, 4})}, {"shared", "F32", {1}, F32({7})}});
  std::string s2 = Safetensors(
      {{"lm_head.weight", "F16", {3}, std::string(6, '\1')}, {"shared", "F32", {2}, F32({8, 9})}});
  ASSERT_OK_AND_ASSIGN(VersionKey k, MakeVersion(*lin_, "m", "v1", {},
                                                 {{"model-00001-of-00002.safetensors", s1},
                                                  {"model-00002-of-00002.safetensors", s2},
                                                  {"config.json", R"({"a": 1})"}}));
  ASSERT_OK_AND_ASSIGN(Version v, lin_->GetVersion(k));
  ASSERT_OK_AND_ASSIGN(auto idx, lin_->TensorIndex(v));
  std::set<std::string> names;
  for (const auto& [n, r] : idx) names.insert(n);
  EXPECT_EQ(names, (std::set<std::string>{"embed.weight", "lm_head.weight", "shared",
                                          "model-00002-of-00002.safetensors:shared"}));
  EXPECT_EQ(idx.at("embed.weight").dtype, formats::DType::kF32);
  EXPECT_EQ(idx.at("embed.weight").shape, (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(idx.at("embed.weight").nbytes, 16u);
  EXPECT_EQ(idx.at("lm_head.weight").dtype, formats::DType::kF16);
  EXPECT_EQ(idx.at("shared").shape, (std::vector<int64_t>{1}));
  EXPECT_EQ(idx.at("model-00002-of-00002.safetensors:shared").shape, (std::vector<int64_t>{2}));
  // The tensor bytes are reachable through the index.
  ASSERT_OK_AND_ASSIGN(TensorObject t, LoadTensor(*store_, idx.at("embed.weight").object));
  std::string got(16, '\0');
  ASSERT_OK_AND_ASSIGN(
      size_t n,
      ObjectReader::ReadTensor(*store_, t, idx.at("embed.weight").object_offset, 16, got.data()));
  EXPECT_EQ(n, 16u);
  EXPECT_EQ(got, F32({1, 2, 3, 4}));
  // Files read back byte-exact.
  EXPECT_EQ(ReadAll(*store_, v.files.at("model-00001-of-00002.safetensors").digest), s1);
  EXPECT_EQ(ReadAll(*store_, v.files.at("model-00002-of-00002.safetensors").digest), s2);
}

// ---------------------------------------------------------------------------
// Diff

const TensorDiff* FindT(const DiffResult& d, const std::string& name) {
  for (const auto& t : d.tensors)
    if (t.name == name) return &t;
  return nullptr;
}
const FileDiff* FindF(const DiffResult& d, const std::string& name) {
  for (const auto& f : d.files)
    if (f.name == name) return &f;
  return nullptr;
}

TEST_F(LineageTest, DiffKindsAndStatistics) {
  std::vector<float> same = WeightLike(1000, 5);
  std::string a = Safetensors({{"same", "F32", {1000}, F32(same)},
                               {"changed", "F32", {4}, F32({1, 2, 3, 4})},
                               {"gone", "F32", {2}, F32({1, 1})},
                               {"reshaped", "F32", {2, 2}, F32({1, 2, 3, 4})},
                               {"retyped", "F32", {2}, F32({1, 2})},
                               {"ints", "I32", {3}, std::string("\1\0\0\0\2\0\0\0\3\0\0\0", 12)}});
  std::string b = Safetensors({{"same", "F32", {1000}, F32(same)},
                               {"changed", "F32", {4}, F32({1, 2, 3.5f, 4})},
                               {"new", "F32", {1}, F32({5})},
                               {"reshaped", "F32", {4}, F32({1, 2, 3, 4})},
                               {"retyped", "F16", {2}, std::string(4, '\0')},
                               {"ints", "I32", {3}, std::string("\1\0\0\0\7\0\0\0\1\0\0\0", 12)}});
  ASSERT_OK_AND_ASSIGN(
      VersionKey ka,
      MakeVersion(*lin_, "m", "a", {},
                  {{"model.safetensors", a}, {"config.json", "{}"}, {"README", "old"}}));
  ASSERT_OK_AND_ASSIGN(
      VersionKey kb,
      MakeVersion(*lin_, "m", "b", {P(ka)},
                  {{"model.safetensors", b}, {"config.json", "{}"}, {"extra.txt", "new file"}}));
  ASSERT_OK_AND_ASSIGN(Version va, lin_->GetVersion(ka));
  ASSERT_OK_AND_ASSIGN(Version vb, lin_->GetVersion(kb));
  ASSERT_OK_AND_ASSIGN(DiffResult d, Diff(*lin_, va, vb));

  ASSERT_EQ(d.files.size(), 4u);
  ASSERT_TRUE(FindF(d, "model.safetensors"));
  EXPECT_EQ(FindF(d, "model.safetensors")->kind, FileDiff::Kind::kChanged);
  EXPECT_EQ(FindF(d, "model.safetensors")->size_a, a.size());
  EXPECT_EQ(FindF(d, "model.safetensors")->size_b, b.size());
  EXPECT_EQ(FindF(d, "config.json")->kind, FileDiff::Kind::kIdentical);
  EXPECT_EQ(FindF(d, "README")->kind, FileDiff::Kind::kRemoved);
  EXPECT_EQ(FindF(d, "README")->size_a, 3u);
  EXPECT_EQ(FindF(d, "extra.txt")->kind, FileDiff::Kind::kAdded);
  EXPECT_EQ(FindF(d, "extra.txt")->size_b, 8u);

  ASSERT_EQ(d.tensors.size(), 7u);
  const TensorDiff* t = FindT(d, "same");
  ASSERT_TRUE(t);
  EXPECT_EQ(t->kind, TensorDiff::Kind::kIdentical);
  EXPECT_FALSE(t->has_stats);
  t = FindT(d, "changed");
  ASSERT_TRUE(t);
  EXPECT_EQ(t->kind, TensorDiff::Kind::kChanged);
  ASSERT_TRUE(t->has_stats);
  EXPECT_DOUBLE_EQ(t->max_abs_delta, 0.5);
  EXPECT_NEAR(t->rel_l2, 0.5 / std::sqrt(1.0 + 4 + 9 + 16), 1e-12);
  EXPECT_DOUBLE_EQ(t->frac_changed, 0.25);
  t = FindT(d, "ints");
  ASSERT_TRUE(t);
  EXPECT_EQ(t->kind, TensorDiff::Kind::kChanged);
  ASSERT_TRUE(t->has_stats);
  EXPECT_DOUBLE_EQ(t->max_abs_delta, 5.0);
  EXPECT_NEAR(t->rel_l2, std::sqrt(25.0 + 4.0) / std::sqrt(1.0 + 4 + 9), 1e-12);
  EXPECT_NEAR(t->frac_changed, 2.0 / 3.0, 1e-12);
  t = FindT(d, "gone");
  ASSERT_TRUE(t);
  EXPECT_EQ(t->kind, TensorDiff::Kind::kRemoved);
  EXPECT_EQ(t->shape_a, (std::vector<int64_t>{2}));
  t = FindT(d, "new");
  ASSERT_TRUE(t);
  EXPECT_EQ(t->kind, TensorDiff::Kind::kAdded);
  EXPECT_EQ(t->dtype_b, formats::DType::kF32);
  t = FindT(d, "reshaped");
  ASSERT_TRUE(t);
  EXPECT_EQ(t->kind, TensorDiff::Kind::kShapeChanged);
  EXPECT_EQ(t->shape_a, (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(t->shape_b, (std::vector<int64_t>{4}));
  EXPECT_FALSE(t->has_stats);
  t = FindT(d, "retyped");
  ASSERT_TRUE(t);
  EXPECT_EQ(t->kind, TensorDiff::Kind::kShapeChanged);
  EXPECT_EQ(t->dtype_a, formats::DType::kF32);
  EXPECT_EQ(t->dtype_b, formats::DType::kF16);

  // Without statistics.
  ASSERT_OK_AND_ASSIGN(DiffResult ns, Diff(*lin_, va, vb, /*stats=*/false));
  ASSERT_TRUE(FindT(ns, "changed"));
  EXPECT_EQ(FindT(ns, "changed")->kind, TensorDiff::Kind::kChanged);
  EXPECT_FALSE(FindT(ns, "changed")->has_stats);
  // A version against itself.
  ASSERT_OK_AND_ASSIGN(DiffResult self, Diff(*lin_, vb, vb));
  for (const auto& f : self.files) EXPECT_EQ(f.kind, FileDiff::Kind::kIdentical) << f.name;
  for (const auto& x : self.tensors) EXPECT_EQ(x.kind, TensorDiff::Kind::kIdentical) << x.name;
  EXPECT_STREQ(TensorDiffKindName(TensorDiff::Kind::kShapeChanged), "shape-changed");
  EXPECT_STREQ(FileDiffKindName(FileDiff::Kind::kAdded), "added");
}

TEST_F(LineageTest, DiffStatisticsOverManyPieces) {
  // 2M floats (8 MiB): statistics are streamed in pieces.
  const size_t n = 2 << 20;
  std::vector<float> x(n), y(n);
  for (size_t i = 0; i < n; i++) x[i] = y[i] = static_cast<float>(i % 7) - 3.0f;
  double sum_a2 = 0;
  for (float f : x) sum_a2 += static_cast<double>(f) * f;
  y[0] += 0.25f;
  y[n - 1] -= 2.0f;
  y[n / 2] += 1.0f;
  ASSERT_OK_AND_ASSIGN(
      VersionKey ka,
      MakeVersion(
          *lin_, "m", "a", {},
          {{"m.safetensors", Safetensors({{"w", "F32", {static_cast<int64_t>(n)}, F32(x)}})}}));
  ASSERT_OK_AND_ASSIGN(
      VersionKey kb,
      MakeVersion(
          *lin_, "m", "b", {P(ka)},
          {{"m.safetensors", Safetensors({{"w", "F32", {static_cast<int64_t>(n)}, F32(y)}})}}));
  ASSERT_OK_AND_ASSIGN(Version va, lin_->GetVersion(ka));
  ASSERT_OK_AND_ASSIGN(Version vb, lin_->GetVersion(kb));
  ASSERT_OK_AND_ASSIGN(DiffResult d, Diff(*lin_, va, vb));
  ASSERT_EQ(d.tensors.size(), 1u);
  const auto& t = d.tensors[0];
  ASSERT_TRUE(t.has_stats);
  EXPECT_DOUBLE_EQ(t.max_abs_delta, 2.0);
  EXPECT_NEAR(t.rel_l2, std::sqrt((0.0625 + 4.0 + 1.0) / sum_a2), 1e-12);
  EXPECT_DOUBLE_EQ(t.frac_changed, 3.0 / static_cast<double>(n));
}

TEST(LineageDiffTest, ElementAsDouble) {
  using formats::DType;
  float f = 1.5f;
  EXPECT_EQ(ElementAsDouble(DType::kF32, reinterpret_cast<const char*>(&f)), 1.5);
  double dd = -2.25;
  EXPECT_EQ(ElementAsDouble(DType::kF64, reinterpret_cast<const char*>(&dd)), -2.25);
  uint16_t h = 0x3e00;  // f16 1.5
  EXPECT_EQ(ElementAsDouble(DType::kF16, reinterpret_cast<const char*>(&h)), 1.5);
  uint16_t hs = 0x0001;  // smallest f16 subnormal
  EXPECT_EQ(ElementAsDouble(DType::kF16, reinterpret_cast<const char*>(&hs)), std::ldexp(1.0, -24));
  uint16_t bf = 0xc020;  // bf16 -2.5
  EXPECT_EQ(ElementAsDouble(DType::kBF16, reinterpret_cast<const char*>(&bf)), -2.5);
  int8_t i8 = -7;
  EXPECT_EQ(ElementAsDouble(DType::kI8, reinterpret_cast<const char*>(&i8)), -7);
  uint8_t u8 = 200;
  EXPECT_EQ(ElementAsDouble(DType::kU8, reinterpret_cast<const char*>(&u8)), 200);
  EXPECT_TRUE(std::isnan(ElementAsDouble(DType::kUnknown, "\0\0\0\0\0\0\0\0")));
}

// ---------------------------------------------------------------------------
// Usage, dedup and delta

TEST_F(LineageTest, UsageOfChildSharingEverything) {
  std::string ck = Safetensors({{"w", "F32", {200000}, F32(WeightLike(200000, 11))},
                                {"b", "F32", {100}, F32(WeightLike(100, 12))}});
  ASSERT_OK_AND_ASSIGN(VersionKey p,
                       MakeVersion(*lin_, "base", "v1", {}, {{"model.safetensors", ck}}));
  ASSERT_OK_AND_ASSIGN(VersionKey c,
                       MakeVersion(*lin_, "ft", "v1", {P(p)}, {{"model.safetensors", ck}}));
  ASSERT_OK_AND_ASSIGN(UsageReport u, ComputeUsage(*lin_));
  ASSERT_EQ(u.versions.size(), 2u);
  const VersionUsage* up = nullptr;
  const VersionUsage* uc = nullptr;
  for (const auto& v : u.versions) (v.key == p ? up : uc) = &v;
  ASSERT_TRUE(up && uc);
  EXPECT_EQ(uc->key, c);
  EXPECT_EQ(up->logical, ck.size());
  EXPECT_EQ(uc->logical, ck.size());
  EXPECT_EQ(uc->unique, 0u);
  EXPECT_EQ(up->unique, 0u);
  EXPECT_GT(u.live_bytes, 0u);
  EXPECT_NEAR(uc->stored, u.live_bytes / 2.0, u.live_bytes * 0.01);
  EXPECT_NEAR(up->stored, uc->stored, 1e-6);
  EXPECT_GE(u.pack_bytes, u.live_bytes);

  // A third version with a changed tensor owns something.
  std::string ck2 = Safetensors({{"w", "F32", {200000}, F32(WeightLike(200000, 13))},
                                 {"b", "F32", {100}, F32(WeightLike(100, 12))}});
  ASSERT_OK_AND_ASSIGN(VersionKey o,
                       MakeVersion(*lin_, "other", "v1", {}, {{"model.safetensors", ck2}}));
  ASSERT_OK_AND_ASSIGN(u, ComputeUsage(*lin_));
  ASSERT_EQ(u.versions.size(), 3u);
  for (const auto& v : u.versions) {
    if (v.key == o) {
      EXPECT_GT(v.unique, 400000u);  // the new 800 KB tensor, compressed a little at most
    } else {
      EXPECT_EQ(v.unique, 0u) << v.key.str();
    }
  }
  double total = 0;
  for (const auto& v : u.versions) total += v.stored;
  EXPECT_NEAR(total, static_cast<double>(u.live_bytes), u.live_bytes * 1e-6);
}

TEST_F(LineageTest, SameBytesTwiceAddNoPackBytes) {
  std::string ck = Safetensors({{"w", "F32", {262144}, F32(WeightLike(262144, 21))},
                                {"b", "F32", {512}, F32(WeightLike(512, 22))}});
  uint64_t p0 = PackBytes(*store_);
  ASSERT_OK(MakeVersion(*lin_, "a", "v1", {}, {{"model.safetensors", ck}}));
  uint64_t p1 = PackBytes(*store_);
  ASSERT_OK(MakeVersion(*lin_, "b", "v1", {}, {{"weights.safetensors", ck}}));
  uint64_t p2 = PackBytes(*store_);
  std::cout << "[ dedup    ] first import +" << (p1 - p0) << " B, second import +" << (p2 - p1)
            << " B\n";
  EXPECT_GT(p1 - p0, 500000u);
  EXPECT_LE(p2 - p1, 4096u);
  ExpectFsckClean();
}

TEST_F(LineageTest, FineTunedChildIsDeltaEncoded) {
  const size_t n = 1 << 20;  // 4 MiB of f32
  std::vector<float> parent = WeightLike(n, 31);
  std::vector<float> child = parent;
  std::mt19937 rng(32);
  std::normal_distribution<float> nd(0.0f, 1e-4f);
  for (auto& f : child) f += nd(rng) * std::abs(f);
  std::string ps = Safetensors({{"layer.weight", "F32", {1024, 1024}, F32(parent)}});
  std::string cs = Safetensors({{"layer.weight", "F32", {1024, 1024}, F32(child)}});

  uint64_t p0 = PackBytes(*store_);
  ASSERT_OK_AND_ASSIGN(VersionKey pk,
                       MakeVersion(*lin_, "base", "v1", {}, {{"model.safetensors", ps}}));
  uint64_t p1 = PackBytes(*store_);
  ASSERT_OK_AND_ASSIGN(Version cd, lin_->CreateDraft("ft", Opts({P(pk)}, true)));
  ASSERT_OK_AND_ASSIGN(IngestedFile f,
                       lin_->AddFile(cd.key, "model.safetensors", formats::MemoryAccess(cs)));
  ASSERT_OK(lin_->Commit(cd.key));
  uint64_t p2 = PackBytes(*store_);
  EXPECT_EQ(f.format, formats::Format::kSafetensors);
  EXPECT_EQ(f.tensors, 1u);
  // The child's chunks are XOR deltas against the parent's.
  {
    ASSERT_OK_AND_ASSIGN(Version cv, lin_->GetVersion(cd.key));
    ASSERT_OK_AND_ASSIGN(auto idx, lin_->TensorIndex(cv));
    ASSERT_OK_AND_ASSIGN(TensorObject t, LoadTensor(*store_, idx.at("layer.weight").object));
    int deltas = 0;
    for (const Digest& c : t.chunks) {
      ASSERT_OK_AND_ASSIGN(auto e, store_->FindChunk(c));
      ASSERT_TRUE(e.has_value());
      if (!e->base.empty()) deltas++;  // a delta (whole, or segments)
    }
    EXPECT_GT(deltas, 0) << "of " << t.chunks.size() << " chunks";
  }

  // The same child bytes alone in a fresh store.
  testing::TempDir other;
  ASSERT_OK(Store::Create(other.path()));
  uint64_t standalone = 0;
  {
    auto s2 = Store::Open(other.path());
    ASSERT_OK(s2);
    Lineage lin2(**s2);
    uint64_t q0 = PackBytes(**s2);
    ASSERT_OK(MakeVersion(lin2, "ft", "v1", {}, {{"model.safetensors", cs}}));
    standalone = PackBytes(**s2) - q0;
  }
  std::cout << "[ delta    ] raw " << cs.size() << " B, parent +" << (p1 - p0)
            << " B, child as delta +" << (p2 - p1) << " B, child standalone +" << standalone
            << " B\n";
  EXPECT_LT(p2 - p1, standalone);
  EXPECT_LT(static_cast<double>(p2 - p1), 0.8 * static_cast<double>(standalone));
  // Bit-exact read back after a cold cache.
  store_->DropCache();
  ASSERT_OK_AND_ASSIGN(Version cv, lin_->GetVersion(cd.key));
  EXPECT_EQ(ReadAll(*store_, cv.files.at("model.safetensors").digest), cs);
  ExpectFsckClean();
}

// ---------------------------------------------------------------------------
// Concurrency across processes: a forked writer, a reading parent.

TEST(LineageConcurrencyTest, ForkedWriterNeverExposesHalfBuiltVersions) {
  testing::TempDir dir;
  ASSERT_OK(Store::Create(dir.path()));
  constexpr int kVersions = 50;
  // Fork before this process opens the store: LMDB allows one environment per
  // process, and a forked child must not use (or close) its parent's.
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    int rc = 0;
    {
      auto s = Store::Open(dir.path());
      if (!s.ok()) ::_exit(10);
      Lineage lin(**s);
      std::optional<VersionKey> prev;
      for (int i = 0; i < kVersions && rc == 0; i++) {
        Lineage::DraftOptions o;
        o.create_model = true;
        if (prev) o.parents = {ParentSpec{*prev, Relation::kFinetune}};
        auto d = lin.CreateDraft("fam", o);
        if (!d.ok()) {
          rc = 11;
          break;
        }
        std::vector<float> w = WeightLike(4096, 1000 + i);
        std::string st = Safetensors({{"w", "F32", {4096}, F32(w)}});
        std::string cfg = "{\"step\": " + std::to_string(i) + "}";
        if (!lin.AddFile(d->key, "model.safetensors", formats::MemoryAccess(st)).ok()) rc = 12;
        if (rc == 0 && !lin.AddFile(d->key, "config.json", formats::MemoryAccess(cfg)).ok())
          rc = 13;
        if (rc == 0 && !lin.Commit(d->key).ok()) rc = 14;
        prev = d->key;
      }
    }
    ::_exit(rc);
  }
  auto s = Store::Open(dir.path());
  ASSERT_OK(s);
  Store& store = **s;
  Lineage lin(store);
  int polls = 0, committed_seen = 0, drafts_seen = 0;
  bool child_done = false;
  int status = 0;
  auto check = [&](bool final_pass) {
    auto vs = lin.ListVersions("fam");
    if (!vs.ok()) {
      EXPECT_TRUE(vs.status().IsNotFound()) << vs.status().ToString();
      return;
    }
    for (const auto& v : *vs) {
      if (!v.committed()) {
        drafts_seen++;
        continue;
      }
      committed_seen++;
      ASSERT_EQ(v.files.size(), 2u) << v.key.str() << " committed with missing files";
      for (const auto& [name, fe] : v.files) {
        std::string bytes = ReadAll(store, fe.digest);
        ASSERT_EQ(bytes.size(), fe.size)
            << v.key.str() << "/" << name << ": " << bytes.substr(0, 100);
        ASSERT_EQ(Digest::Of(bytes), fe.digest) << v.key.str() << "/" << name;
      }
      auto idx = lin.TensorIndex(v);
      ASSERT_OK(idx);
      EXPECT_EQ(idx->size(), 1u);
      if (v.key.version != "v1") {
        ASSERT_EQ(v.parents.size(), 1u);
        EXPECT_TRUE(lin.GetVersion(v.parents[0].parent).ok());
      }
    }
    if (final_pass) {
      EXPECT_EQ(vs->size(), static_cast<size_t>(kVersions));
    }
  };
  auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(3);
  while (!child_done) {
    pid_t w = ::waitpid(pid, &status, WNOHANG);
    if (w == pid) child_done = true;
    check(false);
    if (::testing::Test::HasFatalFailure()) break;
    polls++;
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      FAIL() << "writer did not finish in time";
    }
  }
  if (!child_done) {
    ::waitpid(pid, &status, 0);
  }
  ASSERT_TRUE(WIFEXITED(status)) << "writer died: status " << status;
  ASSERT_EQ(WEXITSTATUS(status), 0) << "writer failed at step code " << WEXITSTATUS(status);
  check(true);
  ASSERT_OK_AND_ASSIGN(auto latest, lin.Latest("fam"));
  EXPECT_EQ(latest, std::optional<std::string>("v50"));
  ASSERT_OK_AND_ASSIGN(auto anc, lin.Ancestors({"fam", "v50"}));
  EXPECT_EQ(anc.size(), static_cast<size_t>(kVersions - 1));
  std::cout << "[ fork     ] " << polls << " polls, " << committed_seen
            << " committed version observations, " << drafts_seen << " draft observations\n";
  FsckReport rep;
  ASSERT_OK(Fsck(store, &rep));
  EXPECT_TRUE(rep.ok());
}

// ---------------------------------------------------------------------------
// Scale (timings are printed, not asserted). Filter with --gtest_filter=-*Scale*.

struct ScaleTimes {
  int versions = 0;
  std::string where;
  double build_s = 0, log_us = 0, desc_us = 0, anc_us = 0, diff_us = 0;
  size_t desc_n = 0, anc_n = 0;
};

template <typename F>
double MicrosPerCall(int reps, F&& f) {
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < reps; i++) f();
  auto t1 = std::chrono::steady_clock::now();
  return std::chrono::duration<double, std::micro>(t1 - t0).count() / reps;
}

// Building is bound by fsync (two LMDB commits per version, ~10 ms each on
// this VM's disk): the scale stores live on tmpfs when there is one, so that
// 10,000 versions build in seconds. Queries do not fsync, so this does not
// change what is measured.
class ScratchDir {
 public:
  ScratchDir() {
    std::string base = "/dev/shm";
    if (const char* e = std::getenv("LFS_SCALE_DIR")) base = e;
    std::error_code ec;
    if (std::filesystem::is_directory(base, ec)) {
      std::string tmpl = base + "/lfs-scale-XXXXXX";
      if (::mkdtemp(tmpl.data())) path_ = tmpl;
    }
    if (path_.empty()) path_ = fallback_.path();
  }
  ~ScratchDir() {
    std::error_code ec;
    if (path_ != fallback_.path()) std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  testing::TempDir fallback_;
  std::string path_;
};

void BuildAndTime(int n_versions, int n_models, uint32_t seed, ScaleTimes* out) {
  ScratchDir dir;
  out->where = dir.path();
  ASSERT_OK(Store::Create(dir.path()));
  auto s = Store::Open(dir.path());
  ASSERT_OK(s);
  Lineage lin(**s);
  std::mt19937 rng(seed);
  out->versions = n_versions;
  auto t0 = std::chrono::steady_clock::now();
  std::vector<VersionKey> all;
  std::vector<std::vector<size_t>> by_model(static_cast<size_t>(n_models));
  for (int m = 0; m < n_models; m++) ASSERT_OK(lin.CreateModel("model" + std::to_string(m)));
  for (int i = 0; i < n_versions; i++) {
    size_t m = i < n_models ? static_cast<size_t>(i) : rng() % static_cast<size_t>(n_models);
    Lineage::DraftOptions o;
    if (!all.empty()) {
      uint32_t r = rng() % 100;
      std::set<size_t> picks;
      if (r < 45 && !by_model[m].empty()) {
        picks.insert(by_model[m].back());  // continue the model's own line
      } else if (r < 90) {
        picks.insert(rng() % all.size());  // derive from anything earlier
      } else if (r < 95) {
        picks.insert(rng() % all.size());  // a merge of two
        picks.insert(rng() % all.size());
      }  // else: a root
      for (size_t p : picks) {
        o.parents.push_back({all[p], static_cast<Relation>(1 + rng() % 7)});
      }
    }
    auto d = lin.CreateDraft("model" + std::to_string(m), o);
    ASSERT_OK(d);
    ASSERT_OK(lin.Commit(d->key));
    by_model[m].push_back(all.size());
    all.push_back(d->key);
  }
  // Two versions with real files for the diff.
  std::vector<TensorSpec> ts;
  for (int t = 0; t < 200; t++) {
    ts.push_back({"layers." + std::to_string(t) + ".weight",
                  "F32",
                  {256},
                  F32(WeightLike(256, static_cast<uint32_t>(t)))});
  }
  std::string fa = Safetensors(ts);
  ts[17].data = F32(WeightLike(256, 999));
  std::string fb = Safetensors(ts);
  auto ka = MakeVersion(lin, "diffmodel", "a", {}, {{"model.safetensors", fa}});
  ASSERT_OK(ka);
  auto kb = MakeVersion(lin, "diffmodel", "b", {P(*ka)}, {{"model.safetensors", fb}});
  ASSERT_OK(kb);
  out->build_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  // The root with the most descendants among the first models' first versions,
  // and the last version (deepest ancestry).
  VersionKey root = all[0];
  size_t best = 0;
  for (int i = 0; i < std::min(n_models, 20); i++) {
    auto d = lin.Descendants(all[static_cast<size_t>(i)]);
    ASSERT_OK(d);
    if (d->size() > best) {
      best = d->size();
      root = all[static_cast<size_t>(i)];
    }
  }
  // The version with the deepest ancestry among the last ones.
  VersionKey leaf = all.back();
  best = 0;
  for (size_t i = all.size() > 50 ? all.size() - 50 : 0; i < all.size(); i++) {
    auto a = lin.Ancestors(all[i]);
    ASSERT_OK(a);
    if (a->size() > best) {
      best = a->size();
      leaf = all[i];
    }
  }
  std::string busiest = "model0";
  (void)lin.ListVersions(busiest);  // warm up
  out->log_us = MicrosPerCall(300, [&] {
    auto r = lin.ListVersions(busiest);
    EXPECT_TRUE(r.ok());
  });
  out->desc_us = MicrosPerCall(20, [&] {
    auto r = lin.Descendants(root);
    EXPECT_TRUE(r.ok());
    out->desc_n = r->size();
  });
  out->anc_us = MicrosPerCall(300, [&] {
    auto r = lin.Ancestors(leaf);
    EXPECT_TRUE(r.ok());
    out->anc_n = r->size();
  });
  auto va = lin.GetVersion(*ka);
  auto vb = lin.GetVersion(*kb);
  ASSERT_OK(va);
  ASSERT_OK(vb);
  out->diff_us = MicrosPerCall(100, [&] {
    auto r = Diff(lin, *va, *vb, /*stats=*/false);
    EXPECT_TRUE(r.ok());
    EXPECT_EQ(r->tensors.size(), 200u);
  });
}

TEST(LineageScaleTest, ScaleTenThousandVersions) {
  int big = 10000;
  if (const char* e = std::getenv("LFS_SCALE_VERSIONS")) big = std::atoi(e);
  ScaleTimes small, large;
  BuildAndTime(100, 5, 7, &small);
  if (HasFatalFailure()) return;
  BuildAndTime(big, big / 20, 7, &large);
  if (HasFatalFailure()) return;
  auto row = [](const char* what, double a, double b, size_t na = 0, size_t nb = 0) {
    std::cout << "[ scale    ] " << what << ": " << a << " us (100 versions"
              << (na ? ", n=" + std::to_string(na) : "") << ") vs " << b << " us ("
              << "large" << (nb ? ", n=" + std::to_string(nb) : "") << "), ratio " << (b / a)
              << "\n";
  };
  std::cout << "[ scale    ] stores in " << large.where << "\n";
  std::cout << "[ scale    ] build: " << small.build_s << " s for 100 versions, " << large.build_s
            << " s for " << large.versions << " versions across " << large.versions / 20
            << " models\n";
  row("log (ListVersions)", small.log_us, large.log_us);
  row("descendants", small.desc_us, large.desc_us, small.desc_n, large.desc_n);
  row("ancestors", small.anc_us, large.anc_us, small.anc_n, large.anc_n);
  row("diff --no-stats", small.diff_us, large.diff_us);
}

}  // namespace
}  // namespace lfs::lineage
