// Content addresses. Every digest carries the id of the algorithm that made it,
// so a future algorithm can coexist with stored XXH3-128 addresses.
#pragma once

#include <cstdint>
#include <cstring>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace lfs {

// Frozen: stored on disk (store/FORMAT.md).
enum class HashAlgo : uint8_t { kNone = 0, kXxh3_128 = 1 };

struct Digest {
  static constexpr size_t kHashBytes = 16;
  static constexpr size_t kEncodedBytes = 1 + kHashBytes;  // algo tag + hash

  HashAlgo algo = HashAlgo::kNone;
  uint8_t bytes[kHashBytes] = {};

  // XXH3-128 of data (the project's address function).
  static Digest Of(const void* data, size_t len);
  static Digest Of(std::string_view s) { return Of(s.data(), s.size()); }

  bool empty() const { return algo == HashAlgo::kNone; }
  std::string Hex() const;  // "xxh3:" + 32 hex digits
  std::string ShortHex() const { return Hex().substr(5, 12); }
  static std::optional<Digest> FromHex(std::string_view s);

  // 17-byte on-disk encoding: algo, then the hash big-endian.
  void EncodeTo(uint8_t out[kEncodedBytes]) const;
  std::string Encode() const;
  static std::optional<Digest> Decode(const uint8_t* p, size_t len);
  uint64_t Low64() const;

  bool operator==(const Digest& o) const {
    return algo == o.algo && std::memcmp(bytes, o.bytes, kHashBytes) == 0;
  }
  bool operator!=(const Digest& o) const { return !(*this == o); }
  bool operator<(const Digest& o) const {
    if (algo != o.algo) return algo < o.algo;
    return std::memcmp(bytes, o.bytes, kHashBytes) < 0;
  }
};

// Streaming XXH3-128 for whole files and tensors.
class Hasher {
 public:
  Hasher();
  ~Hasher();
  Hasher(const Hasher&) = delete;
  Hasher& operator=(const Hasher&) = delete;
  void Update(const void* data, size_t len);
  Digest Finish();

 private:
  void* state_;
};

uint64_t Hash64(const void* data, size_t len);  // XXH3-64, for inode numbers etc.

}  // namespace lfs

template <>
struct std::hash<lfs::Digest> {
  size_t operator()(const lfs::Digest& d) const { return d.Low64(); }
};
