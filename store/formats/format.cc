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

Status MemoryAccess::ReadAt(uint64_t off, size_t n, std::string* out) const {
  if (off > bytes_.size() || n > bytes_.size() - off) {
    return Status::Corruption("read of " + std::to_string(n) + " bytes at " + std::to_string(off) +
                              " past end of " + std::to_string(bytes_.size()) + "-byte file");
  }
  out->assign(bytes_.data() + off, n);
  return Status::OK();
}

}  // namespace lfs::formats
