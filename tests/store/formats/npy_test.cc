#include "store/formats/npy.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

namespace lfs::formats {
namespace {

using ::testing::HasSubstr;

Result<ParsedFile> Parse(const std::string& bytes, const ParseLimits& lim = {}) {
  MemoryAccess f(bytes);
  return ParseNpy(f, lim);
}

// A v1.0 .npy with a literal header dict (padded like numpy's) and data.
std::string File(const std::string& dict, const std::string& data, char major = 1) {
  std::string header = dict;
  const size_t prefix = major == 1 ? 10 : 12;
  header.append(63 - (prefix + header.size()) % 64, ' ');
  header += '\n';
  std::string out("\x93NUMPY", 6);
  out += major;
  out += '\0';
  for (size_t i = 0; i < prefix - 8; ++i) out += static_cast<char>(header.size() >> (8 * i));
  return out + header + data;
}

void ExpectError(const std::string& bytes, Status::Code code, const std::string& what,
                 const ParseLimits& lim = {}) {
  Result<ParsedFile> r = Parse(bytes, lim);
  ASSERT_FALSE(r.ok()) << "parsed, expected: " << what;
  EXPECT_EQ(r.status().code(), code) << r.status().ToString();
  EXPECT_THAT(r.status().message(), HasSubstr(what));
}

void ExpectCorrupt(const std::string& bytes, const std::string& what) {
  ExpectError(bytes, Status::Code::kCorruption, what);
}

constexpr DType kNumpyTypes[] = {
    DType::kF64, DType::kF32,  DType::kF16, DType::kI64, DType::kI32, DType::kI16, DType::kI8,
    DType::kU8,  DType::kBool, DType::kU16, DType::kU32, DType::kU64, DType::kC64, DType::kC128,
};

TEST(NpyTest, RoundTripEveryDtypeAndShape) {
  const std::vector<std::vector<int64_t>> shapes = {{}, {0}, {5}, {2, 3}, {1, 0, 4}, {2, 1, 3, 2}};
  for (DType t : kNumpyTypes) {
    for (const std::vector<int64_t>& shape : shapes) {
      std::optional<std::string> header = NpyHeader(t, shape);
      ASSERT_TRUE(header.has_value()) << DTypeName(t);
      EXPECT_EQ(header->size() % 64, 0u);
      EXPECT_EQ(header->back(), '\n');
      uint64_t n = DTypeSize(t);
      for (int64_t d : shape) n *= d;
      const std::string data(n, '\x5a');
      Result<ParsedFile> p = Parse(*header + data);
      ASSERT_TRUE(p.ok()) << DTypeName(t) << ": " << p.status().ToString();
      EXPECT_EQ(p->format, Format::kNpy);
      ASSERT_EQ(p->ranges.size(), 1u);
      ASSERT_EQ(p->tensors.size(), 1u);
      EXPECT_EQ(p->ranges[0].offset, header->size());
      EXPECT_EQ(p->ranges[0].nbytes, n);
      EXPECT_EQ(p->ranges[0].dtype, t);
      EXPECT_EQ(p->ranges[0].key, "");
      const TensorSpan& s = p->tensors[0];
      EXPECT_EQ(s.name, "");
      EXPECT_EQ(s.dtype, t);
      EXPECT_EQ(s.shape, shape);
      EXPECT_EQ(s.offset, header->size());
      EXPECT_EQ(s.nbytes, n);
      EXPECT_TRUE(s.stride.empty());
    }
  }
}

TEST(NpyTest, HeaderBytesMatchNumpy) {
  const std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }";
  std::string expected("\x93NUMPY\x01\x00\x76\x00", 10);
  expected += dict + std::string(20, ' ');  // room to grow axis 0 to 21 digits
  expected.append(128 - 1 - expected.size(), ' ');
  expected += '\n';
  EXPECT_EQ(NpyHeader(DType::kF32, {3, 4}), expected);
  EXPECT_THAT(*NpyHeader(DType::kU8, {7}), HasSubstr("{'descr': '|u1', 'fortran_order': False, "
                                                     "'shape': (7,), }"));
  EXPECT_THAT(*NpyHeader(DType::kBool, {}), HasSubstr("'shape': (), }          "));
}

TEST(NpyTest, NoHeaderWithoutNumpyDtype) {
  EXPECT_EQ(NpyHeader(DType::kBF16, {2}), std::nullopt);
  EXPECT_EQ(NpyHeader(DType::kF8E4M3, {2}), std::nullopt);
  EXPECT_EQ(NpyHeader(DType::kF8E5M2, {2}), std::nullopt);
  EXPECT_EQ(NpyHeader(DType::kUnknown, {2}), std::nullopt);
  EXPECT_EQ(NpyHeader(DType::kF32, {2, -1}), std::nullopt);
}

TEST(NpyTest, LongHeaderUsesVersion2) {
  // Far beyond numpy's practical shapes, but the writer must stay valid.
  const std::vector<int64_t> shape(25000, 1);
  std::optional<std::string> header = NpyHeader(DType::kI16, shape);
  ASSERT_TRUE(header.has_value());
  EXPECT_EQ((*header)[6], '\2');
  EXPECT_EQ(header->size() % 64, 0u);
  ParseLimits lim;
  lim.max_dims = 25000;
  Result<ParsedFile> p = Parse(*header + "ab", lim);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->tensors[0].shape, shape);
}

TEST(NpyTest, Version3AndLooseSpacing) {
  Result<ParsedFile> p = Parse(File("{\"shape\":(2 ,3,),\n 'descr':'<i2' ,'fortran_order' : False}",
                                    std::string(12, 'x'), 3));
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->tensors[0].shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(p->tensors[0].dtype, DType::kI16);
}

TEST(NpyTest, Python2LongSuffixInOldVersions) {
  const std::string dict = "{'descr': '<f8', 'fortran_order': False, 'shape': (2L, 1L), }";
  Result<ParsedFile> p = Parse(File(dict, std::string(16, 'x')));
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->tensors[0].shape, (std::vector<int64_t>{2, 1}));
  ExpectCorrupt(File(dict, std::string(16, 'x'), 3), "expected ')'");
}

TEST(NpyTest, FortranOrderKeepsBytesAndRecordsStrides) {
  Result<ParsedFile> p = Parse(
      File("{'descr': '<u2', 'fortran_order': True, 'shape': (2, 3, 4), }", std::string(48, 'x')));
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->tensors[0].shape, (std::vector<int64_t>{2, 3, 4}));
  EXPECT_EQ(p->tensors[0].stride, (std::vector<int64_t>{1, 2, 6}));
  EXPECT_EQ(p->ranges[0].nbytes, 48u);
}

// ---- malformed files ----

const std::string kGoodDict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }";

TEST(NpyMalformedTest, BadMagic) {
  std::string f = File(kGoodDict, std::string(8, 'x'));
  f[1] = 'n';
  ExpectCorrupt(f, "bad magic");
  ExpectCorrupt("PK\3\4 not numpy at all", "bad magic");
}

TEST(NpyMalformedTest, Truncated) {
  const std::string f = File(kGoodDict, std::string(8, 'x'));
  ExpectCorrupt(f.substr(0, 5), "too short");
  ExpectCorrupt(f.substr(0, 9), "truncated header length");
  ExpectCorrupt(f.substr(0, 40), "runs past the end");
  ExpectCorrupt(f.substr(0, f.size() - 1), "truncated: 7 bytes of data, the shape needs 8");
}

TEST(NpyMalformedTest, TrailingBytes) {
  ExpectCorrupt(File(kGoodDict, std::string(9, 'x')), "1 bytes of trailing data");
}

TEST(NpyMalformedTest, UnknownVersion) {
  std::string f = File(kGoodDict, std::string(8, 'x'));
  f[6] = 4;
  ExpectError(f, Status::Code::kUnsupported, "format version 4.0");
  f[6] = 1;
  f[7] = 1;
  ExpectError(f, Status::Code::kUnsupported, "format version 1.1");
}

TEST(NpyMalformedTest, HeaderOverLimit) {
  ParseLimits lim;
  lim.max_header_bytes = 32;
  ExpectError(File(kGoodDict, std::string(8, 'x')), Status::Code::kCorruption,
              "exceeds the limit of 32", lim);
}

TEST(NpyMalformedTest, BigEndian) {
  ExpectError(
      File("{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }", std::string(8, 'x')),
      Status::Code::kUnsupported, "dtype '>f4' is not supported");
}

TEST(NpyMalformedTest, ObjectDtype) {
  ExpectError(File("{'descr': '|O', 'fortran_order': False, 'shape': (2,), }", "\x80\x02]q."),
              Status::Code::kUnsupported, "object arrays");
}

TEST(NpyMalformedTest, UnsupportedDtypes) {
  ExpectError(
      File("{'descr': '<U3', 'fortran_order': False, 'shape': (1,), }", std::string(12, 'x')),
      Status::Code::kUnsupported, "dtype '<U3'");
  ExpectError(File("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,), }", "xxxx"),
              Status::Code::kUnsupported, "structured");
}

TEST(NpyMalformedTest, WeirdDicts) {
  const std::pair<const char*, const char*> cases[] = {
      {"", "expected '{'"},
      {"[]", "expected '{'"},
      {"{'descr': '<f4', 'fortran_order': False}", "lacks one of"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'extra': 1}", "'extra'"},
      {"{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2,)}", "repeated"},
      {"{'descr': '<f4', 'fortran_order': 0, 'shape': (2,)}", "not True or False"},
      {"{'descr': '<f4', 'fortran_order': false, 'shape': (2,)}", "not True or False"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (2)}", "not a tuple"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': [2]}", "expected '('"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (-2,)}", "non-negative integers"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (2.0,)}", "expected ')'"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (02,)}", "leading zero"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (,)}", "non-negative integers"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (2,,)}", "non-negative integers"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,)}",
       "overflows 64 bits"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904, 4)}",
       "array size overflows 64 bits"},
      {"{'descr': '<f4, 'fortran_order': False, 'shape': (2,)}", "expected '}'"},
      {"{'descr' '<f4', 'fortran_order': False, 'shape': (2,)}", "expected ':'"},
      {"{'descr': '<f\\x34', 'fortran_order': False, 'shape': (2,)}", "escapes"},
      {"{descr: '<f4', 'fortran_order': False, 'shape': (2,)}", "expected a string"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (2,)} x", "trailing characters"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (2,)", "expected '}'"},
      {"{'descr': '<f4' 'fortran_order': False, 'shape': (2,)}", "expected '}'"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'shape': (2,)}", "repeated"},
  };
  for (const auto& [dict, what] : cases) {
    SCOPED_TRACE(dict);
    ExpectCorrupt(File(dict, std::string(8, 'x')), what);
  }
}

TEST(NpyMalformedTest, TooManyDims) {
  ParseLimits lim;
  lim.max_dims = 2;
  ExpectError(File("{'descr': '|u1', 'fortran_order': False, 'shape': (1, 1, 1), }", "x"),
              Status::Code::kCorruption, "more than 2 dimensions", lim);
}

// Hostile input must never crash or read out of bounds (run under ASan too).
TEST(NpyMalformedTest, RandomMutationsNeverCrash) {
  const std::string valid = *NpyHeader(DType::kF32, {2, 3}) + std::string(24, 'x');
  std::mt19937 rng(7);
  size_t parsed = 0;
  static constexpr char kSyntax[] = "(),: '\"0123456789LTF{}";
  for (int i = 0; i < 20000; ++i) {
    std::string f = valid;
    const int edits = 1 + static_cast<int>(rng() % 3);
    for (int e = 0; e < edits; ++e) {
      // Mostly hit the magic and the header dict, where the parsing happens.
      const size_t pos = rng() % (rng() % 2 ? 80 : f.size());
      switch (rng() % 3) {
        case 0: f[pos] = static_cast<char>(rng()); break;
        case 1: f.resize(pos); break;
        case 2: f[pos] = kSyntax[rng() % (sizeof(kSyntax) - 1)]; break;
      }
      if (f.size() <= 80) break;
    }
    Result<ParsedFile> p = Parse(f);
    if (!p.ok()) continue;
    ++parsed;
    ASSERT_EQ(p->ranges[0].offset + p->ranges[0].nbytes, f.size());
  }
  EXPECT_GT(parsed, 0u);
}

// ---- cross-checks with numpy ----

class NpyNumpyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (std::system("/usr/bin/python3 -c 'import numpy' 2>/dev/null") != 0) {
      GTEST_SKIP() << "/usr/bin/python3 has no numpy";
    }
    dir_ = std::filesystem::temp_directory_path() /
           ("lfs_npy_" + std::to_string(getpid()) + "_" +
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

TEST_F(NpyNumpyTest, ParsesWhatNumpySaves) {
  ASSERT_TRUE(Python(R"(
import sys, os, numpy as np
d = sys.argv[1]
np.save(os.path.join(d, 'f32.npy'), np.arange(12, dtype=np.float32).reshape(3, 4))
np.save(os.path.join(d, 'i8.npy'), np.array([-1, 2, -3], dtype=np.int8))
np.save(os.path.join(d, 'scalar.npy'), np.float64(2.5))
np.save(os.path.join(d, 'empty.npy'), np.zeros((0, 3), dtype=np.int64))
np.save(os.path.join(d, 'bool.npy'), np.array([[True, False]]))
np.save(os.path.join(d, 'c128.npy'), np.array([1 + 2j]))
np.save(os.path.join(d, 'fortran.npy'), np.asfortranarray(np.arange(6, dtype='<u2').reshape(2, 3)))
np.save(os.path.join(d, 'big.npy'), np.arange(3, dtype='>i4'))
np.save(os.path.join(d, 'obj.npy'), np.array([{'a': 1}], dtype=object), allow_pickle=True)
)"));
  struct Expect {
    const char* file;
    DType dtype;
    std::vector<int64_t> shape;
  };
  const Expect expected[] = {
      {"f32.npy", DType::kF32, {3, 4}},     {"i8.npy", DType::kI8, {3}},
      {"scalar.npy", DType::kF64, {}},      {"empty.npy", DType::kI64, {0, 3}},
      {"bool.npy", DType::kBool, {1, 2}},   {"c128.npy", DType::kC128, {1}},
      {"fortran.npy", DType::kU16, {2, 3}},
  };
  for (const Expect& e : expected) {
    SCOPED_TRACE(e.file);
    const std::string bytes = Read(e.file);
    Result<ParsedFile> p = Parse(bytes);
    ASSERT_TRUE(p.ok()) << p.status().ToString();
    EXPECT_EQ(p->tensors[0].dtype, e.dtype);
    EXPECT_EQ(p->tensors[0].shape, e.shape);
    EXPECT_EQ(p->ranges[0].offset + p->ranges[0].nbytes, bytes.size());
    // For C-order arrays our header for (dtype, shape) is numpy's, byte for byte.
    if (p->tensors[0].stride.empty()) {
      EXPECT_EQ(NpyHeader(e.dtype, e.shape), bytes.substr(0, p->ranges[0].offset));
    }
  }
  const std::string f32 = Read("f32.npy");
  float v;
  std::memcpy(&v, f32.data() + f32.size() - 4, 4);
  EXPECT_EQ(v, 11.0f);
  Result<ParsedFile> fortran = Parse(Read("fortran.npy"));
  ASSERT_TRUE(fortran.ok());
  EXPECT_EQ(fortran->tensors[0].stride, (std::vector<int64_t>{1, 2}));

  EXPECT_EQ(Parse(Read("big.npy")).status().code(), Status::Code::kUnsupported);
  EXPECT_EQ(Parse(Read("obj.npy")).status().code(), Status::Code::kUnsupported);
}

TEST_F(NpyNumpyTest, NumpyLoadsWhatNpyHeaderWrites) {
  struct Case {
    const char* file;
    DType dtype;
    std::vector<int64_t> shape;
  };
  const Case cases[] = {
      {"a.npy", DType::kF32, {2, 3}},  {"b.npy", DType::kI64, {4}}, {"c.npy", DType::kU8, {}},
      {"d.npy", DType::kBool, {0, 2}}, {"e.npy", DType::kC64, {2}}, {"f.npy", DType::kU16, {3, 1}},
  };
  for (const Case& c : cases) {
    uint64_t n = DTypeSize(c.dtype);
    for (int64_t d : c.shape) n *= d;
    // Byte i holds i, so every array is np.arange(n, dtype=uint8) reinterpreted.
    std::string data(n, '\0');
    for (uint64_t i = 0; i < n; ++i) data[i] = static_cast<char>(i);
    std::ofstream(dir_ / c.file, std::ios::binary) << *NpyHeader(c.dtype, c.shape) << data;
  }
  EXPECT_TRUE(Python(R"(
import sys, os, numpy as np
d = sys.argv[1]
def check(name, dtype, shape):
    a = np.load(os.path.join(d, name))
    n = int(np.prod(shape)) * np.dtype(dtype).itemsize
    expect = np.arange(n, dtype=np.uint8).view(dtype).reshape(shape)
    assert a.dtype == np.dtype(dtype), (name, a.dtype)
    assert a.shape == shape, (name, a.shape)
    assert a.tobytes() == expect.tobytes(), name
    m = np.load(os.path.join(d, name), mmap_mode='r')
    assert m.tobytes() == expect.tobytes(), name
check('a.npy', '<f4', (2, 3))
check('b.npy', '<i8', (4,))
check('c.npy', '|u1', ())
check('d.npy', '?', (0, 2))
check('e.npy', '<c8', (2,))
check('f.npy', '<u2', (3, 1))
)"));
}

}  // namespace
}  // namespace lfs::formats
