// PyTorch torch.save (zip) checkpoints and numpy .npz archives.
//
// Reading uses a restricted unpickler (like torch.load(weights_only=True)):
// it understands the opcodes and globals that torch.save emits for (nested)
// dicts/lists/tuples of tensors and primitives, and refuses everything else,
// so a hostile pickle can neither run code nor exhaust memory.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "store/formats/format.h"

namespace lfs::formats {

// Ranges = storage records (archive/data/N), tensors = every tensor reachable
// in the pickle, named by their path in nested containers ("encoder.w",
// "layers.0.bias"), each a view (dtype, shape, stride, storage_offset) of its
// storage; tensor offset/nbytes give the view's extent inside the file when
// it is contiguous, else the whole storage record.
Result<ParsedFile> ParseTorchZip(const RandomAccess& f, const ParseLimits& lim = {});

// .npz: a zip of .npy members, parsed only when every member is stored
// (uncompressed); tensors are named after the members without ".npy".
Result<ParsedFile> ParseNpz(const RandomAccess& f, const ParseLimits& lim = {});

struct TorchZipTensor {
  std::string name;
  DType dtype = DType::kUnknown;
  std::vector<int64_t> shape;  // contiguous, C order
  uint64_t nbytes = 0;
  uint32_t crc32 = 0;  // of the tensor's bytes (zip records carry it)
};

// Byte layout of a torch.save-compatible archive holding a flat state dict
// (an OrderedDict name -> tensor, one storage per tensor, records 64-byte
// aligned, stored, zip64 where needed). Loadable by torch.load with and
// without weights_only. Tensor data segments reference tensors by index.
Result<ViewLayout> LayoutTorchZip(const std::vector<TorchZipTensor>& tensors,
                                  const std::string& archive_name = "archive");

}  // namespace lfs::formats
