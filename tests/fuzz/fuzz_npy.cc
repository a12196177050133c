// libFuzzer target: .npy parser, plus a writer/parser cross-check: the header
// NpyHeader writes for a parsed (dtype, shape) must parse back to the same.
#include <cstdint>
#include <string>

#include "store/formats/npy.h"
#include "tests/fuzz/fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in = lfs::fuzz::AsView(data, size);
  lfs::formats::MemoryAccess f(in);
  auto r = lfs::formats::ParseNpy(f);
  if (!r.ok()) return 0;
  lfs::fuzz::CheckParsed("npy", *r, size);
  if (r->tensors.size() != 1) lfs::fuzz::Fail("npy", "expected one tensor", r->tensors.size());
  const auto& t = r->tensors[0];
  auto hdr = lfs::formats::NpyHeader(t.dtype, t.shape);
  if (!hdr || t.nbytes > (1u << 20)) return 0;
  std::string file = *hdr + std::string(t.nbytes, '\0');
  lfs::formats::MemoryAccess g(file);
  auto back = lfs::formats::ParseNpy(g);
  if (!back.ok()) {
    std::fprintf(stderr, "npy: NpyHeader output rejected: %s\n", back.status().ToString().c_str());
    lfs::fuzz::Fail("npy", "NpyHeader output does not parse");
  }
  const auto& u = back->tensors.at(0);
  if (u.dtype != t.dtype || u.shape != t.shape || u.nbytes != t.nbytes || u.offset != hdr->size()) {
    lfs::fuzz::Fail("npy", "NpyHeader round trip changed the tensor", u.nbytes, t.nbytes);
  }
  return 0;
}
