// libFuzzer target: LMDB record decoders (store/store.h, store/objects.h,
// lineage/lineage.h). Whatever a decoder accepts must re-encode to a value
// that decodes again and re-encodes identically (Encode is a fixed point).
#include <cstdint>
#include <string>

#include "lineage/lineage.h"
#include "store/objects.h"
#include "store/store.h"
#include "tests/fuzz/fuzz_common.h"

namespace {

template <typename T, typename Dec, typename Enc>
void RoundTrip(const char* what, std::string_view in, Dec dec, Enc enc) {
  lfs::Result<T> r = dec(in);
  if (!r.ok()) return;
  std::string e1 = enc(*r);
  lfs::Result<T> r2 = dec(e1);
  if (!r2.ok()) {
    std::fprintf(stderr, "%s: re-encoded value rejected: %s\n", what,
                 r2.status().ToString().c_str());
    lfs::fuzz::Fail(what, "Decode(Encode(Decode(x))) failed");
  }
  std::string e2 = enc(*r2);
  if (e1 != e2)
    lfs::fuzz::Fail(what, "Encode(Decode(Encode(v))) != Encode(v)", e1.size(), e2.size());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  std::string_view in = lfs::fuzz::AsView(data + 1, size - 1);
  switch (data[0] % 6) {
    case 0:
      RoundTrip<lfs::ChunkEntry>(
          "ChunkEntry", in, [](std::string_view v) { return lfs::ChunkEntry::Decode(v); },
          [](const lfs::ChunkEntry& e) { return e.Encode(); });
      break;
    case 1:
      RoundTrip<lfs::PackEntry>(
          "PackEntry", in, [](std::string_view v) { return lfs::PackEntry::Decode(v); },
          [](const lfs::PackEntry& e) { return e.Encode(); });
      break;
    case 2:
      RoundTrip<lfs::TensorObject>(
          "TensorObject", in, [](std::string_view v) { return lfs::TensorObject::Decode(v); },
          [](const lfs::TensorObject& e) { return e.Encode(); });
      break;
    case 3: {
      // FORMAT.md: "Extents concatenate to exactly `size` bytes" (no wrap-around).
      auto f = lfs::FileRecipe::Decode(in);
      if (f.ok()) {
        uint64_t total = 0;
        for (const auto& e : f->extents) {
          if (__builtin_add_overflow(total, e.length, &total)) {
            lfs::fuzz::Fail("FileRecipe", "accepted extents whose lengths overflow u64", e.length);
          }
        }
        if (total != f->size)
          lfs::fuzz::Fail("FileRecipe", "extents do not add up", total, f->size);
      }
      RoundTrip<lfs::FileRecipe>(
          "FileRecipe", in, [](std::string_view v) { return lfs::FileRecipe::Decode(v); },
          [](const lfs::FileRecipe& e) { return e.Encode(); });
      break;
    }
    case 4:
      RoundTrip<lfs::lineage::Version>(
          "Version", in, [](std::string_view v) { return lfs::lineage::DecodeVersion(v); },
          [](const lfs::lineage::Version& e) { return lfs::lineage::EncodeVersion(e); });
      break;
    case 5:
      RoundTrip<lfs::lineage::Model>(
          "Model", in, [](std::string_view v) { return lfs::lineage::DecodeModel(v); },
          [](const lfs::lineage::Model& e) { return lfs::lineage::EncodeModel(e); });
      break;
  }
  return 0;
}
