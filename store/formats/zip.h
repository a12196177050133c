// A bounds-checked reader of zip central directories (incl. zip64), enough
// for torch.save archives and uncompressed .npz files.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "store/formats/format.h"

namespace lfs::formats {

struct ZipEntry {
  std::string name;
  uint64_t local_header_offset = 0;
  uint64_t data_offset = 0;  // first byte of the (stored) data
  uint64_t compressed_size = 0;
  uint64_t size = 0;
  uint32_t crc32 = 0;
  uint16_t method = 0;  // 0 = stored
};

// Reads the central directory; verifies every entry's local header lies inside
// the file and its data range does not overlap another's.
Result<std::vector<ZipEntry>> ReadZipDirectory(const RandomAccess& f, const ParseLimits& lim = {});

}  // namespace lfs::formats
