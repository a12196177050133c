// libFuzzer target: format detection and dispatch (ParseAny). The first byte
// picks the file name, since detection falls back on names when content is
// ambiguous.
#include <cstdint>

#include "store/formats/detect.h"
#include "tests/fuzz/fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const char* kNames[] = {
      "model.safetensors",
      "model.pt",
      "pytorch_model.bin",
      "x.npy",
      "x.npz",
      "model.safetensors.index.json",
      "config.json",
      "weights.pth",
      "MODEL.PT",
      "a.ckpt",
      "noext",
      "x.NPZ",
      "",
      "tokenizer.model",
      "x.tar",
      "model-00001-of-00002.safetensors",
  };
  if (size == 0) return 0;
  const char* name = kNames[data[0] % (sizeof kNames / sizeof kNames[0])];
  std::string_view in = lfs::fuzz::AsView(data + 1, size - 1);
  lfs::formats::MemoryAccess f(in);
  auto r = lfs::formats::ParseAny(name, f);
  if (r.ok()) lfs::fuzz::CheckParsed("detect", *r, in.size());
  return 0;
}
