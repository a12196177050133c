#include "store/formats/detect.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "store/formats/npy.h"
#include "store/formats/safetensors.h"

namespace lfs::formats {
namespace {

using ::testing::HasSubstr;

Result<ParsedFile> Detect(std::string_view name, const std::string& bytes) {
  MemoryAccess f(bytes);
  return ParseAny(name, f);
}

// Asserts that the file is recognised as no format at all.
void ExpectGeneric(std::string_view name, const std::string& bytes) {
  Result<ParsedFile> p = Detect(name, bytes);
  ASSERT_TRUE(p.ok()) << name << ": " << p.status().ToString();
  EXPECT_EQ(p->format, Format::kGeneric) << name;
  EXPECT_TRUE(p->ranges.empty()) << name;
  EXPECT_TRUE(p->tensors.empty()) << name;
}

std::string LE64(uint64_t v) {
  std::string b(8, '\0');
  for (int i = 0; i < 8; ++i) b[i] = static_cast<char>(v >> (8 * i));
  return b;
}

std::string SafetensorsFile() {
  Result<ViewLayout> layout = LayoutSafetensors({{"w", DType::kF32, {2}, 8}});
  EXPECT_TRUE(layout.ok());
  return layout->segments[0].literal + std::string(8, '\1');
}

std::string NpyFile() { return *NpyHeader(DType::kI16, {3}) + std::string(6, '\2'); }

TEST(DetectTest, SafetensorsByContentWhateverTheName) {
  for (const char* name : {"model.safetensors", "weights.bin", "noext"}) {
    Result<ParsedFile> p = Detect(name, SafetensorsFile());
    ASSERT_TRUE(p.ok()) << p.status().ToString();
    EXPECT_EQ(p->format, Format::kSafetensors);
    ASSERT_EQ(p->tensors.size(), 1u);
    EXPECT_EQ(p->tensors[0].name, "w");
  }
}

TEST(DetectTest, NpyByContent) {
  Result<ParsedFile> p = Detect("a.bin", NpyFile());
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->format, Format::kNpy);
  EXPECT_EQ(p->tensors[0].shape, (std::vector<int64_t>{3}));
}

TEST(DetectTest, MalformedKnownFormatsReportWhy) {
  const std::string st = R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})";
  Result<ParsedFile> p = Detect("model.safetensors", LE64(st.size()) + st + "short");
  ASSERT_FALSE(p.ok());
  EXPECT_TRUE(p.status().IsCorruption());
  EXPECT_THAT(p.status().message(), HasSubstr("safetensors"));

  p = Detect("x.npy", NpyFile() + "trailing");
  ASSERT_FALSE(p.ok());
  EXPECT_THAT(p.status().message(), HasSubstr("trailing"));

  std::string big_endian = NpyFile();
  big_endian.replace(big_endian.find("'<i2'"), 5, "'>i2'");
  p = Detect("x.npy", big_endian);
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().code(), Status::Code::kUnsupported);
}

TEST(DetectTest, NotSafetensorsLookalikes) {
  ExpectGeneric("empty", "");
  ExpectGeneric("tiny", "abc");
  ExpectGeneric("nine", std::string(9, '\0'));
  ExpectGeneric("config.json", R"({"hidden_size": 768, "num_layers": 12})");
  ExpectGeneric("README.md", "# A model\n\nSome text that is long enough.\n");
  // Not shaped like safetensors and not named so: plain data.
  ExpectGeneric("a.bin", LE64(1000) + "{}");
  ExpectGeneric("b.bin", LE64(2) + "[]");
}

// Named .safetensors but malformed: the reason comes back for the log (the
// caller then stores the bytes generically).
TEST(DetectTest, NamedSafetensorsThatDoNotParseSayWhy) {
  auto a = ParseAny("a.safetensors", MemoryAccess(LE64(1000) + "{}"));
  ASSERT_FALSE(a.ok());
  EXPECT_NE(a.status().message().find("past the end"), std::string::npos) << a.status().ToString();
  auto b = ParseAny("b.safetensors", MemoryAccess(LE64(2) + "[]"));
  ASSERT_FALSE(b.ok());
  auto c = ParseAny("c.safetensors", MemoryAccess(LE64(1ull << 63) + "{}"));
  ASSERT_FALSE(c.ok());
}

TEST(DetectTest, SafetensorsIndexIsGenericByName) {
  ExpectGeneric("model.safetensors.index.json",
                R"({"metadata":{},"weight_map":{"w":"model-00001-of-00002.safetensors"}})");
  ExpectGeneric("sub/diffusion_pytorch_model.safetensors.index.json", SafetensorsFile());
}

// ---- zip-based formats, written by numpy and torch ----

class DetectZipTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (std::system("/usr/bin/python3 -c 'import numpy' 2>/dev/null") != 0) {
      GTEST_SKIP() << "/usr/bin/python3 has no numpy";
    }
    dir_ = std::filesystem::temp_directory_path() /
           ("lfs_detect_" + std::to_string(getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override {
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }

  // Runs a Python script with the temp dir as sys.argv[1]; true on exit 0.
  bool Python(const std::string& script) {
    setenv("LFS_PY", script.c_str(), 1);
    const std::string cmd = "/usr/bin/python3 -c \"$LFS_PY\" " + dir_.string();
    return std::system(cmd.c_str()) == 0;
  }

  std::string Read(const std::string& name) {
    std::ifstream in(dir_ / name, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }

  std::filesystem::path dir_;
};

TEST_F(DetectZipTest, NpzAndOtherZips) {
  ASSERT_TRUE(Python(R"(
import sys, os, zipfile, numpy as np
d = sys.argv[1]
np.savez(os.path.join(d, 'a.npz'), w=np.arange(4, dtype=np.float32), b=np.ones(2, np.int64))
np.savez_compressed(os.path.join(d, 'c.npz'), w=np.arange(4, dtype=np.float32))
with zipfile.ZipFile(os.path.join(d, 'plain.zip'), 'w') as z:
    z.writestr('hello.txt', 'hello')
)"));
  const std::string npz = Read("a.npz");
  Result<ParsedFile> p = Detect("a.npz", npz);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->format, Format::kNpz);
  EXPECT_EQ(p->tensors.size(), 2u);

  p = Detect("A.NPZ", npz);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->format, Format::kNpz);

  // Only the name says "npz": the same bytes under another name are a zip
  // that is not a torch archive.
  ExpectGeneric("a.zip", npz);
  ExpectGeneric("c.npz", Read("c.npz"));
  ExpectGeneric("plain.zip", Read("plain.zip"));
  // A zip named like a checkpoint that torch.load would not read: the reason is reported.
  auto pt = ParseAny("plain.pt", MemoryAccess(Read("plain.zip")));
  ASSERT_FALSE(pt.ok());
  EXPECT_EQ(pt.status().code(), Status::Code::kUnsupported);
}

TEST_F(DetectZipTest, TorchSave) {
  if (std::system("/usr/bin/python3 -c 'import torch' 2>/dev/null") != 0) {
    GTEST_SKIP() << "/usr/bin/python3 has no torch";
  }
  ASSERT_TRUE(Python(R"(
import sys, os, torch
d = sys.argv[1]
torch.save({'w': torch.arange(6.).reshape(2, 3), 'b': torch.zeros(3)}, os.path.join(d, 'model.pt'))
)"));
  const std::string pt = Read("model.pt");
  Result<ParsedFile> p = Detect("model.pt", pt);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->format, Format::kTorchZip);
  std::vector<std::string> names;
  for (const TensorSpan& t : p->tensors) names.push_back(t.name);
  EXPECT_THAT(names, ::testing::UnorderedElementsAre("w", "b"));

  // A torch archive cut short is malformed, not "some other zip".
  Result<ParsedFile> cut = Detect("model.pt", pt.substr(0, pt.size() - 30));
  ASSERT_FALSE(cut.ok());
  EXPECT_NE(cut.status().code(), Status::Code::kUnsupported);
}

}  // namespace
}  // namespace lfs::formats
