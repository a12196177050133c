#include "store/formats/detect.h"

#include <algorithm>
#include <cctype>

#include "store/formats/npy.h"
#include "store/formats/safetensors.h"
#include "store/formats/torch_zip.h"

namespace lfs::formats {
namespace {

bool EndsWithNoCase(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() &&
         std::equal(suffix.begin(), suffix.end(), s.end() - suffix.size(), [](char a, char b) {
           return std::tolower(static_cast<unsigned char>(a)) ==
                  std::tolower(static_cast<unsigned char>(b));
         });
}

}  // namespace

// ParsedFile{} is kGeneric with no ranges.
Result<ParsedFile> ParseAny(std::string_view file_name, const RandomAccess& f,
                            const ParseLimits& lim) {
  // Sharded-checkpoint indexes are small JSON files the importer reads itself.
  if (EndsWithNoCase(file_name, ".safetensors.index.json")) return ParsedFile{};

  const uint64_t size = f.Size();
  std::string head;
  LFS_RETURN_IF_ERROR(f.ReadAt(0, std::min<uint64_t>(size, 9), &head));

  if (head.starts_with("PK\x03\x04")) {
    Result<ParsedFile> r =
        EndsWithNoCase(file_name, ".npz") ? ParseNpz(f, lim) : ParseTorchZip(f, lim);
    // A zip that is not a checkpoint (or one we cannot map, such as a
    // compressed .npz) is ordinary data, not a malformed checkpoint - unless
    // its name says checkpoint: then the reason (a refused pickle global…)
    // is worth the log line.
    bool named_checkpoint = EndsWithNoCase(file_name, ".pt") || EndsWithNoCase(file_name, ".pth") ||
                            EndsWithNoCase(file_name, ".ckpt") || EndsWithNoCase(file_name, ".bin");
    if (!r.ok() && r.status().code() == Status::Code::kUnsupported && !named_checkpoint) {
      return ParsedFile{};
    }
    return r;
  }
  if (head.starts_with("\x93NUMPY")) return ParseNpy(f, lim);
  if (head.size() == 9 && head[8] == '{') {
    uint64_t header_len = 0;
    for (int i = 7; i >= 0; --i) header_len = header_len << 8 | static_cast<unsigned char>(head[i]);
    if (header_len <= size - 8) return ParseSafetensors(f, lim);
  }
  // Named like a checkpoint but not shaped like one: parse anyway, so the
  // log says what is wrong (a header length of 2^63, a truncated file…).
  if (EndsWithNoCase(file_name, ".safetensors")) return ParseSafetensors(f, lim);
  if (EndsWithNoCase(file_name, ".npy")) return ParseNpy(f, lim);
  return ParsedFile{};
}

}  // namespace lfs::formats
