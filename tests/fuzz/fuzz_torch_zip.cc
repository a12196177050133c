// libFuzzer target: torch.save zip archives (restricted unpickler) and .npz.
#include <cstdint>

#include "store/formats/torch_zip.h"
#include "tests/fuzz/fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in = lfs::fuzz::AsView(data, size);
  lfs::formats::MemoryAccess f(in);
  auto pt = lfs::formats::ParseTorchZip(f);
  if (pt.ok()) lfs::fuzz::CheckParsed("torch_zip", *pt, size);
  auto npz = lfs::formats::ParseNpz(f);
  if (npz.ok()) lfs::fuzz::CheckParsed("npz", *npz, size);
  return 0;
}
