#include "lineage/usage.h"

#include <unordered_map>

namespace lfs::lineage {

Result<UsageReport> ComputeUsage(Lineage& lin) {
  Store& store = lin.store();
  UsageReport rep;
  LFS_RETURN_IF_ERROR(store.PackUsage(&rep.pack_bytes, &rep.live_bytes));
  // Chunks each version needs (a delta chunk needs its base chain too).
  std::unordered_map<Digest, uint32_t> frame_len;
  std::unordered_map<Digest, Digest> base_of;
  {
    ReadTxn txn(store.db());
    LFS_RETURN_IF_ERROR(txn.Scan(Table::kChunks, "", [&](std::string_view k, std::string_view v) {
      auto d = Digest::Decode(reinterpret_cast<const uint8_t*>(k.data()), k.size());
      auto e = ChunkEntry::Decode(v);
      if (d && e.ok()) {
        frame_len[*d] = e->frame_len;
        if (!e->base.empty()) base_of[*d] = e->base;
      }
      return true;
    }));
  }
  std::map<Digest, std::vector<Digest>> file_chunks;  // memo: file -> chunks
  auto chunks_of_file = [&](const Digest& f) -> Result<const std::vector<Digest>*> {
    auto it = file_chunks.find(f);
    if (it != file_chunks.end()) return &it->second;
    LFS_ASSIGN_OR_RETURN(FileRecipe r, LoadFile(store, f));
    std::vector<Digest> out;
    for (const auto& e : r.extents) {
      if (e.kind == Extent::Kind::kChunk) {
        out.push_back(e.digest);
      } else {
        LFS_ASSIGN_OR_RETURN(TensorObject t, LoadTensor(store, e.digest));
        out.insert(out.end(), t.chunks.begin(), t.chunks.end());
      }
    }
    return &(file_chunks[f] = std::move(out));
  };
  std::vector<std::vector<Digest>> needs;
  std::unordered_map<Digest, uint32_t> users;
  LFS_ASSIGN_OR_RETURN(auto models, lin.ListModels());
  for (const auto& m : models) {
    LFS_ASSIGN_OR_RETURN(auto vs, lin.ListVersions(m));
    for (const auto& v : vs) {
      VersionUsage u;
      u.key = v.key;
      std::vector<Digest> set;
      std::unordered_map<Digest, bool> seen;
      for (const auto& [name, fe] : v.files) {
        u.logical += fe.size;
        LFS_ASSIGN_OR_RETURN(auto cs, chunks_of_file(fe.digest));
        for (Digest c : *cs) {
          // Follow the delta chain: the bases are needed to read it.
          for (int hop = 0; hop < 16; hop++) {
            if (seen.emplace(c, true).second) set.push_back(c);
            auto b = base_of.find(c);
            if (b == base_of.end()) break;
            c = b->second;
          }
        }
      }
      for (const auto& c : set) users[c]++;
      needs.push_back(std::move(set));
      rep.versions.push_back(u);
    }
  }
  for (size_t i = 0; i < needs.size(); i++) {
    for (const auto& c : needs[i]) {
      double len = frame_len.count(c) ? frame_len[c] : 0;
      rep.versions[i].stored += len / users[c];
      if (users[c] == 1) rep.versions[i].unique += static_cast<uint64_t>(len);
    }
  }
  return rep;
}

}  // namespace lfs::lineage
