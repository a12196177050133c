#include "fs/drafts.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
// A simulated crash abandons open handles; they are not leaks of the code under test.
#define LFS_ABANDON(p) __lsan_ignore_object(p)
#else
#define LFS_ABANDON(p) (void)(p)
#endif

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "fs/namespace.h"
#include "store/fsck.h"
#include "store/objects.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace lfs::fs {
namespace {

using lineage::Lineage;
using lineage::Relation;
using lineage::Version;
using lineage::VersionKey;

using ::lfs::testing::F32;

std::string Safetensors(const std::vector<std::pair<std::string, std::vector<float>>>& ts) {
  nlohmann::ordered_json h = nlohmann::ordered_json::object();
  uint64_t off = 0;
  std::string data;
  for (const auto& [name, v] : ts) {
    std::string d = F32(v);
    h[name] = {{"dtype", "F32"},
               {"shape", {static_cast<int64_t>(v.size())}},
               {"data_offsets", {off, off + d.size()}}};
    off += d.size();
    data += d;
  }
  std::string js = h.dump();
  while (js.size() % 8) js.push_back(' ');
  std::string out(8, '\0');
  for (int i = 0; i < 8; i++)
    out[i] = static_cast<char>(static_cast<uint64_t>(js.size()) >> (8 * i));
  return out + js + data;
}

class DraftsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_OK(Store::Create(dir_.path()));
    auto s = Store::Open(dir_.path());
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    store_ = std::move(s).value();
    lin_ = std::make_unique<Lineage>(*store_);
    ns_ = std::make_unique<Namespace>(*store_, *lin_, Namespace::Options{});
    drafts_ = std::make_unique<Drafts>(*store_, *lin_, ns_.get());
    ns_->SetDrafts(drafts_.get());
    Lineage::DraftOptions o;
    o.create_model = true;
    ASSERT_OK_AND_ASSIGN(Version v, lin_->CreateDraft("m", o));
    key_ = v.key;
    ASSERT_EQ(key_.str(), "m/v1");
  }
  void TearDown() override {
    if (ns_) ns_->SetDrafts(nullptr);
  }

  // The bytes of a file of the draft as Lineage has it ("<missing>" if none).
  std::string Ingested(const std::string& name, const VersionKey* key = nullptr) {
    auto v = lin_->GetVersion(key ? *key : key_);
    if (!v.ok()) return "<" + v.status().ToString() + ">";
    auto it = v->files.find(name);
    if (it == v->files.end()) return "<missing>";
    auto r = FileReader::Open(*store_, it->second.digest);
    if (!r.ok()) return "<" + r.status().ToString() + ">";
    std::string out((*r)->size(), '\0');
    auto n = (*r)->ReadAt(0, out.size(), out.data());
    if (!n.ok()) return "<" + n.status().ToString() + ">";
    out.resize(*n);
    EXPECT_EQ(out.size(), it->second.size) << name;
    return out;
  }
  std::set<std::string> FileNames() {
    std::set<std::string> out;
    auto v = lin_->GetVersion(key_);
    if (v.ok()) {
      for (const auto& [n, f] : v->files) out.insert(n);
    }
    return out;
  }
  std::vector<std::string> StagingFiles() {
    std::vector<std::string> out;
    for (const auto& e : std::filesystem::directory_iterator(dir_.path() + "/staging")) {
      out.push_back(e.path().filename().string());
    }
    return out;
  }
  Drafts::Handle* MustOpen(const std::string& name, bool create, bool truncate = false,
                           bool exclusive = false) {
    auto h = drafts_->Open(key_, name, create, truncate, exclusive);
    EXPECT_TRUE(h.ok()) << name << ": " << h.status().ToString();
    return h.ok() ? *h : nullptr;
  }
  void Put(const std::string& name, const std::string& bytes) {
    ASSERT_OK(lin_->AddFile(key_, name, formats::MemoryAccess(bytes)));
  }
  std::string ReadHandle(Drafts::Handle* h, size_t n) {
    std::string out(n, '\0');
    auto r = drafts_->Read(h, 0, n, out.data());
    EXPECT_TRUE(r.ok());
    out.resize(r.ok() ? *r : 0);
    return out;
  }

  testing::TempDir dir_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<Lineage> lin_;
  std::unique_ptr<Namespace> ns_;
  std::unique_ptr<Drafts> drafts_;
  VersionKey key_;
};

// A file being written is listed with its current size, and the listing
// follows it as it grows (no attribute of a draft is kept between calls).
TEST_F(DraftsTest, ListingShowsTheSpooledSize) {
  Put("a.txt", "abc");
  Drafts::Handle* w = MustOpen("b.txt", /*create=*/true);
  ASSERT_TRUE(w);
  ASSERT_OK(drafts_->Write(w, 0, "0123456789", 10));
  auto sizes = [&] {
    std::map<std::string, uint64_t> out;
    auto es = ns_->ReadDir("/m/v1");
    EXPECT_TRUE(es.ok());
    if (!es.ok()) return out;
    for (const auto& e : *es) {
      out[e.name] = e.attr.size;
      EXPECT_TRUE(e.attr.draft) << e.name;
      auto a = ns_->GetAttr("/m/v1/" + e.name);
      EXPECT_TRUE(a.ok() && a->size == e.attr.size) << e.name;
    }
    return out;
  };
  EXPECT_EQ(sizes(), (std::map<std::string, uint64_t>{{"a.txt", 3}, {"b.txt", 10}}));
  ASSERT_OK(drafts_->Write(w, 10, "0123456789", 10));
  EXPECT_EQ(sizes(), (std::map<std::string, uint64_t>{{"a.txt", 3}, {"b.txt", 20}}));
  ASSERT_OK(drafts_->Release(w));
  EXPECT_EQ(sizes(), (std::map<std::string, uint64_t>{{"a.txt", 3}, {"b.txt", 20}}));
}

// A reader opened while a file is spooled keeps reading it after the last
// writer released the spool (the mount's open() can race the release).
TEST_F(DraftsTest, ReaderHandleOutlivesTheWritersRelease) {
  Drafts::Handle* w = MustOpen("r.txt", /*create=*/true, false, false);
  ASSERT_TRUE(w);
  ASSERT_OK(drafts_->Write(w, 0, "0123456789", 10));
  ASSERT_OK_AND_ASSIGN(Drafts::Handle * r, drafts_->OpenReader(key_, "r.txt"));
  ASSERT_OK(drafts_->Release(w));
  EXPECT_CODE(drafts_->OpenReader(key_, "r.txt"), kNotFound);  // no longer spooled
  std::string buf(20, '\0');
  ASSERT_OK_AND_ASSIGN(size_t n, drafts_->Read(r, 2, 20, buf.data()));
  EXPECT_EQ(buf.substr(0, n), "23456789");
  EXPECT_EQ(drafts_->HandleSize(r), 10u);
  drafts_->CloseReader(r);
  EXPECT_EQ(Ingested("r.txt"), "0123456789");
}

TEST_F(DraftsTest, CreateWriteFlushRelease) {
  Drafts::Handle* h = MustOpen("notes.txt", /*create=*/true, false, /*exclusive=*/true);
  ASSERT_TRUE(h);
  ASSERT_OK_AND_ASSIGN(size_t n, drafts_->Write(h, 0, "hello ", 6));
  EXPECT_EQ(n, 6u);
  ASSERT_OK(drafts_->Write(h, 6, "world", 5));
  EXPECT_EQ(drafts_->SpooledSize(key_, "notes.txt"), std::optional<uint64_t>(11));
  EXPECT_EQ(drafts_->SpooledNames(key_), (std::vector<std::string>{"notes.txt"}));
  EXPECT_TRUE(drafts_->HasOpenFiles(key_));
  EXPECT_EQ(ReadHandle(h, 100), "hello world");
  std::string buf(5, '\0');
  ASSERT_OK_AND_ASSIGN(n, drafts_->ReadSpooled(key_, "notes.txt", 6, 5, buf.data()));
  EXPECT_EQ(buf.substr(0, n), "world");
  EXPECT_CODE(drafts_->ReadSpooled(key_, "other", 0, 5, buf.data()), kNotFound);
  // Not ingested before a flush; the namespace shows the spooled size.
  EXPECT_EQ(Ingested("notes.txt"), "<missing>");
  ASSERT_OK_AND_ASSIGN(Attr a, ns_->GetAttr("/m/v1/notes.txt"));
  EXPECT_EQ(a.size, 11u);
  ASSERT_OK_AND_ASSIGN(auto w, ns_->Locate("/m/v1/notes.txt"));
  EXPECT_TRUE(w.spooled);
  EXPECT_EQ(w.name, "notes.txt");
  EXPECT_CODE(ns_->Open("/m/v1/notes.txt"), kBusy);
  ASSERT_OK_AND_ASSIGN(auto es, ns_->ReadDir("/m/v1"));
  ASSERT_EQ(es.size(), 1u);
  EXPECT_EQ(es[0].name, "notes.txt");

  ASSERT_OK(drafts_->Flush(h));  // close(2) of a writer
  EXPECT_EQ(Ingested("notes.txt"), "hello world");
  ASSERT_OK(drafts_->Write(h, 11, "!", 1));
  ASSERT_OK(drafts_->Release(h));
  EXPECT_EQ(Ingested("notes.txt"), "hello world!");
  EXPECT_FALSE(drafts_->SpooledSize(key_, "notes.txt").has_value());
  EXPECT_TRUE(drafts_->SpooledNames(key_).empty());
  EXPECT_FALSE(drafts_->HasOpenFiles(key_));
  EXPECT_TRUE(StagingFiles().empty());
  // The namespace reads the ingested bytes.
  ASSERT_OK_AND_ASSIGN(auto fc, ns_->Open("/m/v1/notes.txt"));
  std::string got(fc->size(), '\0');
  ASSERT_OK(fc->Read(0, got.size(), got.data()));
  EXPECT_EQ(got, "hello world!");
}

TEST_F(DraftsTest, CheckpointWrittenOutOfOrderIsIngestedAsSafetensors) {
  std::vector<float> w(50000);
  for (size_t i = 0; i < w.size(); i++) w[i] = static_cast<float>(i) * 0.001f;
  std::string st = Safetensors({{"layer.weight", w}, {"layer.bias", {1, 2, 3}}});
  Drafts::Handle* h = MustOpen("model.safetensors", true);
  ASSERT_TRUE(h);
  size_t third = st.size() / 3;
  ASSERT_OK(drafts_->Write(h, 2 * third, st.data() + 2 * third, st.size() - 2 * third));
  ASSERT_OK(drafts_->Write(h, 0, st.data(), third));
  ASSERT_OK(drafts_->Write(h, third, st.data() + third, third));
  ASSERT_OK(drafts_->Release(h));
  EXPECT_EQ(Ingested("model.safetensors"), st);
  EXPECT_EQ(ns_->GetXattr("/m/v1/model.safetensors", "user.lineage.format").value(), "safetensors");
  ASSERT_OK_AND_ASSIGN(Version v, lin_->GetVersion(key_));
  ASSERT_OK_AND_ASSIGN(auto idx, lin_->TensorIndex(v));
  EXPECT_EQ(idx.size(), 2u);
  EXPECT_TRUE(idx.count("layer.weight"));
  ASSERT_OK(lin_->Commit(key_));
  ASSERT_OK(ns_->GetAttr("/m/v1/tensors/layer.weight.npy"));
}

TEST_F(DraftsTest, WritesAtOffsetsAndSparseFiles) {
  Drafts::Handle* h = MustOpen("sparse.bin", true);
  ASSERT_TRUE(h);
  const uint64_t off = 1 << 20;
  ASSERT_OK(drafts_->Write(h, off, "abc", 3));
  EXPECT_EQ(drafts_->SpooledSize(key_, "sparse.bin"), std::optional<uint64_t>(off + 3));
  ASSERT_OK(drafts_->Write(h, 10, "xy", 2));  // inside: the size does not change
  EXPECT_EQ(drafts_->SpooledSize(key_, "sparse.bin"), std::optional<uint64_t>(off + 3));
  ASSERT_OK(drafts_->Release(h));
  std::string want(off + 3, '\0');
  want.replace(10, 2, "xy");
  want.replace(off, 3, "abc");
  EXPECT_EQ(Ingested("sparse.bin"), want);
  // Overwrite in the middle of an ingested file: copied up first.
  Put("f.txt", "hello world");
  h = MustOpen("f.txt", /*create=*/false);
  ASSERT_TRUE(h);
  EXPECT_EQ(drafts_->SpooledSize(key_, "f.txt"), std::optional<uint64_t>(11));
  EXPECT_EQ(ReadHandle(h, 100), "hello world");
  ASSERT_OK(drafts_->Write(h, 6, "WORLD", 5));
  ASSERT_OK(drafts_->Release(h));
  EXPECT_EQ(Ingested("f.txt"), "hello WORLD");
  // Open and close without writing changes nothing.
  ASSERT_OK_AND_ASSIGN(Version before, lin_->GetVersion(key_));
  h = MustOpen("f.txt", false);
  ASSERT_TRUE(h);
  ASSERT_OK(drafts_->Release(h));
  ASSERT_OK_AND_ASSIGN(Version after, lin_->GetVersion(key_));
  EXPECT_EQ(after.files.at("f.txt").digest, before.files.at("f.txt").digest);
  // O_TRUNC on an existing file.
  h = MustOpen("f.txt", false, /*truncate=*/true);
  ASSERT_TRUE(h);
  EXPECT_EQ(drafts_->SpooledSize(key_, "f.txt"), std::optional<uint64_t>(0));
  ASSERT_OK(drafts_->Write(h, 0, "x", 1));
  ASSERT_OK(drafts_->Release(h));
  EXPECT_EQ(Ingested("f.txt"), "x");
  // A created file never written is ingested empty.
  h = MustOpen("empty", true);
  ASSERT_TRUE(h);
  ASSERT_OK(drafts_->Release(h));
  EXPECT_EQ(Ingested("empty"), "");
  EXPECT_TRUE(StagingFiles().empty());
}

TEST_F(DraftsTest, SeveralHandlesOnOneFile) {
  Drafts::Handle* a = MustOpen("f", true);
  Drafts::Handle* b = MustOpen("f", true);
  ASSERT_TRUE(a && b);
  ASSERT_OK(drafts_->Write(a, 0, "aaaa", 4));
  ASSERT_OK(drafts_->Write(b, 2, "bb", 2));
  EXPECT_EQ(ReadHandle(a, 10), "aabb");
  ASSERT_OK(drafts_->Release(a));  // not the last: ingests what is there so far
  EXPECT_EQ(Ingested("f"), "aabb");
  EXPECT_TRUE(drafts_->SpooledSize(key_, "f").has_value());
  ASSERT_OK(drafts_->Write(b, 4, "c", 1));
  ASSERT_OK(drafts_->Release(b));
  EXPECT_EQ(Ingested("f"), "aabbc");
  EXPECT_FALSE(drafts_->SpooledSize(key_, "f").has_value());
  EXPECT_TRUE(StagingFiles().empty());
}

TEST_F(DraftsTest, Truncate) {
  Put("f.txt", "hello world");
  ASSERT_OK(drafts_->Truncate(key_, "f.txt", 5));
  EXPECT_EQ(Ingested("f.txt"), "hello");
  ASSERT_OK(drafts_->Truncate(key_, "f.txt", 8));
  EXPECT_EQ(Ingested("f.txt"), std::string("hello\0\0\0", 8));
  ASSERT_OK(drafts_->Truncate(key_, "f.txt", 0));
  EXPECT_EQ(Ingested("f.txt"), "");
  EXPECT_CODE(drafts_->Truncate(key_, "missing", 3), kNotFound);
  // Truncating a file being written.
  Drafts::Handle* h = MustOpen("g", true);
  ASSERT_TRUE(h);
  ASSERT_OK(drafts_->Write(h, 0, "abcdef", 6));
  ASSERT_OK(drafts_->Truncate(key_, "g", 3));
  EXPECT_EQ(drafts_->SpooledSize(key_, "g"), std::optional<uint64_t>(3));
  ASSERT_OK(drafts_->Write(h, 3, "Z", 1));
  ASSERT_OK(drafts_->Release(h));
  EXPECT_EQ(Ingested("g"), "abcZ");
  EXPECT_TRUE(StagingFiles().empty());
}

TEST_F(DraftsTest, Rename) {
  // An ingested file.
  Put("a.txt", "AAA");
  ASSERT_OK(drafts_->Rename(key_, "a.txt", "b.txt"));
  EXPECT_EQ(FileNames(), (std::set<std::string>{"b.txt"}));
  EXPECT_EQ(Ingested("b.txt"), "AAA");
  // Onto an existing ingested file: replaces it.
  Put("c.txt", "CCC");
  ASSERT_OK(drafts_->Rename(key_, "c.txt", "b.txt"));
  EXPECT_EQ(FileNames(), (std::set<std::string>{"b.txt"}));
  EXPECT_EQ(Ingested("b.txt"), "CCC");
  // A file being written: its content lands under the new name.
  Drafts::Handle* h = MustOpen("tmp.part", true);
  ASSERT_TRUE(h);
  ASSERT_OK(drafts_->Write(h, 0, "part", 4));
  ASSERT_OK(drafts_->Rename(key_, "tmp.part", "final.bin"));
  EXPECT_FALSE(drafts_->SpooledSize(key_, "tmp.part").has_value());
  EXPECT_EQ(drafts_->SpooledSize(key_, "final.bin"), std::optional<uint64_t>(4));
  ASSERT_OK(drafts_->Write(h, 4, "ial", 3));
  ASSERT_OK(drafts_->Release(h));
  EXPECT_EQ(FileNames(), (std::set<std::string>{"b.txt", "final.bin"}));
  EXPECT_EQ(Ingested("final.bin"), "partial");
  // Written, flushed (so also ingested under the old name), then renamed
  // onto an existing file (the atomic-save pattern).
  h = MustOpen("save.tmp", true);
  ASSERT_TRUE(h);
  ASSERT_OK(drafts_->Write(h, 0, "saved", 5));
  ASSERT_OK(drafts_->Flush(h));
  ASSERT_OK(drafts_->Rename(key_, "save.tmp", "b.txt"));
  ASSERT_OK(drafts_->Release(h));
  EXPECT_EQ(FileNames(), (std::set<std::string>{"b.txt", "final.bin"}));
  EXPECT_EQ(Ingested("b.txt"), "saved");
  // Refusals.
  EXPECT_CODE(drafts_->Rename(key_, "missing", "x"), kNotFound);
  EXPECT_CODE(drafts_->Rename(key_, "b.txt", "tensors"), kInvalidArgument);
  EXPECT_CODE(drafts_->Rename(key_, "b.txt", "parent.2"), kInvalidArgument);
  EXPECT_CODE(drafts_->Rename(key_, "b.txt", "a/b"), kInvalidArgument);
  EXPECT_CODE(drafts_->Rename(key_, "b.txt", ""), kInvalidArgument);
  EXPECT_EQ(Ingested("b.txt"), "saved");
  EXPECT_TRUE(StagingFiles().empty());
}

TEST_F(DraftsTest, Unlink) {
  Put("a.txt", "AAA");
  ASSERT_OK(drafts_->Unlink(key_, "a.txt"));
  EXPECT_TRUE(FileNames().empty());
  EXPECT_CODE(drafts_->Unlink(key_, "a.txt"), kNotFound);
  // A file being written: dropped, never ingested; the writer can finish.
  Drafts::Handle* h = MustOpen("w.bin", true);
  ASSERT_TRUE(h);
  ASSERT_OK(drafts_->Write(h, 0, "data", 4));
  ASSERT_OK(drafts_->Unlink(key_, "w.bin"));
  EXPECT_TRUE(drafts_->SpooledNames(key_).empty());
  EXPECT_CODE(ns_->GetAttr("/m/v1/w.bin"), kNotFound);
  ASSERT_OK(drafts_->Write(h, 4, "more", 4));
  ASSERT_OK(drafts_->Release(h));
  EXPECT_TRUE(FileNames().empty());
  EXPECT_TRUE(StagingFiles().empty());
  // Both spooled and ingested (after a flush): both go.
  h = MustOpen("both", true);
  ASSERT_TRUE(h);
  ASSERT_OK(drafts_->Write(h, 0, "x", 1));
  ASSERT_OK(drafts_->Flush(h));
  EXPECT_EQ(FileNames(), (std::set<std::string>{"both"}));
  ASSERT_OK(drafts_->Unlink(key_, "both"));
  ASSERT_OK(drafts_->Release(h));
  EXPECT_TRUE(FileNames().empty());
  // Discard (rm -r of a draft) drops every spool of the draft.
  h = MustOpen("d1", true);
  ASSERT_TRUE(h);
  ASSERT_OK(drafts_->Write(h, 0, "x", 1));
  drafts_->Discard(key_);
  EXPECT_TRUE(drafts_->SpooledNames(key_).empty());
  ASSERT_OK(drafts_->Release(h));
  EXPECT_TRUE(FileNames().empty());
  EXPECT_TRUE(StagingFiles().empty());
}

TEST_F(DraftsTest, OpenFlagsAndRefusals) {
  Put("exists", "e");
  EXPECT_CODE(drafts_->Open(key_, "exists", true, false, /*exclusive=*/true), kAlreadyExists);
  EXPECT_CODE(drafts_->Open(key_, "missing", /*create=*/false, false, false), kNotFound);
  EXPECT_CODE(drafts_->Open({"m", "v9"}, "f", true, false, false), kNotFound);
  EXPECT_CODE(drafts_->Open({"nope", "v1"}, "f", true, false, false), kNotFound);
  Drafts::Handle* h = MustOpen("open", true);
  ASSERT_TRUE(h);
  EXPECT_CODE(drafts_->Open(key_, "open", true, false, /*exclusive=*/true), kAlreadyExists);
  ASSERT_OK(drafts_->Release(h));
  for (const std::string n : {"tensors", "views", "children", "parent", "parent.1", "parent.12"}) {
    EXPECT_CODE(drafts_->Open(key_, n, true, false, false), kInvalidArgument) << n;
  }
  for (const auto& n : {std::string(""), std::string("."), std::string(".."), std::string("a/b"),
                        std::string("x\0y", 3), std::string("c\x01"), std::string(256, 'n')}) {
    EXPECT_CODE(drafts_->Open(key_, n, true, false, false), kInvalidArgument) << n.size();
  }
  // Names that merely look like reserved ones are fine.
  for (const std::string n : {"parents", "tensors.txt", "my.parent", "latest"}) {
    Drafts::Handle* ok = MustOpen(n, true);
    ASSERT_TRUE(ok) << n;
    ASSERT_OK(drafts_->Release(ok));
  }
  EXPECT_EQ(FileNames(), (std::set<std::string>{"exists", "open", "parents", "tensors.txt",
                                                "my.parent", "latest"}));
  EXPECT_TRUE(StagingFiles().empty());
}

TEST_F(DraftsTest, CommittedVersionsAreReadOnly) {
  Put("f", "content");
  ASSERT_OK(lin_->Commit(key_));
  EXPECT_CODE(drafts_->Open(key_, "f", false, false, false), kReadOnly);
  EXPECT_CODE(drafts_->Open(key_, "new", true, false, false), kReadOnly);
  EXPECT_CODE(drafts_->Unlink(key_, "f"), kReadOnly);
  EXPECT_CODE(drafts_->Rename(key_, "f", "g"), kReadOnly);
  EXPECT_CODE(drafts_->Truncate(key_, "f", 0), kReadOnly);
  EXPECT_EQ(Ingested("f"), "content");
  EXPECT_TRUE(StagingFiles().empty());
}

TEST_F(DraftsTest, CommitWhileOpenKeepsTheCommittedContent) {
  Put("f", "before");
  Drafts::Handle* h = MustOpen("f", false);
  ASSERT_TRUE(h);
  ASSERT_OK(drafts_->Write(h, 0, "AFTER!", 6));
  ASSERT_OK(lin_->Commit(key_));  // the mount refuses this (EBUSY); the library must stay safe
  EXPECT_CODE(drafts_->Release(h), kReadOnly);
  EXPECT_EQ(Ingested("f"), "before");
  EXPECT_TRUE(StagingFiles().empty());
}

// A writer fsyncs and the daemon dies before close: the next daemon's
// Recover() ingests the spool.
TEST_F(DraftsTest, RecoverIngestsFsyncedSpools) {
  Put("keep.txt", "kept");
  Drafts::Handle* h = MustOpen("crash.bin", true);
  ASSERT_TRUE(h);
  std::string payload(300000, '\0');
  for (size_t i = 0; i < payload.size(); i++) payload[i] = static_cast<char>(i * 7 + i / 1000);
  ASSERT_OK(drafts_->Write(h, 0, payload.data(), payload.size()));
  ASSERT_OK(drafts_->Fsync(h));
  // A second draft with a spool, committed before recovery: its spool is dropped.
  Lineage::DraftOptions o;
  ASSERT_OK_AND_ASSIGN(Version other, lin_->CreateDraft("m", o));
  auto h2 = drafts_->Open(other.key, "late.txt", true, false, false);
  ASSERT_OK(h2);
  ASSERT_OK(drafts_->Write(*h2, 0, "late", 4));
  ASSERT_OK(drafts_->Fsync(*h2));
  // The "crash": the Drafts object goes away without Release (the handles
  // are leaked on purpose).
  LFS_ABANDON(h);
  LFS_ABANDON(*h2);
  ns_->SetDrafts(nullptr);
  drafts_.reset();
  EXPECT_EQ(Ingested("crash.bin"), "<missing>");
  ASSERT_OK(lin_->Commit(other.key));
  // A spool without a sidecar and a sidecar that is not JSON.
  { std::ofstream(dir_.path() + "/staging/orphan.spool") << "junk"; }
  { std::ofstream(dir_.path() + "/staging/bad.meta") << "{not json"; }
  { std::ofstream(dir_.path() + "/staging/bad.spool") << "junk"; }
  EXPECT_GE(StagingFiles().size(), 7u);

  drafts_ = std::make_unique<Drafts>(*store_, *lin_, ns_.get());
  ns_->SetDrafts(drafts_.get());
  ASSERT_OK(drafts_->Recover());
  EXPECT_EQ(Ingested("crash.bin"), payload);
  EXPECT_EQ(Ingested("keep.txt"), "kept");
  EXPECT_EQ(FileNames(), (std::set<std::string>{"crash.bin", "keep.txt"}));
  EXPECT_EQ(Ingested("late.txt", &other.key), "<missing>");
  EXPECT_TRUE(StagingFiles().empty()) << StagingFiles().size() << " files left";
  // Idempotent.
  ASSERT_OK(drafts_->Recover());
  EXPECT_EQ(Ingested("crash.bin"), payload);
  FsckReport rep;
  ASSERT_OK(Fsck(*store_, &rep));
  for (const auto& e : rep.errors) ADD_FAILURE() << e;
}

// Opening an ingested file for writing copies it up into a spool; the
// sidecar naming the spool is written (after an fdatasync) only once the copy
// is complete. A daemon killed during the copy-up of a large file leaves a
// partial spool without a sidecar; Recover() must not replace the draft's
// file with that prefix (the user never wrote anything). Simulated by cutting
// the spool and removing its sidecar after Open.
TEST_F(DraftsTest, RecoverAfterCrashDuringCopyUpKeepsTheFile) {
  std::string big(3 << 20, '\0');
  for (size_t i = 0; i < big.size(); i++) big[i] = static_cast<char>((i * 131) >> 7);
  Put("big.bin", big);
  Drafts::Handle* h = MustOpen("big.bin", /*create=*/false);
  ASSERT_TRUE(h);
  std::string spool;
  for (const auto& n : StagingFiles()) {
    if (n.size() > 6 && n.substr(n.size() - 6) == ".spool") spool = dir_.path() + "/staging/" + n;
  }
  ASSERT_FALSE(spool.empty());
  std::filesystem::resize_file(spool, 1 << 20);                          // the copy-up got this far
  std::filesystem::remove(spool.substr(0, spool.size() - 6) + ".meta");  // and no sidecar yet
  ns_->SetDrafts(nullptr);
  LFS_ABANDON(h);
  drafts_.reset();  // killed; the handle is leaked on purpose
  drafts_ = std::make_unique<Drafts>(*store_, *lin_, ns_.get());
  ns_->SetDrafts(drafts_.get());
  ASSERT_OK(drafts_->Recover());
  std::string got = Ingested("big.bin");
  EXPECT_EQ(got.size(), big.size());
  EXPECT_TRUE(got == big) << "the draft's file was replaced by a partial copy-up";
}

// rename(2) onto a name that is open for writing replaces it; the old
// writer's later close must not bring its bytes back under that name.
TEST_F(DraftsTest, RenameOntoAFileBeingWritten) {
  Put("a", "AAA");
  Drafts::Handle* h = MustOpen("b", true);
  ASSERT_TRUE(h);
  ASSERT_OK(drafts_->Write(h, 0, "BBB", 3));
  ASSERT_OK(drafts_->Rename(key_, "a", "b"));
  EXPECT_EQ(Ingested("b"), "AAA");
  ASSERT_OK(drafts_->Release(h));
  EXPECT_EQ(FileNames(), (std::set<std::string>{"b"}));
  EXPECT_EQ(Ingested("b"), "AAA") << "the replaced writer's bytes came back";
  EXPECT_TRUE(StagingFiles().empty());
}

}  // namespace
}  // namespace lfs::fs
