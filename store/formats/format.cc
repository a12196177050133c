#include "store/formats/format.h"

namespace lfs::formats {

const char* FormatName(Format f) {
  switch (f) {
    case Format::kGeneric: return "generic";
    case Format::kSafetensors: return "safetensors";
    case Format::kTorchZip: return "torch-zip";
    case Format::kNpy: return "npy";
    case Format::kNpz: return "npz";
    case Format::kSafetensorsIndex: return "safetensors-index";
  }
  return "unknown";
}

std::string QuoteForLog(std::string_view s, size_t max_bytes, bool keep_utf8) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out = "'";
  for (size_t i = 0; i < s.size() && i < max_bytes; ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    bool escape = c < 0x20 || c == 0x7f || c == '\\' || c == '\'' || (c >= 0x80 && !keep_utf8);
    if (escape) {
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    } else {
      out += static_cast<char>(c);
    }
  }
  if (s.size() > max_bytes) out += "...";
  return out + "'";
}

Status MemoryAccess::ReadAt(uint64_t off, size_t n, std::string* out) const {
  if (off > bytes_.size() || n > bytes_.size() - off) {
    return Status::Corruption("read of " + std::to_string(n) + " bytes at " + std::to_string(off) +
                              " past end of " + std::to_string(bytes_.size()) + "-byte file");
  }
  out->assign(bytes_.data() + off, n);
  return Status::OK();
}

}  // namespace lfs::formats
