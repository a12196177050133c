#include "lineage/diff.h"

#include <cmath>
#include <cstring>

namespace lfs::lineage {

const char* TensorDiffKindName(TensorDiff::Kind k) {
  switch (k) {
    case TensorDiff::Kind::kAdded: return "added";
    case TensorDiff::Kind::kRemoved: return "removed";
    case TensorDiff::Kind::kIdentical: return "identical";
    case TensorDiff::Kind::kChanged: return "changed";
    case TensorDiff::Kind::kShapeChanged: return "shape-changed";
  }
  return "?";
}

const char* FileDiffKindName(FileDiff::Kind k) {
  switch (k) {
    case FileDiff::Kind::kAdded: return "added";
    case FileDiff::Kind::kRemoved: return "removed";
    case FileDiff::Kind::kIdentical: return "identical";
    case FileDiff::Kind::kChanged: return "changed";
  }
  return "?";
}

namespace {
float HalfToFloat(uint16_t h) {
  uint32_t sign = (h >> 15) & 1, exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
  float v;
  if (exp == 0) {
    v = std::ldexp(static_cast<float>(mant), -24);
  } else if (exp == 31) {
    v = mant ? NAN : INFINITY;
  } else {
    v = std::ldexp(static_cast<float>(mant | 0x400), static_cast<int>(exp) - 25);
  }
  return sign ? -v : v;
}
template <typename T>
T Load(const char* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
}  // namespace

double ElementAsDouble(formats::DType dt, const char* p) {
  using formats::DType;
  switch (dt) {
    case DType::kF64: return Load<double>(p);
    case DType::kF32: return Load<float>(p);
    case DType::kF16: return HalfToFloat(Load<uint16_t>(p));
    case DType::kBF16: {
      uint32_t bits = static_cast<uint32_t>(Load<uint16_t>(p)) << 16;
      return Load<float>(reinterpret_cast<const char*>(&bits));
    }
    case DType::kI64: return static_cast<double>(Load<int64_t>(p));
    case DType::kI32: return Load<int32_t>(p);
    case DType::kI16: return Load<int16_t>(p);
    case DType::kI8: return Load<int8_t>(p);
    case DType::kU8: return Load<uint8_t>(p);
    case DType::kBool: return Load<uint8_t>(p) ? 1 : 0;
    case DType::kU16: return Load<uint16_t>(p);
    case DType::kU32: return Load<uint32_t>(p);
    case DType::kU64: return static_cast<double>(Load<uint64_t>(p));
    default: return NAN;
  }
}

namespace {
Status Stats(Store& store, const TensorRef& a, const TensorRef& b, TensorDiff* d) {
  size_t es = formats::DTypeSize(a.dtype);
  if (es == 0 || std::isnan(ElementAsDouble(a.dtype, "\0\0\0\0\0\0\0\0")) || !a.contiguous ||
      !b.contiguous) {
    return Status::OK();
  }
  LFS_ASSIGN_OR_RETURN(TensorObject ta, LoadTensor(store, a.object));
  LFS_ASSIGN_OR_RETURN(TensorObject tb, LoadTensor(store, b.object));
  constexpr size_t kPiece = 1 << 20;
  std::string pa(kPiece, '\0'), pb(kPiece, '\0');
  double max_abs = 0, sum_d2 = 0, sum_a2 = 0;
  uint64_t changed = 0, n = 0;
  for (uint64_t off = 0; off < a.nbytes; off += kPiece) {
    size_t len = static_cast<size_t>(std::min<uint64_t>(kPiece, a.nbytes - off));
    len -= len % es;
    LFS_ASSIGN_OR_RETURN(
        size_t ga, ObjectReader::ReadTensor(store, ta, a.object_offset + off, len, pa.data()));
    LFS_ASSIGN_OR_RETURN(
        size_t gb, ObjectReader::ReadTensor(store, tb, b.object_offset + off, len, pb.data()));
    if (ga != len || gb != len) return Status::Corruption("tensor shorter than its shape");
    for (size_t i = 0; i < len; i += es) {
      double x = ElementAsDouble(a.dtype, pa.data() + i),
             y = ElementAsDouble(b.dtype, pb.data() + i);
      double dd = y - x;
      if (std::memcmp(pa.data() + i, pb.data() + i, es) != 0) changed++;
      if (std::isfinite(dd)) {
        max_abs = std::max(max_abs, std::abs(dd));
        sum_d2 += dd * dd;
      }
      if (std::isfinite(x)) sum_a2 += x * x;
      n++;
    }
  }
  d->has_stats = true;
  d->max_abs_delta = max_abs;
  d->rel_l2 = sum_a2 > 0 ? std::sqrt(sum_d2 / sum_a2) : (sum_d2 > 0 ? INFINITY : 0);
  d->frac_changed = n ? static_cast<double>(changed) / static_cast<double>(n) : 0;
  return Status::OK();
}
}  // namespace

Result<DiffResult> Diff(Lineage& lin, const Version& a, const Version& b, bool stats) {
  DiffResult out;
  for (const auto& [name, fa] : a.files) {
    auto it = b.files.find(name);
    if (it == b.files.end()) {
      out.files.push_back({name, FileDiff::Kind::kRemoved, fa.size, 0});
    } else {
      out.files.push_back(
          {name,
           fa.digest == it->second.digest ? FileDiff::Kind::kIdentical : FileDiff::Kind::kChanged,
           fa.size, it->second.size});
    }
  }
  for (const auto& [name, fb] : b.files) {
    if (!a.files.count(name)) out.files.push_back({name, FileDiff::Kind::kAdded, 0, fb.size});
  }
  LFS_ASSIGN_OR_RETURN(auto ia, lin.TensorIndex(a));
  LFS_ASSIGN_OR_RETURN(auto ib, lin.TensorIndex(b));
  for (const auto& [name, ta] : ia) {
    TensorDiff d;
    d.name = name;
    d.dtype_a = ta.dtype;
    d.shape_a = ta.shape;
    auto it = ib.find(name);
    if (it == ib.end()) {
      d.kind = TensorDiff::Kind::kRemoved;
    } else {
      const TensorRef& tb = it->second;
      d.dtype_b = tb.dtype;
      d.shape_b = tb.shape;
      if (ta.dtype != tb.dtype || ta.shape != tb.shape) {
        d.kind = TensorDiff::Kind::kShapeChanged;
      } else if (ta.object == tb.object && ta.object_offset == tb.object_offset &&
                 ta.nbytes == tb.nbytes) {
        d.kind = TensorDiff::Kind::kIdentical;
      } else {
        d.kind = TensorDiff::Kind::kChanged;
        if (stats) LFS_RETURN_IF_ERROR(Stats(lin.store(), ta, tb, &d));
      }
    }
    out.tensors.push_back(std::move(d));
  }
  for (const auto& [name, tb] : ib) {
    if (ia.count(name)) continue;
    TensorDiff d;
    d.name = name;
    d.kind = TensorDiff::Kind::kAdded;
    d.dtype_b = tb.dtype;
    d.shape_b = tb.shape;
    out.tensors.push_back(std::move(d));
  }
  return out;
}

}  // namespace lfs::lineage
