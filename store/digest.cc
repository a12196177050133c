#include "store/digest.h"

#define XXH_INLINE_ALL
#include <xxhash.h>

namespace lfs {

namespace {
void FromCanonical(const XXH128_hash_t& h, Digest* d) {
  XXH128_canonical_t c;
  XXH128_canonicalFromHash(&c, h);
  d->algo = HashAlgo::kXxh3_128;
  std::memcpy(d->bytes, c.digest, Digest::kHashBytes);
}
constexpr char kHexDigits[] = "0123456789abcdef";
int HexVal(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}
}  // namespace

Digest Digest::Of(const void* data, size_t len) {
  Digest d;
  FromCanonical(XXH3_128bits(data, len), &d);
  return d;
}

std::string Digest::Hex() const {
  std::string s = "xxh3:";
  for (uint8_t b : bytes) {
    s.push_back(kHexDigits[b >> 4]);
    s.push_back(kHexDigits[b & 15]);
  }
  return s;
}

std::optional<Digest> Digest::FromHex(std::string_view s) {
  if (s.substr(0, 5) == "xxh3:") s.remove_prefix(5);
  if (s.size() != 2 * kHashBytes) return std::nullopt;
  Digest d;
  d.algo = HashAlgo::kXxh3_128;
  for (size_t i = 0; i < kHashBytes; i++) {
    int hi = HexVal(s[2 * i]), lo = HexVal(s[2 * i + 1]);
    if (hi < 0 || lo < 0) return std::nullopt;
    d.bytes[i] = static_cast<uint8_t>(hi << 4 | lo);
  }
  return d;
}

void Digest::EncodeTo(uint8_t out[kEncodedBytes]) const {
  out[0] = static_cast<uint8_t>(algo);
  std::memcpy(out + 1, bytes, kHashBytes);
}

std::string Digest::Encode() const {
  uint8_t buf[kEncodedBytes];
  EncodeTo(buf);
  return std::string(reinterpret_cast<char*>(buf), kEncodedBytes);
}

std::optional<Digest> Digest::Decode(const uint8_t* p, size_t len) {
  if (len < kEncodedBytes) return std::nullopt;
  if (p[0] != static_cast<uint8_t>(HashAlgo::kXxh3_128) && p[0] != 0) return std::nullopt;
  Digest d;
  d.algo = static_cast<HashAlgo>(p[0]);
  std::memcpy(d.bytes, p + 1, kHashBytes);
  return d;
}

uint64_t Digest::Low64() const {
  uint64_t v;
  std::memcpy(&v, bytes + 8, sizeof v);
  return v;
}

Hasher::Hasher() : state_(XXH3_createState()) {
  XXH3_128bits_reset(static_cast<XXH3_state_t*>(state_));
}
Hasher::~Hasher() { XXH3_freeState(static_cast<XXH3_state_t*>(state_)); }
void Hasher::Update(const void* data, size_t len) {
  XXH3_128bits_update(static_cast<XXH3_state_t*>(state_), data, len);
}
Digest Hasher::Finish() {
  Digest d;
  FromCanonical(XXH3_128bits_digest(static_cast<XXH3_state_t*>(state_)), &d);
  return d;
}

uint64_t Hash64(const void* data, size_t len) { return XXH3_64bits(data, len); }

}  // namespace lfs
