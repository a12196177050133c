#include "store/formats/safetensors.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

namespace lfs::formats {
namespace {

using ::testing::HasSubstr;

std::string LE64(uint64_t v) {
  std::string b(8, '\0');
  for (int i = 0; i < 8; ++i) b[i] = static_cast<char>(v >> (8 * i));
  return b;
}

// A safetensors file from a literal header and data section.
std::string File(const std::string& header, const std::string& data = "") {
  return LE64(header.size()) + header + data;
}

Result<ParsedFile> Parse(const std::string& bytes, const ParseLimits& lim = {}) {
  MemoryAccess f(bytes);
  return ParseSafetensors(f, lim);
}

// Asserts a Corruption whose message contains `what`.
void ExpectCorrupt(const std::string& bytes, const std::string& what, const ParseLimits& lim = {}) {
  Result<ParsedFile> r = Parse(bytes, lim);
  ASSERT_FALSE(r.ok()) << "parsed, expected: " << what;
  EXPECT_TRUE(r.status().IsCorruption()) << r.status().ToString();
  EXPECT_THAT(r.status().message(), HasSubstr(what));
}

// The file a layout describes, with tensor i's data taken from data[i].
std::string Materialize(const ViewLayout& layout, const std::vector<std::string>& data) {
  std::string out;
  for (const ViewSegment& s : layout.segments) {
    if (s.tensor < 0) {
      EXPECT_EQ(s.literal.size(), s.length);
      out += s.literal;
    } else {
      out += data.at(s.tensor).substr(s.tensor_offset, s.length);
    }
  }
  EXPECT_EQ(out.size(), layout.size);
  return out;
}

std::string Pattern(size_t n, int seed) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>(seed * 31 + i * 7);
  return s;
}

TEST(SafetensorsTest, RoundTripEveryDtype) {
  std::vector<SafetensorsEntry> entries;
  std::vector<std::string> data;
  int seed = 0;
  for (DType t : {DType::kF64, DType::kF32, DType::kF16, DType::kBF16, DType::kF8E4M3,
                  DType::kF8E5M2, DType::kI64, DType::kI32, DType::kI16, DType::kI8, DType::kU8,
                  DType::kBool, DType::kU16, DType::kU32, DType::kU64, DType::kC64}) {
    SafetensorsEntry e{std::string("t.") + DTypeName(t), t, {2, 3}, 6 * DTypeSize(t)};
    data.push_back(Pattern(e.nbytes, seed++));
    entries.push_back(e);
  }
  Result<ViewLayout> layout = LayoutSafetensors(entries, {{"format", "pt"}, {"k", "v"}});
  ASSERT_TRUE(layout.ok()) << layout.status().ToString();
  const std::string file = Materialize(*layout, data);

  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = header_len << 8 | static_cast<uint8_t>(file[i]);
  EXPECT_EQ((8 + header_len) % 8, 0u);

  Result<ParsedFile> p = Parse(file);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->format, Format::kSafetensors);
  ASSERT_EQ(p->ranges.size(), entries.size());
  ASSERT_EQ(p->tensors.size(), entries.size());
  // Data is packed in entry order, so sorted-by-offset order is entry order.
  uint64_t expect_off = 8 + header_len;
  for (size_t i = 0; i < entries.size(); ++i) {
    const ParsedFile::DataRange& r = p->ranges[i];
    const TensorSpan& t = p->tensors[i];
    EXPECT_EQ(r.key, entries[i].name);
    EXPECT_EQ(r.dtype, entries[i].dtype);
    EXPECT_EQ(r.offset, expect_off);
    EXPECT_EQ(r.nbytes, entries[i].nbytes);
    EXPECT_EQ(t.name, entries[i].name);
    EXPECT_EQ(t.dtype, entries[i].dtype);
    EXPECT_EQ(t.shape, entries[i].shape);
    EXPECT_EQ(t.offset, r.offset);
    EXPECT_EQ(t.nbytes, r.nbytes);
    EXPECT_EQ(file.substr(t.offset, t.nbytes), data[i]);
    expect_off += r.nbytes;
  }
  EXPECT_EQ(expect_off, file.size());
}

TEST(SafetensorsTest, LayoutHeaderIsExactAndDeterministic) {
  const std::vector<SafetensorsEntry> entries = {
      {"b", DType::kF32, {2}, 8},
      {"a", DType::kI8, {}, 1},
  };
  Result<ViewLayout> layout = LayoutSafetensors(entries, {{"format", "pt"}});
  ASSERT_TRUE(layout.ok());
  const std::string json = R"({"__metadata__":{"format":"pt"},)"
                           R"("b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                           R"("a":{"dtype":"I8","shape":[],"data_offsets":[8,9]}})";
  std::string header = json + std::string((8 - json.size() % 8) % 8, ' ');
  ASSERT_EQ(layout->segments.size(), 3u);
  EXPECT_EQ(layout->segments[0].literal, LE64(header.size()) + header);
  EXPECT_EQ(layout->segments[1].tensor, 0);
  EXPECT_EQ(layout->segments[1].length, 8u);
  EXPECT_EQ(layout->segments[1].tensor_offset, 0u);
  EXPECT_EQ(layout->segments[2].tensor, 1);
  EXPECT_EQ(layout->segments[2].length, 1u);
  EXPECT_EQ(layout->size, 8 + header.size() + 9);

  Result<ViewLayout> again = LayoutSafetensors(entries, {{"format", "pt"}});
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->segments[0].literal, layout->segments[0].literal);
}

TEST(SafetensorsTest, EmptyFileAndNoMetadata) {
  Result<ViewLayout> layout = LayoutSafetensors({});
  ASSERT_TRUE(layout.ok());
  ASSERT_EQ(layout->segments.size(), 1u);
  EXPECT_EQ(layout->segments[0].literal, LE64(8) + "{}      ");
  Result<ParsedFile> p = Parse(Materialize(*layout, {}));
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_TRUE(p->ranges.empty());
  EXPECT_TRUE(p->tensors.empty());
}

TEST(SafetensorsTest, ZeroSizeAndScalarTensors) {
  const std::vector<SafetensorsEntry> entries = {
      {"empty", DType::kF32, {0, 4}, 0},
      {"scalar", DType::kF64, {}, 8},
      {"empty2", DType::kBF16, {3, 0}, 0},
  };
  Result<ViewLayout> layout = LayoutSafetensors(entries);
  ASSERT_TRUE(layout.ok());
  // Empty tensors contribute no data segment.
  ASSERT_EQ(layout->segments.size(), 2u);
  EXPECT_EQ(layout->segments[1].tensor, 1);
  const std::string file = Materialize(*layout, {"", Pattern(8, 1), ""});
  Result<ParsedFile> p = Parse(file);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  ASSERT_EQ(p->tensors.size(), 3u);
  // Sorted by (begin, end): empty [0,0), scalar [0,8), empty2 [8,8).
  EXPECT_EQ(p->tensors[0].name, "empty");
  EXPECT_EQ(p->tensors[0].nbytes, 0u);
  EXPECT_EQ(p->tensors[0].shape, (std::vector<int64_t>{0, 4}));
  EXPECT_EQ(p->tensors[1].name, "scalar");
  EXPECT_TRUE(p->tensors[1].shape.empty());
  EXPECT_EQ(p->tensors[1].nbytes, 8u);
  EXPECT_EQ(p->tensors[2].name, "empty2");
  EXPECT_EQ(p->tensors[2].offset, file.size());
}

TEST(SafetensorsTest, RangesAreSortedByOffsetNotHeaderOrder) {
  const std::string file = File(R"({"z":{"dtype":"U8","shape":[2],"data_offsets":[2,4]},)"
                                R"("y":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}})",
                                "abcd");
  Result<ParsedFile> p = Parse(file);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  ASSERT_EQ(p->ranges.size(), 2u);
  EXPECT_EQ(p->ranges[0].key, "y");
  EXPECT_EQ(p->ranges[1].key, "z");
  EXPECT_LT(p->ranges[0].offset, p->ranges[1].offset);
  EXPECT_EQ(p->tensors[0].name, "y");
  EXPECT_EQ(file.substr(p->ranges[1].offset, 2), "cd");
}

TEST(SafetensorsTest, HolesAndTrailingBytesAreHeaderBytes) {
  // The reference loader insists on packed data; bytes outside ranges are
  // simply kept as header bytes here, so such files still deduplicate.
  Result<ParsedFile> p =
      Parse(File(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})", "xyzw"));
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  ASSERT_EQ(p->ranges.size(), 1u);
  EXPECT_EQ(p->ranges[0].nbytes, 1u);
}

TEST(SafetensorsTest, UnknownTensorFieldsAndNullMetadataAreIgnored) {
  Result<ParsedFile> p =
      Parse(File(R"({"__metadata__":null,"a":{"extra":{"x":[1,{"y":null}],"x2":"s"},"dtype":"U8",)"
                 R"("more":[[],{}],"shape":[1],"data_offsets":[0,1],"n":-1.5}})",
                 "q"));
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  ASSERT_EQ(p->tensors.size(), 1u);
  EXPECT_EQ(p->tensors[0].shape, (std::vector<int64_t>{1}));
}

TEST(SafetensorsTest, HostileNamesAreKeptVerbatim) {
  const std::string nul_name("a\0b", 3);
  const std::string file =
      File(R"({"../../etc/passwd":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
           R"("a/b/c":{"dtype":"U8","shape":[1],"data_offsets":[1,2]},)"
           R"("..":{"dtype":"U8","shape":[1],"data_offsets":[2,3]},)"
           R"("a\u0000b":{"dtype":"U8","shape":[1],"data_offsets":[3,4]},)"
           R"("":{"dtype":"U8","shape":[1],"data_offsets":[4,5]},)"
           R"("\u00e9\n":{"dtype":"U8","shape":[1],"data_offsets":[5,6]}})",
           "012345");
  Result<ParsedFile> p = Parse(file);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  ASSERT_EQ(p->tensors.size(), 6u);
  EXPECT_EQ(p->tensors[0].name, "../../etc/passwd");
  EXPECT_EQ(p->tensors[1].name, "a/b/c");
  EXPECT_EQ(p->tensors[2].name, "..");
  EXPECT_EQ(p->tensors[3].name, nul_name);
  EXPECT_EQ(p->tensors[4].name, "");
  EXPECT_EQ(p->tensors[5].name, "\xc3\xa9\n");
  for (size_t i = 0; i < 6; ++i) EXPECT_EQ(p->ranges[i].key, p->tensors[i].name);
}

TEST(SafetensorsTest, HostileNamesRoundTripThroughLayout) {
  const std::vector<SafetensorsEntry> entries = {
      {std::string("x\0y\"\\\x01", 6), DType::kU8, {1}, 1},
      {"../up", DType::kU8, {1}, 1},
  };
  Result<ViewLayout> layout = LayoutSafetensors(entries);
  ASSERT_TRUE(layout.ok()) << layout.status().ToString();
  Result<ParsedFile> p = Parse(Materialize(*layout, {"1", "2"}));
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  ASSERT_EQ(p->tensors.size(), 2u);
  EXPECT_EQ(p->tensors[0].name, entries[0].name);
  EXPECT_EQ(p->tensors[1].name, entries[1].name);
}

// ---- malformed files: each is rejected with a reason ----

TEST(SafetensorsMalformedTest, ShorterThanLengthField) {
  ExpectCorrupt("abc", "too short");
  ExpectCorrupt("", "too short");
}

TEST(SafetensorsMalformedTest, TruncatedHeader) {
  const std::string full = File(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})", "x");
  ExpectCorrupt(full.substr(0, 20), "runs past the end");
}

TEST(SafetensorsMalformedTest, HeaderLength2Pow63) {
  ExpectCorrupt(LE64(1ull << 63) + "{}", "exceeds the limit");
  ExpectCorrupt(LE64(~0ull) + "{}", "exceeds the limit");
}

TEST(SafetensorsMalformedTest, HeaderOverConfiguredLimit) {
  ParseLimits lim;
  lim.max_header_bytes = 16;
  ExpectCorrupt(File(R"({"__metadata__":{"a":"bbbbbbbbbbbbbb"}})"), "exceeds the limit of 16", lim);
}

TEST(SafetensorsMalformedTest, EmptyHeader) { ExpectCorrupt(File(""), "not valid JSON"); }

TEST(SafetensorsMalformedTest, HeaderNotJson) {
  ExpectCorrupt(File("hello, world"), "not valid JSON");
  ExpectCorrupt(File(R"({"a":{"dtype":"U8",)"), "not valid JSON");
  ExpectCorrupt(File("{}x"), "not valid JSON");
  ExpectCorrupt(File("{} {}"), "not valid JSON");
}

TEST(SafetensorsMalformedTest, NonObjectJson) {
  ExpectCorrupt(File("[1,2]"), "not a JSON object");
  ExpectCorrupt(File("42"), "not a JSON object");
  ExpectCorrupt(File(R"("str")"), "not a JSON object");
  ExpectCorrupt(File("null"), "not a JSON object");
}

TEST(SafetensorsMalformedTest, TensorNotAnObject) {
  ExpectCorrupt(File(R"({"a":[0,1]})"), "tensor 'a' is an array");
  ExpectCorrupt(File(R"({"a":3})"), "tensor 'a' is a number");
}

TEST(SafetensorsMalformedTest, OffsetsPastEof) {
  ExpectCorrupt(File(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", "1234"),
                "past the 4 bytes of data");
  ExpectCorrupt(File(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[)" +
                     std::to_string(~0ull - 1) + "," + std::to_string(~0ull) + "]}}"),
                "past the 0 bytes of data");
}

TEST(SafetensorsMalformedTest, OffsetsReversed) {
  ExpectCorrupt(File(R"({"a":{"dtype":"U8","shape":[0],"data_offsets":[2,1]}})", "1234"),
                "end before they begin");
}

TEST(SafetensorsMalformedTest, OverlappingDataOffsets) {
  ExpectCorrupt(File(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},)"
                     R"("b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}})",
                     "123456"),
                "data of tensor 'b' overlaps tensor 'a'");
  // Two tensors sharing the same bytes.
  ExpectCorrupt(File(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},)"
                     R"("b":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}})",
                     "1234"),
                "overlaps");
  // An empty tensor inside another's data.
  ExpectCorrupt(File(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},)"
                     R"("b":{"dtype":"U8","shape":[0],"data_offsets":[2,2]}})",
                     "1234"),
                "overlaps");
}

TEST(SafetensorsMalformedTest, SizeShapeMismatch) {
  ExpectCorrupt(File(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})", "1234"),
                "has 4 bytes of data but its dtype and shape need 8");
}

TEST(SafetensorsMalformedTest, ShapeProductOverflow) {
  // ~10^12-element dimensions whose product with the element size wraps.
  ExpectCorrupt(File(R"({"a":{"dtype":"F32","shape":[1000000000000,1000000000000,)"
                     R"(1000000000000],"data_offsets":[0,0]}})"),
                "overflows 64 bits");
  ExpectCorrupt(File(R"({"a":{"dtype":"F64","shape":[2305843009213693952],)"
                     R"("data_offsets":[0,0]}})"),
                "overflows 64 bits");
}

TEST(SafetensorsMalformedTest, TooManyTensors) {
  ParseLimits lim;
  lim.max_tensors = 2;
  ExpectCorrupt(File(R"({"a":{"dtype":"U8","shape":[0],"data_offsets":[0,0]},)"
                     R"("b":{"dtype":"U8","shape":[0],"data_offsets":[0,0]},)"
                     R"("c":{"dtype":"U8","shape":[0],"data_offsets":[0,0]}})"),
                "more than 2 tensors", lim);
}

TEST(SafetensorsMalformedTest, TooManyDims) {
  ParseLimits lim;
  lim.max_dims = 3;
  ExpectCorrupt(File(R"({"a":{"dtype":"U8","shape":[1,1,1,1],"data_offsets":[0,1]}})", "x"),
                "more than 3 dimensions", lim);
}

TEST(SafetensorsMalformedTest, BadShapes) {
  ExpectCorrupt(File(R"({"a":{"dtype":"U8","shape":[-1],"data_offsets":[0,0]}})"),
                "shape of tensor 'a' holds a negative number");
  ExpectCorrupt(File(R"({"a":{"dtype":"U8","shape":[1.0],"data_offsets":[0,1]}})", "x"),
                "non-integer");
  ExpectCorrupt(File(R"({"a":{"dtype":"U8","shape":[9223372036854775808],)"
                     R"("data_offsets":[0,1]}})",
                     "x"),
                "over 2^63");
  ExpectCorrupt(File(R"({"a":{"dtype":"U8","shape":1,"data_offsets":[0,1]}})", "x"),
                "shape of tensor 'a' is a number");
  ExpectCorrupt(File(R"({"a":{"dtype":"U8","shape":[[1]],"data_offsets":[0,1]}})", "x"),
                "holds an array");
}

TEST(SafetensorsMalformedTest, BadDataOffsets) {
  ExpectCorrupt(File(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0]}})", "x"),
                "needs 2 entries");
  ExpectCorrupt(File(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1,2]}})", "x"),
                "more than 2 entries");
  ExpectCorrupt(File(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":"0-1"}})", "x"),
                "data_offsets of tensor 'a' is a string");
}

TEST(SafetensorsMalformedTest, BadOrMissingDtype) {
  ExpectCorrupt(File(R"({"a":{"dtype":"F128","shape":[1],"data_offsets":[0,1]}})", "x"),
                "unknown dtype 'F128'");
  ExpectCorrupt(
      File(R"({"a":{"dtype":"C128","shape":[1],"data_offsets":[0,16]}})", std::string(16, 'x')),
      "unknown dtype 'C128'");
  ExpectCorrupt(File(R"({"a":{"dtype":4,"shape":[1],"data_offsets":[0,1]}})", "x"),
                "dtype of tensor 'a' is a number");
  ExpectCorrupt(File(R"({"a":{"shape":[1],"data_offsets":[0,1]}})", "x"), "has no dtype");
  ExpectCorrupt(File(R"({"a":{"dtype":"U8","data_offsets":[0,1]}})", "x"), "has no shape");
  ExpectCorrupt(File(R"({"a":{"dtype":"U8","shape":[1]}})", "x"), "has no data_offsets");
}

TEST(SafetensorsMalformedTest, InvalidUtf8Name) {
  ExpectCorrupt(File("{\"a\xff\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", "x"),
                "not valid JSON");
  // Overlong encoding of '/'.
  ExpectCorrupt(File("{\"\xc0\xaf\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", "x"),
                "not valid JSON");
  // A lone surrogate escape is not a Unicode scalar value.
  ExpectCorrupt(File(R"({"\ud800":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})", "x"),
                "not valid JSON");
}

TEST(SafetensorsMalformedTest, DuplicateNames) {
  ExpectCorrupt(File(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                     R"("a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})",
                     "xy"),
                "duplicate tensor name 'a'");
  // Escapes spelling the same name are still the same name.
  ExpectCorrupt(File(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                     R"("\u0061":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})",
                     "xy"),
                "duplicate tensor name 'a'");
  ExpectCorrupt(File(R"({"__metadata__":{},"__metadata__":{}})"), "duplicate");
}

TEST(SafetensorsMalformedTest, DuplicateFields) {
  ExpectCorrupt(File(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"dtype":"I8"}})", "x"),
                "duplicate field 'dtype'");
  ExpectCorrupt(File(R"({"__metadata__":{"k":"1","k":"2"}})"), "duplicate __metadata__ key 'k'");
}

TEST(SafetensorsMalformedTest, MetadataNotStrings) {
  ExpectCorrupt(File(R"({"__metadata__":{"k":1}})"), "values must be strings");
  ExpectCorrupt(File(R"({"__metadata__":{"k":{"n":"v"}}})"), "values must be strings");
  ExpectCorrupt(File(R"({"__metadata__":"text"})"), "__metadata__ is a string");
}

TEST(SafetensorsMalformedTest, MessagesQuoteHostileNamesPrintably) {
  Result<ParsedFile> r =
      Parse(File(R"({"a\u0000\n'":{"dtype":"XX","shape":[1],"data_offsets":[0,1]}})", "x"));
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr(R"('a\x00\x0a\x27')"));
}

// Hostile input must never crash or read out of bounds (run under ASan too):
// flip, truncate and overwrite bytes of a valid file at random.
TEST(SafetensorsMalformedTest, RandomMutationsNeverCrash) {
  const std::vector<SafetensorsEntry> entries = {
      {"a", DType::kF32, {2, 2}, 16}, {"b", DType::kI8, {3}, 3}, {"c", DType::kBF16, {}, 2}};
  Result<ViewLayout> layout = LayoutSafetensors(entries, {{"k", "v"}});
  ASSERT_TRUE(layout.ok());
  const std::string valid = Materialize(*layout, {Pattern(16, 1), Pattern(3, 2), Pattern(2, 3)});
  std::mt19937 rng(42);
  size_t parsed = 0;
  static constexpr char kSyntax[] = "{}[]\",:0123456789-.e\"u";
  for (int i = 0; i < 20000; ++i) {
    std::string f = valid;
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits; ++e) {
      const size_t pos = rng() % f.size();
      switch (rng() % 3) {
        case 0: f[pos] = static_cast<char>(rng()); break;
        case 1: f.resize(pos); break;
        case 2: f[pos] = kSyntax[rng() % (sizeof(kSyntax) - 1)]; break;
      }
      if (f.empty()) break;
    }
    Result<ParsedFile> p = Parse(f);
    if (!p.ok()) continue;
    ++parsed;
    for (const ParsedFile::DataRange& r : p->ranges) {
      ASSERT_LE(r.offset + r.nbytes, f.size());
    }
  }
  EXPECT_GT(parsed, 0u);
}

// ---- LayoutSafetensors input checks ----

TEST(SafetensorsLayoutTest, RejectsBadEntries) {
  EXPECT_EQ(LayoutSafetensors({{"c", DType::kC128, {1}, 16}}).status().code(),
            Status::Code::kUnsupported);
  EXPECT_EQ(LayoutSafetensors({{"u", DType::kUnknown, {1}, 1}}).status().code(),
            Status::Code::kUnsupported);
  EXPECT_EQ(LayoutSafetensors({{"a", DType::kF32, {2}, 4}}).status().code(),
            Status::Code::kInvalidArgument);
  EXPECT_EQ(LayoutSafetensors({{"a", DType::kF32, {-1}, 0}}).status().code(),
            Status::Code::kInvalidArgument);
  EXPECT_EQ(
      LayoutSafetensors({{"a", DType::kU8, {1}, 1}, {"a", DType::kU8, {1}, 1}}).status().code(),
      Status::Code::kInvalidArgument);
  EXPECT_EQ(LayoutSafetensors({{"__metadata__", DType::kU8, {1}, 1}}).status().code(),
            Status::Code::kInvalidArgument);
  Result<ViewLayout> bad_utf8 = LayoutSafetensors({{"a\xff", DType::kU8, {1}, 1}});
  EXPECT_EQ(bad_utf8.status().code(), Status::Code::kInvalidArgument);
  EXPECT_THAT(bad_utf8.status().message(), HasSubstr("UTF-8"));
  EXPECT_EQ(LayoutSafetensors({}, {{"k", "\xff"}}).status().code(), Status::Code::kInvalidArgument);
}

// ---- model.safetensors.index.json ----

TEST(SafetensorsIndexTest, Parses) {
  Result<std::map<std::string, std::string>> m = ParseSafetensorsIndex(R"({
    "metadata": {"total_size": 123},
    "weight_map": {
      "lm_head.weight": "model-00002-of-00002.safetensors",
      "embed.weight": "model-00001-of-00002.safetensors"
    }
  })");
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(*m, (std::map<std::string, std::string>{
                    {"lm_head.weight", "model-00002-of-00002.safetensors"},
                    {"embed.weight", "model-00001-of-00002.safetensors"}}));
}

TEST(SafetensorsIndexTest, RejectsMalformed) {
  const std::pair<const char*, const char*> cases[] = {
      {"not json", "not valid JSON"},
      {"[]", "not a JSON object"},
      {R"({"metadata":{}})", "no weight_map"},
      {R"({"weight_map":[]})", "no weight_map"},
      {R"({"weight_map":{"a":1}})", "is not a string"},
      {R"({"weight_map":{"a":"../x.safetensors"}})", "not a plain file name"},
      {R"({"weight_map":{"a":"sub/x.safetensors"}})", "not a plain file name"},
      {R"({"weight_map":{"a":".."}})", "not a plain file name"},
      {R"({"weight_map":{"a":""}})", "not a plain file name"},
      {R"({"weight_map":{"a":"x\u0000.safetensors"}})", "not a plain file name"},
      {R"({"weight_map":{"a":"x","a":"y"}})", "duplicate key 'a'"},
  };
  for (const auto& [json, what] : cases) {
    Result<std::map<std::string, std::string>> m = ParseSafetensorsIndex(json);
    ASSERT_FALSE(m.ok()) << json;
    EXPECT_TRUE(m.status().IsCorruption()) << json;
    EXPECT_THAT(m.status().message(), HasSubstr(what)) << json;
  }
}

// ---- cross-check with an independent reader ----

// Reads a LayoutSafetensors file the way the reference loader does (length,
// JSON header, offsets relative to the data start) with Python's json and
// numpy, and checks every value.
TEST(SafetensorsCrossCheckTest, PythonReadsLayout) {
  if (std::system("/usr/bin/python3 -c 'import numpy' 2>/dev/null") != 0) {
    GTEST_SKIP() << "/usr/bin/python3 has no numpy";
  }
  const std::vector<SafetensorsEntry> entries = {
      {"w", DType::kF32, {2, 3}, 24},
      {"b", DType::kI64, {3}, 24},
      {"m", DType::kBool, {4}, 4},
  };
  std::string w, b;
  for (int i = 0; i < 6; ++i) {
    const float v = 0.5f * i - 1.0f;
    w.append(reinterpret_cast<const char*>(&v), 4);
  }
  for (int64_t i : {int64_t{-7}, int64_t{0}, int64_t{1} << 40}) {
    b.append(reinterpret_cast<const char*>(&i), 8);
  }
  const std::string m("\1\0\0\1", 4);
  Result<ViewLayout> layout = LayoutSafetensors(entries, {{"format", "np"}});
  ASSERT_TRUE(layout.ok());
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("lfs_st_" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  const std::filesystem::path path = dir / "x.safetensors";
  std::ofstream(path, std::ios::binary) << Materialize(*layout, {w, b, m});
  const std::string script = R"(
import json, struct, sys, numpy as np
raw = open(sys.argv[1], 'rb').read()
n, = struct.unpack('<Q', raw[:8])
assert (8 + n) % 8 == 0
h = json.loads(raw[8:8 + n])
assert h.pop('__metadata__') == {'format': 'np'}
data = raw[8 + n:]
types = {'F32': '<f4', 'I64': '<i8', 'BOOL': '?'}
def get(k):
    b, e = h[k]['data_offsets']
    return np.frombuffer(data[b:e], dtype=types[h[k]['dtype']]).reshape(h[k]['shape'])
assert list(h) == ['w', 'b', 'm']
assert (get('w') == np.arange(6, dtype='<f4').reshape(2, 3) * 0.5 - 1).all()
assert (get('b') == np.array([-7, 0, 1 << 40])).all()
assert (get('m') == np.array([True, False, False, True])).all()
assert h['w']['data_offsets'][0] == 0 and h['m']['data_offsets'][1] == len(data)
)";
  const std::string cmd = "/usr/bin/python3 -c \"$LFS_PY\" " + path.string();
  setenv("LFS_PY", script.c_str(), 1);
  EXPECT_EQ(std::system(cmd.c_str()), 0);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace lfs::formats
