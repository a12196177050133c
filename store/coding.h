// Little helpers to encode LMDB values (fixed-width little-endian and varints),
// and a bounds-checked decoder that never reads past its input.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "store/digest.h"

namespace lfs {

inline void PutFixed8(std::string* s, uint8_t v) { s->push_back(static_cast<char>(v)); }
inline void PutFixed32(std::string* s, uint32_t v) {
  char b[4];
  std::memcpy(b, &v, 4);  // x86-64 and aarch64 are little-endian; FORMAT.md says LE
  s->append(b, 4);
}
inline void PutFixed64(std::string* s, uint64_t v) {
  char b[8];
  std::memcpy(b, &v, 8);
  s->append(b, 8);
}
inline void PutVarint(std::string* s, uint64_t v) {
  while (v >= 0x80) {
    s->push_back(static_cast<char>(v | 0x80));
    v >>= 7;
  }
  s->push_back(static_cast<char>(v));
}
inline void PutBytes(std::string* s, std::string_view b) {
  PutVarint(s, b.size());
  s->append(b);
}
inline void PutDigest(std::string* s, const Digest& d) { s->append(d.Encode()); }

// Big-endian u64, for LMDB keys that must sort numerically.
inline std::string KeyU64(uint64_t v) {
  std::string k(8, '\0');
  for (int i = 7; i >= 0; i--, v >>= 8) k[static_cast<size_t>(i)] = static_cast<char>(v & 0xff);
  return k;
}
inline uint64_t DecodeKeyU64(std::string_view k) {
  uint64_t v = 0;
  for (size_t i = 0; i < 8 && i < k.size(); i++) v = v << 8 | static_cast<uint8_t>(k[i]);
  return v;
}

class Decoder {
 public:
  explicit Decoder(std::string_view in) : p_(in) {}
  bool ok() const { return ok_; }
  bool done() const { return p_.empty(); }
  size_t remaining() const { return p_.size(); }
  uint8_t Fixed8() {
    if (!Need(1)) return 0;
    uint8_t v = static_cast<uint8_t>(p_[0]);
    p_.remove_prefix(1);
    return v;
  }
  uint32_t Fixed32() {
    uint32_t v = 0;
    if (Need(4)) {
      std::memcpy(&v, p_.data(), 4);
      p_.remove_prefix(4);
    }
    return v;
  }
  uint64_t Fixed64() {
    uint64_t v = 0;
    if (Need(8)) {
      std::memcpy(&v, p_.data(), 8);
      p_.remove_prefix(8);
    }
    return v;
  }
  uint64_t Varint() {
    uint64_t v = 0;
    for (int shift = 0; shift <= 63; shift += 7) {
      if (!Need(1)) return 0;
      uint8_t b = static_cast<uint8_t>(p_[0]);
      p_.remove_prefix(1);
      v |= static_cast<uint64_t>(b & 0x7f) << shift;
      if (!(b & 0x80)) return v;
    }
    ok_ = false;
    return 0;
  }
  std::string_view Bytes() {
    uint64_t n = Varint();
    if (!Need(n)) return {};
    std::string_view v = p_.substr(0, n);
    p_.remove_prefix(n);
    return v;
  }
  Digest DigestValue() {
    Digest d;
    if (!Need(Digest::kEncodedBytes)) return d;
    auto dd = Digest::Decode(reinterpret_cast<const uint8_t*>(p_.data()), p_.size());
    if (!dd) {
      ok_ = false;
      return d;
    }
    p_.remove_prefix(Digest::kEncodedBytes);
    return *dd;
  }

 private:
  bool Need(uint64_t n) {
    if (!ok_ || p_.size() < n) {
      ok_ = false;
      return false;
    }
    return true;
  }
  std::string_view p_;
  bool ok_ = true;
};

}  // namespace lfs
