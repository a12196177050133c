#include "store/formats/zip.h"

#include <algorithm>
#include <optional>
#include <string_view>
#include <unordered_set>

namespace lfs::formats {
namespace {

constexpr uint32_t kLocalHeaderSig = 0x04034b50;
constexpr uint32_t kCentralHeaderSig = 0x02014b50;
constexpr uint32_t kEocdSig = 0x06054b50;
constexpr uint32_t kZip64EocdSig = 0x06064b50;
constexpr uint32_t kZip64LocatorSig = 0x07064b50;

constexpr size_t kLocalHeaderSize = 30;
constexpr size_t kCentralHeaderSize = 46;
constexpr size_t kEocdSize = 22;
constexpr size_t kZip64EocdSize = 56;
constexpr size_t kZip64LocatorSize = 20;
constexpr size_t kMaxComment = 0xFFFF;
constexpr uint16_t kZip64ExtraId = 0x0001;
constexpr uint16_t kFlagEncrypted = 0x0001;

// Cap on entries independent of the directory size: a torch archive has one
// record per storage plus a handful of metadata records.
uint64_t MaxEntries(const ParseLimits& lim) { return lim.max_tensors * 4 + 64; }

uint64_t LoadLE(std::string_view b, size_t pos, size_t n) {
  uint64_t v = 0;
  for (size_t i = n; i-- > 0;) v = (v << 8) | static_cast<unsigned char>(b[pos + i]);
  return v;
}
uint16_t LE16(std::string_view b, size_t pos) { return static_cast<uint16_t>(LoadLE(b, pos, 2)); }
uint32_t LE32(std::string_view b, size_t pos) { return static_cast<uint32_t>(LoadLE(b, pos, 4)); }
uint64_t LE64(std::string_view b, size_t pos) { return LoadLE(b, pos, 8); }

std::string Quote(std::string_view s) { return QuoteForLog(s); }

Status Corrupt(const std::string& why) { return Status::Corruption("zip: " + why); }

struct Directory {
  uint64_t entries = 0;
  uint64_t offset = 0;
  uint64_t size = 0;
  uint64_t end = 0;  // where the end records start: the directory must end there
};

// Finds the end of central directory record (and its zip64 successor) and
// returns where the central directory is. The EOCD is the last 22 bytes of
// the file plus a comment of at most 64 KiB; we accept only a candidate whose
// comment length reaches exactly the end of the file, so a signature inside a
// comment is never mistaken for the record.
Result<Directory> FindDirectory(const RandomAccess& f, const ParseLimits& lim) {
  const uint64_t file_size = f.Size();
  if (file_size < kEocdSize)
    return Corrupt("file too small for an end of central directory record");
  const uint64_t tail_len = std::min<uint64_t>(file_size, kEocdSize + kMaxComment);
  const uint64_t tail_start = file_size - tail_len;
  std::string tail;
  LFS_RETURN_IF_ERROR(f.ReadAt(tail_start, tail_len, &tail));

  std::optional<size_t> eocd;
  for (size_t pos = tail.size() - kEocdSize + 1; pos-- > 0;) {
    if (LE32(tail, pos) == kEocdSig && pos + kEocdSize + LE16(tail, pos + 20) == tail.size()) {
      eocd = pos;
      break;
    }
  }
  if (!eocd) return Corrupt("no end of central directory record");

  const std::string_view e = std::string_view(tail).substr(*eocd, kEocdSize);
  Directory d;
  const uint64_t eocd_offset = tail_start + *eocd;
  if (LE16(e, 4) != 0 || LE16(e, 6) != 0 || LE16(e, 8) != LE16(e, 10)) {
    return Status::Unsupported("zip: multi-disk archives are not supported");
  }
  d.entries = LE16(e, 10);
  d.size = LE32(e, 12);
  d.offset = LE32(e, 16);
  d.end = eocd_offset;

  // A zip64 locator right before the EOCD overrides its (saturated) fields;
  // miniz and Python's zipfile do the same whenever the locator is present.
  if (eocd_offset >= kZip64LocatorSize) {
    std::string loc;
    LFS_RETURN_IF_ERROR(f.ReadAt(eocd_offset - kZip64LocatorSize, kZip64LocatorSize, &loc));
    if (LE32(loc, 0) == kZip64LocatorSig) {
      if (LE32(loc, 4) != 0 || LE32(loc, 16) > 1) {
        return Status::Unsupported("zip: multi-disk zip64 archives are not supported");
      }
      const uint64_t rec_offset = LE64(loc, 8);
      const uint64_t loc_offset = eocd_offset - kZip64LocatorSize;
      if (rec_offset > loc_offset || loc_offset - rec_offset < kZip64EocdSize) {
        return Corrupt("zip64 end of central directory record at " + std::to_string(rec_offset) +
                       " does not precede its locator at " + std::to_string(loc_offset));
      }
      std::string rec;
      LFS_RETURN_IF_ERROR(f.ReadAt(rec_offset, kZip64EocdSize, &rec));
      if (LE32(rec, 0) != kZip64EocdSig)
        return Corrupt("bad zip64 end of central directory signature");
      if (LE32(rec, 16) != 0 || LE32(rec, 20) != 0 || LE64(rec, 24) != LE64(rec, 32)) {
        return Status::Unsupported("zip: multi-disk zip64 archives are not supported");
      }
      d.entries = LE64(rec, 32);
      d.size = LE64(rec, 40);
      d.offset = LE64(rec, 48);
      d.end = rec_offset;
    }
  }

  if (d.offset > d.end || d.size > d.end - d.offset) {
    return Corrupt("central directory (" + std::to_string(d.size) + " bytes at " +
                   std::to_string(d.offset) + ") does not end before the end record at " +
                   std::to_string(d.end));
  }
  if (d.size > lim.max_header_bytes) {
    return Corrupt("central directory of " + std::to_string(d.size) +
                   " bytes exceeds the limit of " + std::to_string(lim.max_header_bytes));
  }
  if (d.entries > MaxEntries(lim)) {
    return Corrupt(std::to_string(d.entries) + " entries exceed the limit of " +
                   std::to_string(MaxEntries(lim)));
  }
  if (d.entries > d.size / kCentralHeaderSize) {
    return Corrupt(std::to_string(d.entries) + " entries cannot fit a " + std::to_string(d.size) +
                   "-byte central directory");
  }
  return d;
}

// Replaces saturated 32-bit fields with their values from the zip64 extended
// information field. Only the saturated fields are present, in this order.
Status ApplyZip64Extra(std::string_view extra, ZipEntry* z, uint32_t size32, uint32_t csize32,
                       uint32_t offset32) {
  const bool need_size = size32 == 0xFFFFFFFF;
  const bool need_csize = csize32 == 0xFFFFFFFF;
  const bool need_offset = offset32 == 0xFFFFFFFF;
  if (!need_size && !need_csize && !need_offset) return Status::OK();
  size_t pos = 0;
  while (pos + 4 <= extra.size()) {
    const uint16_t id = LE16(extra, pos);
    const uint16_t len = LE16(extra, pos + 2);
    if (pos + 4 + len > extra.size()) break;
    if (id == kZip64ExtraId) {
      const std::string_view field = extra.substr(pos + 4, len);
      size_t at = 0;
      auto take = [&](uint64_t* out) {
        if (at + 8 > field.size()) return false;
        *out = LE64(field, at);
        at += 8;
        return true;
      };
      if ((need_size && !take(&z->size)) || (need_csize && !take(&z->compressed_size)) ||
          (need_offset && !take(&z->local_header_offset))) {
        return Corrupt("zip64 extra field of " + Quote(z->name) + " is too short");
      }
      return Status::OK();
    }
    pos += 4 + len;
  }
  return Corrupt("entry " + Quote(z->name) + " has saturated sizes but no zip64 extra field");
}

}  // namespace

Result<std::vector<ZipEntry>> ReadZipDirectory(const RandomAccess& f, const ParseLimits& lim) {
  LFS_ASSIGN_OR_RETURN(const Directory d, FindDirectory(f, lim));
  std::string cd;
  LFS_RETURN_IF_ERROR(f.ReadAt(d.offset, d.size, &cd));

  std::vector<ZipEntry> entries;
  entries.reserve(d.entries);
  std::unordered_set<std::string_view> names;
  size_t pos = 0;
  for (uint64_t i = 0; i < d.entries; ++i) {
    if (cd.size() - pos < kCentralHeaderSize || LE32(cd, pos) != kCentralHeaderSig) {
      return Corrupt("central directory entry " + std::to_string(i) + " is missing or truncated");
    }
    const std::string_view h = std::string_view(cd).substr(pos, kCentralHeaderSize);
    const size_t name_len = LE16(h, 28);
    const size_t extra_len = LE16(h, 30);
    const size_t comment_len = LE16(h, 32);
    if (cd.size() - pos - kCentralHeaderSize < name_len + extra_len + comment_len) {
      return Corrupt("central directory entry " + std::to_string(i) + " runs past the directory");
    }
    ZipEntry z;
    z.name = cd.substr(pos + kCentralHeaderSize, name_len);
    if (LE16(h, 8) & kFlagEncrypted) {
      return Status::Unsupported("zip: entry " + Quote(z.name) + " is encrypted");
    }
    if (LE16(h, 34) != 0 && LE16(h, 34) != 0xFFFF) {
      return Status::Unsupported("zip: entry " + Quote(z.name) + " is on another disk");
    }
    z.method = LE16(h, 10);
    z.crc32 = LE32(h, 16);
    z.compressed_size = LE32(h, 20);
    z.size = LE32(h, 24);
    z.local_header_offset = LE32(h, 42);
    LFS_RETURN_IF_ERROR(
        ApplyZip64Extra(std::string_view(cd).substr(pos + kCentralHeaderSize + name_len, extra_len),
                        &z, LE32(h, 24), LE32(h, 20), LE32(h, 42)));
    if (z.method == 0 && z.compressed_size != z.size) {
      return Corrupt("stored entry " + Quote(z.name) + " has compressed size " +
                     std::to_string(z.compressed_size) + " != size " + std::to_string(z.size));
    }
    pos += kCentralHeaderSize + name_len + extra_len + comment_len;
    entries.push_back(std::move(z));
  }
  for (const ZipEntry& z : entries) {
    // Two readers may pick different duplicates: refuse the ambiguity.
    if (!names.insert(z.name).second) return Corrupt("duplicate entry " + Quote(z.name));
  }

  // Local headers: the data starts after the local name and extra field, whose
  // length may differ from the central one (torch pads it to align records).
  for (ZipEntry& z : entries) {
    const uint64_t lho = z.local_header_offset;
    const size_t head = kLocalHeaderSize + z.name.size();
    if (lho > d.offset || d.offset - lho < head) {
      return Corrupt("local header of " + Quote(z.name) + " at " + std::to_string(lho) +
                     " is not inside the data area (which ends at " + std::to_string(d.offset) +
                     ")");
    }
    std::string lh;
    LFS_RETURN_IF_ERROR(f.ReadAt(lho, head, &lh));
    if (LE32(lh, 0) != kLocalHeaderSig)
      return Corrupt("bad local header signature for " + Quote(z.name));
    // The central and local names must agree, or two readers could disagree
    // about which bytes a name refers to.
    if (LE16(lh, 26) != z.name.size() || std::string_view(lh).substr(kLocalHeaderSize) != z.name) {
      return Corrupt("local header name differs from central directory name " + Quote(z.name));
    }
    z.data_offset = lho + head + LE16(lh, 28);
    if (z.data_offset > d.offset || z.compressed_size > d.offset - z.data_offset) {
      return Corrupt("data of " + Quote(z.name) + " (" + std::to_string(z.compressed_size) +
                     " bytes at " + std::to_string(z.data_offset) +
                     ") runs past the central directory at " + std::to_string(d.offset));
    }
  }

  // Each entry occupies [local header, end of data); no two may share bytes.
  std::vector<const ZipEntry*> by_offset;
  by_offset.reserve(entries.size());
  for (const ZipEntry& z : entries) by_offset.push_back(&z);
  std::sort(by_offset.begin(), by_offset.end(), [](const ZipEntry* a, const ZipEntry* b) {
    return a->local_header_offset < b->local_header_offset;
  });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const ZipEntry& prev = *by_offset[i - 1];
    const ZipEntry& next = *by_offset[i];
    if (prev.data_offset + prev.compressed_size > next.local_header_offset) {
      return Corrupt("entries " + Quote(prev.name) + " and " + Quote(next.name) + " overlap");
    }
  }
  return entries;
}

}  // namespace lfs::formats
