// Content-defined chunking (FastCDC-style, gear hash with normalised chunking)
// for generic bytes; tensors are cut at fixed offsets by the ingest code.
#pragma once

#include <cstddef>
#include <cstdint>

namespace lfs {

struct CdcParams {
  // Chosen by measurement (store/FORMAT.md, "Chunk sizes").
  size_t min_size = 16 << 10;
  size_t avg_size = 64 << 10;  // must be a power of two
  size_t max_size = 256 << 10;
};

class CdcChunker {
 public:
  explicit CdcChunker(CdcParams p = {});
  // Length of the next chunk starting at data[0]. When len < max_size and
  // !at_eof, the answer may be a cut inside data or 0 meaning "give me more
  // bytes"; at EOF it returns at most len (len when no cut is found).
  size_t NextCut(const uint8_t* data, size_t len, bool at_eof) const;
  const CdcParams& params() const { return p_; }

 private:
  CdcParams p_;
  uint64_t mask_small_;  // stricter mask before avg_size (normalised chunking)
  uint64_t mask_large_;  // looser mask after avg_size
};

}  // namespace lfs
