#include "store/formats/npy.h"

#include <limits>
#include <string_view>

namespace lfs::formats {
namespace {

constexpr std::string_view kMagic("\x93NUMPY", 6);

std::string Quote(std::string_view s) { return QuoteForLog(s, 40); }

// Strict reader of the header dict numpy writes, a Python literal such as
//   {'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }
// numpy itself evaluates it with ast.literal_eval; this accepts the subset a
// numpy header can hold and nothing else.
class HeaderDictParser {
 public:
  // Python 2 numpy wrote shapes like (3L, 4L) into format 1.0/2.0 files;
  // numpy still accepts them there.
  HeaderDictParser(std::string_view text, bool allow_long_suffix)
      : s_(text), allow_long_suffix_(allow_long_suffix) {}

  std::string descr;
  bool fortran_order = false;
  std::vector<int64_t> shape;

  Status Parse(const ParseLimits& lim) {
    bool have_descr = false, have_order = false, have_shape = false;
    LFS_RETURN_IF_ERROR(Expect('{'));
    while (true) {
      SkipSpace();
      if (Peek() == '}') break;
      LFS_ASSIGN_OR_RETURN(std::string key, String());
      LFS_RETURN_IF_ERROR(Expect(':'));
      SkipSpace();
      if (key == "descr" && !have_descr) {
        // A list here is a structured dtype (record fields).
        if (Peek() == '[') return Status::Unsupported("npy: structured dtypes are not supported");
        LFS_ASSIGN_OR_RETURN(descr, String());
        have_descr = true;
      } else if (key == "fortran_order" && !have_order) {
        LFS_ASSIGN_OR_RETURN(fortran_order, Bool());
        have_order = true;
      } else if (key == "shape" && !have_shape) {
        LFS_ASSIGN_OR_RETURN(shape, Shape(lim));
        have_shape = true;
      } else {
        return Status::Corruption("npy: unexpected or repeated header key " + Quote(key));
      }
      SkipSpace();
      if (Peek() != ',') break;
      ++pos_;
    }
    LFS_RETURN_IF_ERROR(Expect('}'));
    SkipSpace();
    if (pos_ != s_.size()) return Status::Corruption("npy: trailing characters after header dict");
    if (!have_descr || !have_order || !have_shape) {
      return Status::Corruption("npy: header lacks one of 'descr', 'fortran_order', 'shape'");
    }
    return Status::OK();
  }

 private:
  char Peek() const { return pos_ < s_.size() ? s_[pos_] : '\0'; }

  void SkipSpace() {
    while (pos_ < s_.size() &&
           (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r')) {
      ++pos_;
    }
  }

  Status Expect(char c) {
    SkipSpace();
    if (Peek() != c) {
      return Status::Corruption(std::string("npy: header dict: expected '") + c + "' at offset " +
                                std::to_string(pos_));
    }
    ++pos_;
    return Status::OK();
  }

  // A quoted string without escapes: numpy's keys and dtype strings need none.
  Result<std::string> String() {
    SkipSpace();
    const char quote = Peek();
    if (quote != '\'' && quote != '"') {
      return Status::Corruption("npy: header dict: expected a string at offset " +
                                std::to_string(pos_));
    }
    const size_t start = ++pos_;
    while (pos_ < s_.size() && s_[pos_] != quote) {
      if (s_[pos_] == '\\' || s_[pos_] == '\n') {
        return Status::Corruption("npy: header dict: escapes or newlines in a string");
      }
      ++pos_;
    }
    if (pos_ == s_.size()) return Status::Corruption("npy: header dict: unterminated string");
    return std::string(s_.substr(start, pos_++ - start));
  }

  Result<bool> Bool() {
    for (const auto& [word, value] : {std::pair{"True", true}, std::pair{"False", false}}) {
      if (s_.substr(pos_).starts_with(word)) {
        pos_ += std::string_view(word).size();
        return value;
      }
    }
    return Status::Corruption("npy: header dict: fortran_order is not True or False");
  }

  // A Python tuple of non-negative ints: (), (n,), (n, m), (n, m,).
  Result<std::vector<int64_t>> Shape(const ParseLimits& lim) {
    std::vector<int64_t> dims;
    LFS_RETURN_IF_ERROR(Expect('('));
    bool comma_after_last = false;
    while (true) {
      SkipSpace();
      if (Peek() == ')') break;
      if (dims.size() >= lim.max_dims) {
        return Status::Corruption("npy: shape has more than " + std::to_string(lim.max_dims) +
                                  " dimensions");
      }
      LFS_ASSIGN_OR_RETURN(int64_t d, Int());
      dims.push_back(d);
      SkipSpace();
      comma_after_last = Peek() == ',';
      if (!comma_after_last) break;
      ++pos_;
    }
    LFS_RETURN_IF_ERROR(Expect(')'));
    // "(3)" is the int 3 in Python, not a tuple.
    if (dims.size() == 1 && !comma_after_last) {
      return Status::Corruption("npy: shape is a parenthesised int, not a tuple");
    }
    return dims;
  }

  Result<int64_t> Int() {
    const size_t start = pos_;
    uint64_t v = 0;
    while (pos_ < s_.size() && s_[pos_] >= '0' && s_[pos_] <= '9') {
      if (__builtin_mul_overflow(v, 10u, &v) ||
          __builtin_add_overflow(v, static_cast<uint64_t>(s_[pos_] - '0'), &v) ||
          v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return Status::Corruption("npy: shape dimension overflows 64 bits");
      }
      ++pos_;
    }
    if (pos_ == start) {
      return Status::Corruption("npy: shape must be a tuple of non-negative integers");
    }
    // Python 3 has no leading-zero int literals ("07" is a syntax error).
    if (pos_ - start > 1 && s_[start] == '0') {
      return Status::Corruption("npy: shape dimension with a leading zero");
    }
    if (allow_long_suffix_ && Peek() == 'L') ++pos_;
    return static_cast<int64_t>(v);
  }

  std::string_view s_;
  bool allow_long_suffix_;
  size_t pos_ = 0;
};

}  // namespace

Result<ParsedFile> ParseNpy(const RandomAccess& f, const ParseLimits& lim) {
  const uint64_t size = f.Size();
  std::string buf;
  if (size < kMagic.size() + 2) {
    return Status::Corruption("npy: file of " + std::to_string(size) + " bytes is too short");
  }
  LFS_RETURN_IF_ERROR(f.ReadAt(0, kMagic.size() + 2, &buf));
  if (std::string_view(buf).substr(0, kMagic.size()) != kMagic) {
    return Status::Corruption("npy: bad magic");
  }
  const int major = static_cast<unsigned char>(buf[6]);
  const int minor = static_cast<unsigned char>(buf[7]);
  size_t len_bytes;
  if (major == 1 && minor == 0) {
    len_bytes = 2;
  } else if ((major == 2 || major == 3) && minor == 0) {
    len_bytes = 4;
  } else {
    return Status::Unsupported("npy: format version " + std::to_string(major) + "." +
                               std::to_string(minor) + " is not supported");
  }
  const uint64_t prefix = kMagic.size() + 2 + len_bytes;
  if (size < prefix) return Status::Corruption("npy: truncated header length");
  LFS_RETURN_IF_ERROR(f.ReadAt(kMagic.size() + 2, len_bytes, &buf));
  uint64_t header_len = 0;
  for (size_t i = len_bytes; i-- > 0;) {
    header_len = (header_len << 8) | static_cast<unsigned char>(buf[i]);
  }
  if (header_len > lim.max_header_bytes) {
    return Status::Corruption("npy: header length " + std::to_string(header_len) +
                              " exceeds the limit of " + std::to_string(lim.max_header_bytes));
  }
  if (header_len > size - prefix) {
    return Status::Corruption("npy: header of " + std::to_string(header_len) +
                              " bytes runs past the end of the " + std::to_string(size) +
                              "-byte file");
  }
  LFS_RETURN_IF_ERROR(f.ReadAt(prefix, header_len, &buf));

  HeaderDictParser dict(buf, /*allow_long_suffix=*/major <= 2);
  LFS_RETURN_IF_ERROR(dict.Parse(lim));
  const std::string_view descr = dict.descr;
  if (descr.size() >= 2 && descr.substr(1) == "O") {
    return Status::Unsupported("npy: object arrays hold pickled Python objects, not tensor data");
  }
  const std::optional<DType> dtype = DTypeFromNumpyDescr(descr);
  if (!dtype) return Status::Unsupported("npy: dtype " + Quote(descr) + " is not supported");

  uint64_t nbytes = DTypeSize(*dtype);
  for (int64_t d : dict.shape) {
    if (__builtin_mul_overflow(nbytes, static_cast<uint64_t>(d), &nbytes)) {
      return Status::Corruption("npy: array size overflows 64 bits");
    }
  }
  const uint64_t data_off = prefix + header_len;
  const uint64_t data_size = size - data_off;
  if (data_size < nbytes) {
    return Status::Corruption("npy: truncated: " + std::to_string(data_size) +
                              " bytes of data, the shape needs " + std::to_string(nbytes));
  }
  if (data_size > nbytes) {
    return Status::Corruption("npy: " + std::to_string(data_size - nbytes) +
                              " bytes of trailing data after the array");
  }

  TensorSpan t;
  t.dtype = *dtype;
  t.shape = dict.shape;
  t.offset = data_off;
  t.nbytes = nbytes;
  if (dict.fortran_order) {
    // Column-major element strides: the bytes are stored as they are, and the
    // strides tell readers that they are not in C order.
    int64_t step = 1;
    for (int64_t d : t.shape) {
      t.stride.push_back(step);
      step *= d;
    }
  }
  ParsedFile out;
  out.format = Format::kNpy;
  out.ranges.push_back({data_off, nbytes, *dtype, ""});
  out.tensors.push_back(std::move(t));
  return out;
}

std::optional<std::string> NpyHeader(DType dtype, const std::vector<int64_t>& shape) {
  const std::optional<std::string> descr = DTypeNumpyDescr(dtype);
  if (!descr) return std::nullopt;
  // Byte-identical to numpy's own writer (numpy/lib/format.py,
  // _write_array_header), so a view equals what np.save would produce.
  std::string dict = "{'descr': '" + *descr + "', 'fortran_order': False, 'shape': (";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] < 0) return std::nullopt;
    if (i > 0) dict += ", ";
    dict += std::to_string(shape[i]);
  }
  dict += shape.size() == 1 ? ",), }" : "), }";
  // numpy leaves room to grow the first axis in place (GROWTH_AXIS_MAX_DIGITS).
  if (!shape.empty()) dict.append(21 - std::to_string(shape[0]).size(), ' ');

  // Pad with spaces and a final '\n' so the data starts 64-byte aligned; like
  // numpy, a header already aligned still gets 64 bytes of padding.
  const uint64_t hlen = dict.size() + 1;
  uint64_t len_bytes = 2;
  uint64_t padlen = 64 - (kMagic.size() + 2 + len_bytes + hlen) % 64;
  if (hlen + padlen > 0xffff) {
    len_bytes = 4;
    padlen = 64 - (kMagic.size() + 2 + len_bytes + hlen) % 64;
  }
  const uint64_t total = hlen + padlen;
  std::string out(kMagic);
  out += static_cast<char>(len_bytes == 2 ? 1 : 2);
  out += '\0';
  for (uint64_t i = 0; i < len_bytes; ++i) out += static_cast<char>(total >> (8 * i));
  out += dict;
  out.append(padlen, ' ');
  out += '\n';
  return out;
}

}  // namespace lfs::formats
