#include "lineage/check.h"

#include <gtest/gtest.h>

#include "store/formats/format.h"
#include "store/objects.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace lfs::lineage {
namespace {

class CheckTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_OK(Store::Create(dir_.path()));
    auto s = Store::Open(dir_.path());
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    store_ = std::move(s).value();
    lin_ = std::make_unique<Lineage>(*store_);
    base_ = Make("base", {}, "shared bytes");
    ft_ = Make("ft", {{base_, Relation::kFinetune}}, "shared bytes");  // same file digest
    gone_ = Make("gone", {}, "gone");
    q_ = Make("q", {{ft_, Relation::kQuantize}, {gone_, Relation::kMerge}}, "q");
    ASSERT_OK(lin_->RemoveVersion(gone_, /*force=*/true));  // q keeps a tombstone edge
  }
  VersionKey Make(const std::string& model, std::vector<ParentSpec> parents,
                  const std::string& bytes) {
    Lineage::DraftOptions o;
    o.parents = std::move(parents);
    o.create_model = true;
    auto v = lin_->CreateDraft(model, o);
    EXPECT_TRUE(v.ok()) << v.status().ToString();
    EXPECT_OK(lin_->AddFile(v->key, "a.bin", formats::MemoryAccess(bytes)).status());
    EXPECT_OK(lin_->AddFile(v->key, "b.bin", formats::MemoryAccess(bytes)).status());
    EXPECT_OK(lin_->Commit(v->key));
    return v->key;
  }
  std::vector<std::string> Errors() {
    LineageCheck c;
    EXPECT_OK(CheckLineage(*store_, &c));
    return c.errors;
  }
  void Tamper(const std::function<void(WriteTxn&)>& fn) {
    WriteTxn txn(store_->db());
    ASSERT_OK(txn.begin_status());
    fn(txn);
    ASSERT_OK(txn.Commit());
  }
  bool Mentions(const std::vector<std::string>& errs, const std::string& what) {
    for (const auto& e : errs) {
      if (e.find(what) != std::string::npos) return true;
    }
    return false;
  }

  testing::TempDir dir_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<Lineage> lin_;
  VersionKey base_, ft_, gone_, q_;
};

TEST_F(CheckTest, ACleanStoreHasNoErrors) {
  LineageCheck c;
  ASSERT_OK(CheckLineage(*store_, &c));
  EXPECT_TRUE(c.errors.empty()) << c.errors.front();
  EXPECT_EQ(c.versions, 3u);
  EXPECT_EQ(c.models, 4u);  // "gone" keeps its (empty) model
  EXPECT_EQ(c.edges, 2u);   // the tombstone edge is not a live edge
}

TEST_F(CheckTest, FileReferenceCountOffByOne) {
  auto v = lin_->GetVersion(base_);
  ASSERT_TRUE(v.ok());
  Digest d = v->files.at("a.bin").digest;  // named 4 times: base and ft, a.bin and b.bin
  Tamper([&](WriteTxn& txn) {
    auto rec = GetFile(txn, d);
    ASSERT_TRUE(rec.ok() && rec->has_value());
    FileRecipe f = **rec;
    EXPECT_EQ(f.refs, 4u);
    f.refs = 3;
    ASSERT_OK(txn.Put(Table::kFiles, d.Encode(), f.Encode()));
  });
  EXPECT_TRUE(Mentions(Errors(), "has reference count 3, but 4 version entries name it"));
}

TEST_F(CheckTest, ChildrenTableMismatches) {
  Tamper([&](WriteTxn& txn) { ASSERT_OK(txn.Del(Table::kChildren, ChildDbKey(base_, ft_))); });
  EXPECT_TRUE(Mentions(Errors(), "is not in children"));
  Tamper([&](WriteTxn& txn) {
    ASSERT_OK(txn.Put(Table::kChildren, ChildDbKey(base_, ft_), std::string(1, '\x03')));
  });
  EXPECT_TRUE(Mentions(Errors(), "disagrees with the edge's relation"));
  Tamper([&](WriteTxn& txn) {
    ASSERT_OK(txn.Put(Table::kChildren, ChildDbKey(ft_, base_), std::string(1, '\x01')));
  });
  EXPECT_TRUE(Mentions(Errors(), "has no parent edge behind it"));
}

TEST_F(CheckTest, ModelsAndVersionsDisagree) {
  Tamper([&](WriteTxn& txn) { ASSERT_OK(txn.Del(Table::kModels, "ft")); });
  EXPECT_TRUE(Mentions(Errors(), "but no model record"));
  Tamper([&](WriteTxn& txn) { ASSERT_OK(txn.Del(Table::kVersions, VersionDbKey(base_))); });
  auto errs = Errors();
  EXPECT_TRUE(Mentions(errs, "names parent base/v1, which does not exist"));
  EXPECT_TRUE(Mentions(errs, "model base lists 1 version(s) but 0 exist"));
  Tamper([&](WriteTxn& txn) {
    ASSERT_OK(txn.Put(Table::kVersions, VersionDbKey(base_), "{not json"));
  });
  EXPECT_TRUE(Mentions(Errors(), "cannot be read"));
}

}  // namespace
}  // namespace lfs::lineage
