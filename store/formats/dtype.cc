#include "store/formats/dtype.h"

#include <array>
#include <bit>

namespace lfs::formats {
namespace {

// Parsers hand file bytes to callers as-is and the numpy '=' (native) marker is
// read as little-endian: both assume a little-endian host.
static_assert(std::endian::native == std::endian::little);

// One row per dtype; nullptr where a format has no spelling for it.
struct DTypeInfo {
  DType type;
  size_t size;
  bool is_float;
  const char* name;  // safetensors; "C128" is ours (safetensors has no complex128)
  bool safetensors_has_it;
  const char* numpy_type;  // numpy descr without the byte-order character
  const char* torch_storage;
};

constexpr std::array<DTypeInfo, 17> kTable = {{
    {DType::kF64, 8, true, "F64", true, "f8", "DoubleStorage"},
    {DType::kF32, 4, true, "F32", true, "f4", "FloatStorage"},
    {DType::kF16, 2, true, "F16", true, "f2", "HalfStorage"},
    {DType::kBF16, 2, true, "BF16", true, nullptr, "BFloat16Storage"},
    {DType::kF8E4M3, 1, true, "F8_E4M3", true, nullptr, "Float8_e4m3fnStorage"},
    {DType::kF8E5M2, 1, true, "F8_E5M2", true, nullptr, "Float8_e5m2Storage"},
    {DType::kI64, 8, false, "I64", true, "i8", "LongStorage"},
    {DType::kI32, 4, false, "I32", true, "i4", "IntStorage"},
    {DType::kI16, 2, false, "I16", true, "i2", "ShortStorage"},
    {DType::kI8, 1, false, "I8", true, "i1", "CharStorage"},
    {DType::kU8, 1, false, "U8", true, "u1", "ByteStorage"},
    {DType::kBool, 1, false, "BOOL", true, "b1", "BoolStorage"},
    {DType::kU16, 2, false, "U16", true, "u2", "UInt16Storage"},
    {DType::kU32, 4, false, "U32", true, "u4", "UInt32Storage"},
    {DType::kU64, 8, false, "U64", true, "u8", "UInt64Storage"},
    {DType::kC64, 8, true, "C64", true, "c8", "ComplexFloatStorage"},
    {DType::kC128, 16, true, "C128", false, "c16", "ComplexDoubleStorage"},
}};

const DTypeInfo* Find(DType t) {
  for (const DTypeInfo& d : kTable) {
    if (d.type == t) return &d;
  }
  return nullptr;
}

}  // namespace

size_t DTypeSize(DType t) {
  const DTypeInfo* d = Find(t);
  return d ? d->size : 0;
}

bool DTypeIsFloat(DType t) {
  const DTypeInfo* d = Find(t);
  return d && d->is_float;
}

const char* DTypeName(DType t) {
  const DTypeInfo* d = Find(t);
  return d ? d->name : "UNKNOWN";
}

std::optional<DType> DTypeFromName(std::string_view safetensors_name) {
  for (const DTypeInfo& d : kTable) {
    if (d.safetensors_has_it && safetensors_name == d.name) return d.type;
  }
  return std::nullopt;
}

std::optional<std::string> DTypeNumpyDescr(DType t) {
  const DTypeInfo* d = Find(t);
  if (!d || !d->numpy_type) return std::nullopt;
  // numpy spells single-byte types with '|' ("byte order not applicable").
  return std::string(d->size == 1 ? "|" : "<") + d->numpy_type;
}

std::optional<DType> DTypeFromNumpyDescr(std::string_view descr) {
  if (descr.size() < 2) return std::nullopt;
  const char order = descr[0];
  const std::string_view type = descr.substr(1);
  for (const DTypeInfo& d : kTable) {
    if (!d.numpy_type || type != d.numpy_type) continue;
    // Byte order is meaningless for one-byte types, so every marker reads the
    // same bytes; wider types must be little-endian ('<', or '=' = native).
    if (d.size == 1) {
      if (order == '|' || order == '<' || order == '>' || order == '=') return d.type;
    } else if (order == '<' || order == '=') {
      return d.type;
    }
    return std::nullopt;
  }
  return std::nullopt;
}

std::optional<std::string> DTypeTorchStorage(DType t) {
  const DTypeInfo* d = Find(t);
  if (!d) return std::nullopt;
  return std::string(d->torch_storage);
}

std::optional<DType> DTypeFromTorchStorage(std::string_view storage_class) {
  for (const DTypeInfo& d : kTable) {
    if (storage_class == d.torch_storage) return d.type;
  }
  return std::nullopt;
}

}  // namespace lfs::formats
