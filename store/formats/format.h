// What a checkpoint parser reports: where each tensor's bytes lie in the file.
// Parsers are pure and bounds-checked; they read through a RandomAccess so a
// multi-GB file is never loaded whole. Anything a parser rejects is stored as
// generic bytes by the caller, with the Status message logged as the reason.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "store/formats/dtype.h"
#include "store/status.h"

namespace lfs::formats {

// Frozen: stored in file recipes.
enum class Format : uint8_t {
  kGeneric = 0,
  kSafetensors = 1,
  kTorchZip = 2,
  kNpy = 3,
  kNpz = 4,
  kSafetensorsIndex = 5,  // model.safetensors.index.json (a JSON file, noted for sharding)
};
const char* FormatName(Format f);

// A header string for a log message: quoted, at most max_bytes of it, control
// bytes, quotes and backslashes as \xNN (bytes >= 0x80 too unless keep_utf8),
// so hostile names stay printable and short.
std::string QuoteForLog(std::string_view s, size_t max_bytes = 80, bool keep_utf8 = false);

class RandomAccess {
 public:
  virtual ~RandomAccess() = default;
  virtual uint64_t Size() const = 0;
  // Reads exactly n bytes at off, or fails (short read past EOF is an error).
  // Ingest calls it from several threads at once.
  virtual Status ReadAt(uint64_t off, size_t n, std::string* out) const = 0;
};

// A RandomAccess over bytes already in memory (tests, fuzzers, small files).
class MemoryAccess final : public RandomAccess {
 public:
  explicit MemoryAccess(std::string_view bytes) : bytes_(bytes) {}
  uint64_t Size() const override { return bytes_.size(); }
  Status ReadAt(uint64_t off, size_t n, std::string* out) const override;

 private:
  std::string_view bytes_;
};

struct TensorSpan {
  std::string name;  // as in the checkpoint (may be hostile: callers sanitise)
  DType dtype = DType::kUnknown;
  std::vector<int64_t> shape;
  uint64_t offset = 0;  // byte offset of the tensor's data in the file
  uint64_t nbytes = 0;  // length of that data in the file
  // .pt only: a tensor is a view of a storage record; several views may share one.
  std::vector<int64_t> stride;
  int64_t storage_offset = 0;  // in elements
  std::string storage_key;     // record name, e.g. "archive/data/0"
};

struct ParsedFile {
  Format format = Format::kGeneric;
  // Byte ranges holding tensor data (for .pt: whole storage records), sorted by
  // offset, non-overlapping, inside the file. Bytes outside them are header.
  struct DataRange {
    uint64_t offset = 0;
    uint64_t nbytes = 0;
    DType dtype = DType::kUnknown;  // element type (for byte grouping and deltas)
    std::string key;                // tensor name (safetensors/npy) or storage key (.pt)
  };
  std::vector<DataRange> ranges;
  // The logical tensors (for .pt, views into ranges; elsewhere one per range).
  std::vector<TensorSpan> tensors;
};

// Limits that keep hostile headers from costing memory or time.
struct ParseLimits {
  uint64_t max_header_bytes = 100ull << 20;  // safetensors JSON / pickle / zip directory
  uint64_t max_tensors = 1'000'000;
  uint64_t max_dims = 64;
  uint64_t max_pickle_depth = 1000;
};

}  // namespace lfs::formats

namespace lfs::formats {

// A synthesized file (a .npy or .safetensors view of a tensor, a whole-checkpoint
// view in the other format) is literal header bytes interleaved with tensor data.
struct ViewSegment {
  uint64_t length = 0;
  int32_t tensor = -1;         // -1: literal bytes; else index into the caller's tensor list
  uint64_t tensor_offset = 0;  // byte offset inside that tensor's data
  std::string literal;         // when tensor == -1 (literal.size() == length)
};
struct ViewLayout {
  uint64_t size = 0;  // exact size, known before any data is read
  std::vector<ViewSegment> segments;
};

}  // namespace lfs::formats
