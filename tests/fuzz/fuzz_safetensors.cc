// libFuzzer target: safetensors header parser (and the sharded index parser).
#include <cstdint>

#include "store/formats/safetensors.h"
#include "tests/fuzz/fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in = lfs::fuzz::AsView(data, size);
  lfs::formats::MemoryAccess f(in);
  auto r = lfs::formats::ParseSafetensors(f);
  if (r.ok()) {
    lfs::fuzz::CheckParsed("safetensors", *r, size);
    if (r->format != lfs::formats::Format::kSafetensors) lfs::fuzz::Fail("safetensors", "format");
  }
  // The same bytes as a model.safetensors.index.json.
  (void)lfs::formats::ParseSafetensorsIndex(in);
  return 0;
}
