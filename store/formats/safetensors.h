// safetensors: 8-byte little-endian header length, JSON header, tensor data.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "store/formats/format.h"

namespace lfs::formats {

Result<ParsedFile> ParseSafetensors(const RandomAccess& f, const ParseLimits& lim = {});

struct SafetensorsEntry {
  std::string name;
  DType dtype = DType::kUnknown;
  std::vector<int64_t> shape;
  uint64_t nbytes = 0;
};
// Layout of a safetensors file holding entries in order (data packed in the
// given order; header padded with spaces to a multiple of 8 bytes).
Result<ViewLayout> LayoutSafetensors(const std::vector<SafetensorsEntry>& entries,
                                     const std::map<std::string, std::string>& metadata = {});

// model.safetensors.index.json: tensor name -> shard file name.
Result<std::map<std::string, std::string>> ParseSafetensorsIndex(std::string_view json);

}  // namespace lfs::formats
