#include "store/formats/dtype.h"

#include <gtest/gtest.h>

#include <set>
#include <string>

namespace lfs::formats {
namespace {

constexpr DType kAll[] = {
    DType::kF64, DType::kF32, DType::kF16, DType::kBF16, DType::kF8E4M3, DType::kF8E5M2,
    DType::kI64, DType::kI32, DType::kI16, DType::kI8,   DType::kU8,     DType::kBool,
    DType::kU16, DType::kU32, DType::kU64, DType::kC64,  DType::kC128,
};

TEST(DTypeTest, NumericIdsAreFrozen) {
  // Stored in LMDB values: renumbering would corrupt existing stores.
  EXPECT_EQ(static_cast<int>(DType::kUnknown), 0);
  EXPECT_EQ(static_cast<int>(DType::kF64), 1);
  EXPECT_EQ(static_cast<int>(DType::kBF16), 4);
  EXPECT_EQ(static_cast<int>(DType::kBool), 12);
  EXPECT_EQ(static_cast<int>(DType::kC128), 17);
}

TEST(DTypeTest, Sizes) {
  EXPECT_EQ(DTypeSize(DType::kUnknown), 0u);
  EXPECT_EQ(DTypeSize(DType::kF64), 8u);
  EXPECT_EQ(DTypeSize(DType::kF32), 4u);
  EXPECT_EQ(DTypeSize(DType::kF16), 2u);
  EXPECT_EQ(DTypeSize(DType::kBF16), 2u);
  EXPECT_EQ(DTypeSize(DType::kF8E4M3), 1u);
  EXPECT_EQ(DTypeSize(DType::kF8E5M2), 1u);
  EXPECT_EQ(DTypeSize(DType::kI64), 8u);
  EXPECT_EQ(DTypeSize(DType::kI32), 4u);
  EXPECT_EQ(DTypeSize(DType::kI16), 2u);
  EXPECT_EQ(DTypeSize(DType::kI8), 1u);
  EXPECT_EQ(DTypeSize(DType::kU8), 1u);
  EXPECT_EQ(DTypeSize(DType::kBool), 1u);
  EXPECT_EQ(DTypeSize(DType::kU16), 2u);
  EXPECT_EQ(DTypeSize(DType::kU32), 4u);
  EXPECT_EQ(DTypeSize(DType::kU64), 8u);
  EXPECT_EQ(DTypeSize(DType::kC64), 8u);
  EXPECT_EQ(DTypeSize(DType::kC128), 16u);
}

TEST(DTypeTest, FloatLike) {
  for (DType t : {DType::kF64, DType::kF32, DType::kF16, DType::kBF16, DType::kF8E4M3,
                  DType::kF8E5M2, DType::kC64, DType::kC128}) {
    EXPECT_TRUE(DTypeIsFloat(t)) << DTypeName(t);
  }
  for (DType t : {DType::kUnknown, DType::kI64, DType::kI32, DType::kI16, DType::kI8, DType::kU8,
                  DType::kBool, DType::kU16, DType::kU32, DType::kU64}) {
    EXPECT_FALSE(DTypeIsFloat(t)) << DTypeName(t);
  }
}

TEST(DTypeTest, SafetensorsNamesRoundTrip) {
  const std::set<std::string> expected = {"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2",
                                          "I64", "I32", "I16", "I8",   "U8",      "BOOL",
                                          "U16", "U32", "U64", "C64"};
  std::set<std::string> seen;
  for (DType t : kAll) {
    if (t == DType::kC128) continue;
    const std::string name = DTypeName(t);
    seen.insert(name);
    ASSERT_EQ(DTypeFromName(name), t) << name;
  }
  EXPECT_EQ(seen, expected);
}

TEST(DTypeTest, SafetensorsNamesRejected) {
  // The safetensors spec has no complex128; "C128" is only our display name.
  EXPECT_STREQ(DTypeName(DType::kC128), "C128");
  EXPECT_EQ(DTypeFromName("C128"), std::nullopt);
  EXPECT_EQ(DTypeFromName("f32"), std::nullopt);  // case matters
  EXPECT_EQ(DTypeFromName(""), std::nullopt);
  EXPECT_EQ(DTypeFromName("UNKNOWN"), std::nullopt);
  EXPECT_EQ(DTypeFromName(std::string("F32\0", 4)), std::nullopt);
}

TEST(DTypeTest, NumpyDescrs) {
  const std::pair<DType, const char*> expected[] = {
      {DType::kF64, "<f8"},  {DType::kF32, "<f4"},   {DType::kF16, "<f2"}, {DType::kI64, "<i8"},
      {DType::kI32, "<i4"},  {DType::kI16, "<i2"},   {DType::kI8, "|i1"},  {DType::kU8, "|u1"},
      {DType::kBool, "|b1"}, {DType::kU16, "<u2"},   {DType::kU32, "<u4"}, {DType::kU64, "<u8"},
      {DType::kC64, "<c8"},  {DType::kC128, "<c16"},
  };
  for (const auto& [t, descr] : expected) {
    EXPECT_EQ(DTypeNumpyDescr(t), descr) << DTypeName(t);
    EXPECT_EQ(DTypeFromNumpyDescr(descr), t) << descr;
  }
  for (DType t : {DType::kBF16, DType::kF8E4M3, DType::kF8E5M2, DType::kUnknown}) {
    EXPECT_EQ(DTypeNumpyDescr(t), std::nullopt) << DTypeName(t);
  }
}

TEST(DTypeTest, NumpyByteOrder) {
  EXPECT_EQ(DTypeFromNumpyDescr("=f4"), DType::kF32);  // native, little-endian here
  EXPECT_EQ(DTypeFromNumpyDescr(">f4"), std::nullopt);
  EXPECT_EQ(DTypeFromNumpyDescr(">i8"), std::nullopt);
  EXPECT_EQ(DTypeFromNumpyDescr("|f4"), std::nullopt);
  EXPECT_EQ(DTypeFromNumpyDescr("f4"), std::nullopt);
  // One-byte types read the same bytes whatever the marker says.
  EXPECT_EQ(DTypeFromNumpyDescr("<u1"), DType::kU8);
  EXPECT_EQ(DTypeFromNumpyDescr(">i1"), DType::kI8);
  EXPECT_EQ(DTypeFromNumpyDescr("=b1"), DType::kBool);
}

TEST(DTypeTest, NumpyDescrsRejected) {
  for (const char* d : {"", "<", "|O", "<U10", "|S5", "<f16", "<m8", "<M8[ns]", "<f4 ", "xf4"}) {
    EXPECT_EQ(DTypeFromNumpyDescr(d), std::nullopt) << d;
  }
}

TEST(DTypeTest, TorchStorages) {
  const std::pair<DType, const char*> expected[] = {
      {DType::kF64, "DoubleStorage"},
      {DType::kF32, "FloatStorage"},
      {DType::kF16, "HalfStorage"},
      {DType::kBF16, "BFloat16Storage"},
      {DType::kF8E4M3, "Float8_e4m3fnStorage"},
      {DType::kF8E5M2, "Float8_e5m2Storage"},
      {DType::kI64, "LongStorage"},
      {DType::kI32, "IntStorage"},
      {DType::kI16, "ShortStorage"},
      {DType::kI8, "CharStorage"},
      {DType::kU8, "ByteStorage"},
      {DType::kBool, "BoolStorage"},
      {DType::kU16, "UInt16Storage"},
      {DType::kU32, "UInt32Storage"},
      {DType::kU64, "UInt64Storage"},
      {DType::kC64, "ComplexFloatStorage"},
      {DType::kC128, "ComplexDoubleStorage"},
  };
  for (const auto& [t, storage] : expected) {
    EXPECT_EQ(DTypeTorchStorage(t), storage) << DTypeName(t);
    EXPECT_EQ(DTypeFromTorchStorage(storage), t) << storage;
  }
  EXPECT_EQ(DTypeTorchStorage(DType::kUnknown), std::nullopt);
  EXPECT_EQ(DTypeFromTorchStorage("QInt8Storage"), std::nullopt);
  EXPECT_EQ(DTypeFromTorchStorage("torch.FloatStorage"), std::nullopt);
  EXPECT_EQ(DTypeFromTorchStorage(""), std::nullopt);
}

}  // namespace
}  // namespace lfs::formats
