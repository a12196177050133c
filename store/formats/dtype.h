// Element types of tensors, with frozen numeric ids (stored in LMDB values).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace lfs::formats {

enum class DType : uint8_t {
  kUnknown = 0,
  kF64 = 1,
  kF32 = 2,
  kF16 = 3,
  kBF16 = 4,
  kF8E4M3 = 5,
  kF8E5M2 = 6,
  kI64 = 7,
  kI32 = 8,
  kI16 = 9,
  kI8 = 10,
  kU8 = 11,
  kBool = 12,
  kU16 = 13,
  kU32 = 14,
  kU64 = 15,
  kC64 = 16,   // complex64 (two f32)
  kC128 = 17,  // complex128 (two f64)
};

size_t DTypeSize(DType t);       // bytes per element; 0 for kUnknown
bool DTypeIsFloat(DType t);      // float-like: worth byte-grouping
const char* DTypeName(DType t);  // "F32", "BF16", ... (safetensors spelling)
std::optional<DType> DTypeFromName(std::string_view safetensors_name);
// numpy descr ("<f4", "|b1", ...) or nullopt when numpy has no such dtype (bf16, fp8).
std::optional<std::string> DTypeNumpyDescr(DType t);
std::optional<DType> DTypeFromNumpyDescr(std::string_view descr);
// torch storage class name ("FloatStorage", "BFloat16Storage", ...).
std::optional<std::string> DTypeTorchStorage(DType t);
std::optional<DType> DTypeFromTorchStorage(std::string_view storage_class);

}  // namespace lfs::formats
