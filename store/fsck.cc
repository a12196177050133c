#include "store/fsck.h"

#include <map>

#include "store/coding.h"
#include "store/objects.h"
#include "store/pack.h"

namespace lfs {

Status Fsck(Store& store, FsckReport* rep, const FsckOptions& opts) {
  *rep = FsckReport();
  // 1. Packs: present, long enough, with a valid header.
  std::map<uint64_t, PackEntry> packs;
  std::map<Digest, ChunkEntry> chunks;
  std::map<Digest, TensorObject> tensors;
  std::map<Digest, FileRecipe> files;
  {
    ReadTxn txn(store.db());
    LFS_RETURN_IF_ERROR(txn.begin_status());
    LFS_RETURN_IF_ERROR(txn.Scan(Table::kPacks, "", [&](std::string_view k, std::string_view v) {
      auto p = PackEntry::Decode(v);
      if (p.ok()) {
        packs[DecodeKeyU64(k)] = *p;
      } else {
        rep->errors.push_back("malformed pack entry " + PackFileName(DecodeKeyU64(k)));
      }
      return true;
    }));
    auto key_digest = [](std::string_view k) {
      return Digest::Decode(reinterpret_cast<const uint8_t*>(k.data()), k.size());
    };
    LFS_RETURN_IF_ERROR(txn.Scan(Table::kChunks, "", [&](std::string_view k, std::string_view v) {
      auto d = key_digest(k);
      auto e = ChunkEntry::Decode(v);
      if (d && e.ok()) {
        chunks[*d] = *e;
      } else {
        rep->errors.push_back("malformed chunk index entry");
      }
      return true;
    }));
    LFS_RETURN_IF_ERROR(txn.Scan(Table::kTensors, "", [&](std::string_view k, std::string_view v) {
      auto d = key_digest(k);
      auto t = TensorObject::Decode(v);
      if (d && t.ok()) {
        tensors[*d] = std::move(t).value();
      } else {
        rep->errors.push_back("malformed tensor record");
      }
      return true;
    }));
    LFS_RETURN_IF_ERROR(txn.Scan(Table::kFiles, "", [&](std::string_view k, std::string_view v) {
      auto d = key_digest(k);
      auto f = FileRecipe::Decode(v);
      if (d && f.ok()) {
        files[*d] = std::move(f).value();
      } else {
        rep->errors.push_back("malformed file record");
      }
      return true;
    }));
  }
  for (const auto& [id, pe] : packs) {
    rep->packs_checked++;
    std::string path = store.PackPath(id);
    auto size = store.env()->FileSize(path);
    if (!size.ok()) {
      rep->errors.push_back("pack " + PackFileName(id) +
                            " is missing: " + size.status().ToString());
      continue;
    }
    if (*size < pe.length) {
      rep->errors.push_back("pack " + PackFileName(id) + " is shorter (" + std::to_string(*size) +
                            " bytes) than its committed length " + std::to_string(pe.length));
    }
    auto f = store.env()->OpenRandomAccess(path);
    std::string header(kPackHeaderSize, '\0');
    if (!f.ok() || !(*f)->ReadExact(0, kPackHeaderSize, header.data()).ok() ||
        !CheckPackHeader(header).ok()) {
      rep->errors.push_back("pack " + PackFileName(id) + " has a bad header");
    }
  }
  // 2. Every chunk decodes to bytes matching its address.
  std::vector<ChunkProblem> problems;
  LFS_RETURN_IF_ERROR(store.VerifyChunks(&problems, &rep->chunks_checked));
  for (const auto& p : problems) {
    rep->bad_chunks.insert(p.digest);
    rep->errors.push_back("chunk " + p.digest.Hex() + ": " + p.problem);
  }
  // 3. Reference counts recomputed from the records that hold them.
  std::map<Digest, uint64_t> chunk_refs, tensor_refs;
  for (const auto& [d, e] : chunks) {
    if (!e.base.empty()) chunk_refs[e.base]++;
    if (packs.find(e.pack_id) == packs.end()) {
      rep->errors.push_back("chunk " + d.Hex() + " lives in unknown pack " +
                            PackFileName(e.pack_id));
      rep->bad_chunks.insert(d);
    }
  }
  for (const auto& [d, t] : tensors) {
    rep->tensors_checked++;
    if (t.derivation != Derivation::kNone) {
      tensor_refs[t.derived_from]++;
      if (!tensors.count(t.derived_from)) {
        rep->errors.push_back("tensor " + d.Hex() + " derives from missing tensor " +
                              t.derived_from.Hex());
      }
    }
    if (!t.derived_from2.empty()) {
      tensor_refs[t.derived_from2]++;
      if (!tensors.count(t.derived_from2)) {
        rep->errors.push_back("tensor " + d.Hex() + " derives from missing tensor " +
                              t.derived_from2.Hex());
      }
    }
    for (const auto& c : t.chunks) {
      chunk_refs[c]++;
      if (!chunks.count(c)) {
        rep->errors.push_back("tensor " + d.Hex() + " references missing chunk " + c.Hex());
        rep->bad_chunks.insert(c);
      }
    }
  }
  for (const auto& [d, f] : files) {
    rep->files_checked++;
    for (const auto& e : f.extents) {
      if (e.kind == Extent::Kind::kChunk) {
        chunk_refs[e.digest]++;
        if (!chunks.count(e.digest)) {
          rep->errors.push_back("file " + d.Hex() + " references missing chunk " + e.digest.Hex());
          rep->bad_chunks.insert(e.digest);
        }
      } else {
        tensor_refs[e.digest]++;
        if (!tensors.count(e.digest)) {
          rep->errors.push_back("file " + d.Hex() + " references missing tensor " + e.digest.Hex());
        }
      }
    }
  }
  for (const auto& [d, e] : chunks) {
    if (opts.verify_refcounts && chunk_refs[d] != e.refs) {
      rep->errors.push_back("chunk " + d.Hex() + " has reference count " + std::to_string(e.refs) +
                            ", expected " + std::to_string(chunk_refs[d]));
    }
  }
  for (const auto& [d, t] : tensors) {
    if (opts.verify_refcounts && tensor_refs[d] != t.refs) {
      rep->errors.push_back("tensor " + d.Hex() + " has reference count " + std::to_string(t.refs) +
                            ", expected " + std::to_string(tensor_refs[d]));
    }
  }
  // 4. Which files lose bytes to bad chunks (a delta child of a bad chunk is bad too).
  bool grew = true;
  while (grew) {
    grew = false;
    for (const auto& [d, e] : chunks) {
      if (!e.base.empty() && rep->bad_chunks.count(e.base) && !rep->bad_chunks.count(d)) {
        rep->bad_chunks.insert(d);
        grew = true;
      }
    }
  }
  for (const auto& [d, f] : files) {
    for (const auto& e : f.extents) {
      bool bad = false;
      if (e.kind == Extent::Kind::kChunk) {
        bad = rep->bad_chunks.count(e.digest) > 0;
      } else {
        auto it = tensors.find(e.digest);
        if (it == tensors.end()) {
          bad = true;
        } else {
          for (const auto& c : it->second.chunks) bad = bad || rep->bad_chunks.count(c) > 0;
        }
      }
      if (bad) rep->damaged_files.insert(d);
    }
  }
  return Status::OK();
}

}  // namespace lfs
