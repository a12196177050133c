#include "store/formats/safetensors.h"

#include <algorithm>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <unordered_set>
#include <utility>

namespace lfs::formats {
namespace {

using nlohmann::json;

// Names are UTF-8: keep them readable in the log.
std::string Quote(std::string_view s) { return QuoteForLog(s, 80, /*keep_utf8=*/true); }

uint64_t LoadLE64(const std::string& b) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(b[i]);
  return v;
}

std::string StoreLE64(uint64_t v) {
  std::string b(8, '\0');
  for (int i = 0; i < 8; ++i) b[i] = static_cast<char>(v >> (8 * i));
  return b;
}

// Elements of a shape times the element size, or nullopt on overflow or a
// negative dimension.
std::optional<uint64_t> ShapeBytes(const std::vector<int64_t>& shape, size_t elem_size) {
  uint64_t n = elem_size;
  for (int64_t d : shape) {
    if (d < 0 || __builtin_mul_overflow(n, static_cast<uint64_t>(d), &n)) return std::nullopt;
  }
  return n;
}

struct HeaderTensor {
  std::string name;
  std::optional<DType> dtype;
  std::optional<std::vector<int64_t>> shape;
  std::optional<std::pair<uint64_t, uint64_t>> offsets;
};

// Streams the JSON header into tensor entries, enforcing the schema as it goes
// so that a hostile header never becomes a DOM (its memory would be a multiple
// of the header size) and every violation is reported at its first token.
// Duplicate keys are rejected: nlohmann (and other readers) would silently
// keep one of them, so two readers could disagree about the file.
class HeaderSax {
 public:
  explicit HeaderSax(const ParseLimits& lim) : lim_(lim) {}

  const std::string& error() const { return error_; }
  std::vector<HeaderTensor>& tensors() { return tensors_; }

  // The nlohmann SAX interface.
  bool null() {
    // The reference reader takes "__metadata__": null as no metadata.
    if (where_ == Where::kTop && top_value_is_metadata_) return true;
    return Scalar("null");
  }
  bool boolean(bool) { return Scalar("a boolean"); }
  bool number_integer(json::number_integer_t) { return Scalar("a negative number"); }
  bool number_float(json::number_float_t, const json::string_t&) {
    return Scalar("a non-integer number");
  }
  bool binary(json::binary_t&) { return Scalar("binary data"); }

  bool number_unsigned(json::number_unsigned_t v) {
    if (where_ == Where::kShape) {
      if (v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return Fail("shape of tensor " + Quote(cur_.name) + " has a dimension over 2^63");
      }
      if (cur_.shape->size() >= lim_.max_dims) {
        return Fail("tensor " + Quote(cur_.name) + " has more than " +
                    std::to_string(lim_.max_dims) + " dimensions");
      }
      cur_.shape->push_back(static_cast<int64_t>(v));
      return true;
    }
    if (where_ == Where::kOffsets) {
      if (offsets_seen_ == 2)
        return Fail("data_offsets of tensor " + Quote(cur_.name) + " has more than 2 entries");
      (offsets_seen_ == 0 ? cur_.offsets->first : cur_.offsets->second) = v;
      ++offsets_seen_;
      return true;
    }
    return Scalar("a number");
  }

  bool string(json::string_t& s) {
    if (where_ == Where::kMetadata) return true;
    if (where_ == Where::kTensor && field_ == Field::kDtype) {
      cur_.dtype = DTypeFromName(s);
      if (!cur_.dtype) return Fail("tensor " + Quote(cur_.name) + " has unknown dtype " + Quote(s));
      return true;
    }
    return Scalar("a string");
  }

  bool start_object(std::size_t) {
    switch (where_) {
      case Where::kStart: where_ = Where::kTop; return true;
      case Where::kTop:
        if (top_value_is_metadata_) {
          where_ = Where::kMetadata;
          keys_.clear();
          return true;
        }
        if (tensors_.size() >= lim_.max_tensors) {
          return Fail("more than " + std::to_string(lim_.max_tensors) + " tensors");
        }
        where_ = Where::kTensor;
        keys_.clear();
        return true;
      case Where::kTensor:
        if (field_ == Field::kOther) return Skip();
        return Scalar("an object");
      case Where::kSkip: ++skip_depth_; return true;
      default: return Scalar("an object");
    }
  }

  bool key(json::string_t& k) {
    switch (where_) {
      case Where::kTop:
        if (!top_keys_.insert(k).second) return Fail("duplicate tensor name " + Quote(k));
        top_value_is_metadata_ = k == "__metadata__";
        cur_ = HeaderTensor{};
        cur_.name = std::move(k);
        return true;
      case Where::kMetadata:
        if (!keys_.insert(k).second) return Fail("duplicate __metadata__ key " + Quote(k));
        return true;
      case Where::kTensor:
        if (!keys_.insert(k).second) {
          return Fail("tensor " + Quote(cur_.name) + " has duplicate field " + Quote(k));
        }
        field_ = k == "dtype"          ? Field::kDtype
                 : k == "shape"        ? Field::kShape
                 : k == "data_offsets" ? Field::kOffsets
                                       : Field::kOther;
        return true;
      default:  // kSkip: keys of ignored values do not matter
        return true;
    }
  }

  bool end_object() {
    switch (where_) {
      case Where::kTop: where_ = Where::kDone; return true;
      case Where::kMetadata: where_ = Where::kTop; return true;
      case Where::kTensor: {
        const char* missing = !cur_.dtype     ? "dtype"
                              : !cur_.shape   ? "shape"
                              : !cur_.offsets ? "data_offsets"
                                              : nullptr;
        if (missing) return Fail("tensor " + Quote(cur_.name) + " has no " + missing);
        tensors_.push_back(std::move(cur_));
        where_ = Where::kTop;
        return true;
      }
      default:  // kSkip
        return EndSkipped();
    }
  }

  bool start_array(std::size_t) {
    if (where_ == Where::kSkip) {
      ++skip_depth_;
      return true;
    }
    if (where_ == Where::kTensor) {
      switch (field_) {
        case Field::kShape:
          cur_.shape.emplace();
          where_ = Where::kShape;
          return true;
        case Field::kOffsets:
          cur_.offsets.emplace();
          offsets_seen_ = 0;
          where_ = Where::kOffsets;
          return true;
        case Field::kOther: return Skip();
        case Field::kDtype: break;
      }
    }
    return Scalar("an array");
  }

  bool end_array() {
    if (where_ == Where::kShape) {
      where_ = Where::kTensor;
      return true;
    }
    if (where_ == Where::kOffsets) {
      if (offsets_seen_ != 2) {
        return Fail("data_offsets of tensor " + Quote(cur_.name) + " needs 2 entries");
      }
      where_ = Where::kTensor;
      return true;
    }
    return EndSkipped();
  }

  bool parse_error(std::size_t, const std::string&, const json::exception& ex) {
    return Fail(std::string("header is not valid JSON: ") + ex.what());
  }

 private:
  enum class Where { kStart, kTop, kMetadata, kTensor, kShape, kOffsets, kSkip, kDone };
  enum class Field { kDtype, kShape, kOffsets, kOther };

  bool Fail(std::string msg) {
    error_ = std::move(msg);
    return false;
  }

  // A scalar (or a container where the schema wants something else): only
  // fields the schema does not know may hold arbitrary values.
  bool Scalar(const char* what) {
    switch (where_) {
      case Where::kStart: return Fail("header is not a JSON object");
      case Where::kTop:
        if (top_value_is_metadata_) return Fail(std::string("__metadata__ is ") + what);
        return Fail("tensor " + Quote(cur_.name) + " is " + what + ", not an object");
      case Where::kMetadata:
        return Fail("__metadata__ values must be strings, found " + std::string(what));
      case Where::kTensor:
        switch (field_) {
          case Field::kOther: return true;
          case Field::kDtype: return Fail("dtype of tensor " + Quote(cur_.name) + " is " + what);
          case Field::kShape: return Fail("shape of tensor " + Quote(cur_.name) + " is " + what);
          case Field::kOffsets:
            return Fail("data_offsets of tensor " + Quote(cur_.name) + " is " + what);
        }
        return false;
      case Where::kShape: return Fail("shape of tensor " + Quote(cur_.name) + " holds " + what);
      case Where::kOffsets:
        return Fail("data_offsets of tensor " + Quote(cur_.name) + " holds " + what);
      case Where::kSkip: return true;
      case Where::kDone: break;
    }
    return Fail("unexpected JSON after the header object");
  }

  // Enters an unknown field's object or array, which is ignored.
  bool Skip() {
    where_ = Where::kSkip;
    skip_depth_ = 1;
    return true;
  }

  bool EndSkipped() {
    if (--skip_depth_ == 0) where_ = Where::kTensor;
    return true;
  }

  const ParseLimits& lim_;
  Where where_ = Where::kStart;
  Field field_ = Field::kOther;
  bool top_value_is_metadata_ = false;
  std::unordered_set<std::string> top_keys_;
  std::set<std::string> keys_;  // of the current metadata or tensor object
  HeaderTensor cur_;
  int offsets_seen_ = 0;
  uint64_t skip_depth_ = 0;
  std::vector<HeaderTensor> tensors_;
  std::string error_;
};

// JSON text of one string, or nullopt when it is not valid UTF-8.
std::optional<std::string> JsonString(const std::string& s) {
  try {
    return json(s).dump();
  } catch (const json::type_error&) {
    return std::nullopt;
  }
}

}  // namespace

Result<ParsedFile> ParseSafetensors(const RandomAccess& f, const ParseLimits& lim) {
  const uint64_t size = f.Size();
  if (size < 8) {
    return Status::Corruption("safetensors: file of " + std::to_string(size) +
                              " bytes is too short for the header length");
  }
  std::string buf;
  LFS_RETURN_IF_ERROR(f.ReadAt(0, 8, &buf));
  const uint64_t header_len = LoadLE64(buf);
  if (header_len > lim.max_header_bytes) {
    return Status::Corruption("safetensors: header length " + std::to_string(header_len) +
                              " exceeds the limit of " + std::to_string(lim.max_header_bytes));
  }
  if (header_len > size - 8) {
    return Status::Corruption("safetensors: header length " + std::to_string(header_len) +
                              " runs past the end of the " + std::to_string(size) + "-byte file");
  }
  LFS_RETURN_IF_ERROR(f.ReadAt(8, header_len, &buf));

  HeaderSax sax(lim);
  if (!json::sax_parse(buf, &sax)) return Status::Corruption("safetensors: " + sax.error());

  const uint64_t data_start = 8 + header_len;
  const uint64_t data_size = size - data_start;
  std::vector<HeaderTensor>& entries = sax.tensors();
  for (const HeaderTensor& t : entries) {
    const auto [begin, end] = *t.offsets;
    if (begin > end) {
      return Status::Corruption("safetensors: tensor " + Quote(t.name) + " has data_offsets [" +
                                std::to_string(begin) + ", " + std::to_string(end) +
                                "] that end before they begin");
    }
    if (end > data_size) {
      return Status::Corruption("safetensors: tensor " + Quote(t.name) + " ends at data offset " +
                                std::to_string(end) + ", past the " + std::to_string(data_size) +
                                " bytes of data");
    }
    const std::optional<uint64_t> nbytes = ShapeBytes(*t.shape, DTypeSize(*t.dtype));
    if (!nbytes) {
      return Status::Corruption("safetensors: size of tensor " + Quote(t.name) +
                                " overflows 64 bits");
    }
    if (*nbytes != end - begin) {
      return Status::Corruption("safetensors: tensor " + Quote(t.name) + " has " +
                                std::to_string(end - begin) + " bytes of data but its dtype and " +
                                "shape need " + std::to_string(*nbytes));
    }
  }
  // Ranges are reported in file order; tensors follow them one to one.
  std::sort(entries.begin(), entries.end(),
            [](const HeaderTensor& a, const HeaderTensor& b) { return *a.offsets < *b.offsets; });

  ParsedFile out;
  out.format = Format::kSafetensors;
  out.ranges.reserve(entries.size());
  out.tensors.reserve(entries.size());
  uint64_t prev_end = 0;
  for (size_t i = 0; i < entries.size(); ++i) {
    HeaderTensor& t = entries[i];
    const auto [begin, end] = *t.offsets;
    // Sorted by (begin, end), so an empty tensor sitting inside another's
    // data is caught here too.
    if (i > 0 && begin < prev_end) {
      return Status::Corruption("safetensors: data of tensor " + Quote(t.name) +
                                " overlaps tensor " + Quote(out.ranges.back().key));
    }
    prev_end = end;
    out.ranges.push_back({data_start + begin, end - begin, *t.dtype, t.name});
    TensorSpan span;
    span.name = std::move(t.name);
    span.dtype = *t.dtype;
    span.shape = std::move(*t.shape);
    span.offset = data_start + begin;
    span.nbytes = end - begin;
    out.tensors.push_back(std::move(span));
  }
  return out;
}

Result<ViewLayout> LayoutSafetensors(const std::vector<SafetensorsEntry>& entries,
                                     const std::map<std::string, std::string>& metadata) {
  // Written by hand rather than through nlohmann's ordered_json, whose
  // insertion is linear per key; the format matches the reference writers
  // (compact JSON, fields dtype/shape/data_offsets in that order).
  std::string header = "{";
  if (!metadata.empty()) {
    header += "\"__metadata__\":{";
    bool first = true;
    for (const auto& [k, v] : metadata) {
      std::optional<std::string> jk = JsonString(k), jv = JsonString(v);
      if (!jk || !jv) return Status::InvalidArgument("safetensors: metadata is not valid UTF-8");
      if (!first) header += ',';
      first = false;
      header += *jk + ":" + *jv;
    }
    header += "}";
  }
  std::unordered_set<std::string_view> names;
  uint64_t offset = 0;
  for (const SafetensorsEntry& e : entries) {
    if (e.name == "__metadata__" || !names.insert(e.name).second) {
      return Status::InvalidArgument("safetensors: tensor name " + Quote(e.name) +
                                     " is reserved or repeated");
    }
    const std::optional<DType> st_dtype = DTypeFromName(DTypeName(e.dtype));
    if (!st_dtype || *st_dtype != e.dtype) {
      return Status::Unsupported("safetensors: no safetensors dtype for " +
                                 std::string(DTypeName(e.dtype)) + " tensor " + Quote(e.name));
    }
    const std::optional<uint64_t> nbytes = ShapeBytes(e.shape, DTypeSize(e.dtype));
    if (!nbytes || *nbytes != e.nbytes) {
      return Status::InvalidArgument("safetensors: tensor " + Quote(e.name) + " has " +
                                     std::to_string(e.nbytes) +
                                     " bytes, which does not match its dtype and shape");
    }
    const std::optional<std::string> jname = JsonString(e.name);
    if (!jname) {
      return Status::InvalidArgument("safetensors: tensor name " + Quote(e.name) +
                                     " is not valid UTF-8");
    }
    uint64_t end;
    if (__builtin_add_overflow(offset, e.nbytes, &end)) {
      return Status::InvalidArgument("safetensors: total tensor size overflows 64 bits");
    }
    if (header.size() > 1) header += ',';
    header += *jname + ":{\"dtype\":\"" + DTypeName(e.dtype) + "\",\"shape\":[";
    for (size_t i = 0; i < e.shape.size(); ++i) {
      if (i > 0) header += ',';
      header += std::to_string(e.shape[i]);
    }
    header += "],\"data_offsets\":[" + std::to_string(offset) + "," + std::to_string(end) + "]}";
    offset = end;
  }
  header += "}";
  // The spec pads the header with spaces so that the data starts 8-aligned.
  header.append((8 - header.size() % 8) % 8, ' ');

  ViewLayout layout;
  ViewSegment head;
  head.literal = StoreLE64(header.size()) + header;
  head.length = head.literal.size();
  layout.size = head.length;
  layout.segments.push_back(std::move(head));
  for (size_t i = 0; i < entries.size(); ++i) {
    if (entries[i].nbytes == 0) continue;  // an empty tensor contributes no segment
    ViewSegment seg;
    seg.length = entries[i].nbytes;
    seg.tensor = static_cast<int32_t>(i);
    layout.segments.push_back(std::move(seg));
  }
  if (__builtin_add_overflow(layout.size, offset, &layout.size)) {
    return Status::InvalidArgument("safetensors: file size overflows 64 bits");
  }
  return layout;
}

Result<std::map<std::string, std::string>> ParseSafetensorsIndex(std::string_view text) {
  // Rejects duplicate keys anywhere (see HeaderSax); the callback keeps every
  // value, so object_start/object_end events always pair up.
  std::vector<std::set<std::string>> open_objects;
  std::string duplicate;
  const json::parser_callback_t check = [&](int, json::parse_event_t ev, json& parsed) {
    switch (ev) {
      case json::parse_event_t::object_start: open_objects.emplace_back(); break;
      case json::parse_event_t::object_end: open_objects.pop_back(); break;
      case json::parse_event_t::key:
        if (!open_objects.back().insert(parsed.get<std::string>()).second && duplicate.empty()) {
          duplicate = parsed.get<std::string>();
        }
        break;
      default: break;
    }
    return true;
  };
  json doc;
  try {
    doc = json::parse(text, check);
  } catch (const json::exception& e) {  // parse_error, and out_of_range for 1e999
    return Status::Corruption(std::string("safetensors index: not valid JSON: ") + e.what());
  }
  if (!duplicate.empty()) {
    return Status::Corruption("safetensors index: duplicate key " + Quote(duplicate));
  }
  if (!doc.is_object()) return Status::Corruption("safetensors index: not a JSON object");
  const auto wm = doc.find("weight_map");
  if (wm == doc.end() || !wm->is_object()) {
    return Status::Corruption("safetensors index: no weight_map object");
  }
  std::map<std::string, std::string> out;
  for (const auto& [tensor, shard] : wm->items()) {
    if (!shard.is_string()) {
      return Status::Corruption("safetensors index: shard of tensor " + Quote(tensor) +
                                " is not a string");
    }
    const std::string& file = shard.get_ref<const std::string&>();
    if (file.empty() || file == "." || file == ".." ||
        file.find_first_of(std::string_view("/\0", 2)) != std::string::npos) {
      return Status::Corruption("safetensors index: shard name " + Quote(file) + " of tensor " +
                                Quote(tensor) + " is not a plain file name");
    }
    out.emplace(tensor, file);
  }
  return out;
}

}  // namespace lfs::formats
