#include "fs/inode_table.h"

#include "fs/namespace.h"

namespace lfs::fs {

InodeTable::InodeTable() { map_[Namespace::kRootIno] = Entry{"/", 1}; }

bool InodeTable::Remember(uint64_t ino, const std::string& path) {
  std::lock_guard<std::mutex> l(mu_);
  auto& e = map_[ino];
  if (e.nlookup > 0 && e.path != path) return false;
  e.path = path;
  e.nlookup++;
  return true;
}

void InodeTable::Forget(uint64_t ino, uint64_t nlookup) {
  if (ino == Namespace::kRootIno) return;
  std::lock_guard<std::mutex> l(mu_);
  auto it = map_.find(ino);
  if (it == map_.end()) return;
  if (it->second.nlookup <= nlookup) {
    map_.erase(it);
  } else {
    it->second.nlookup -= nlookup;
  }
}

std::optional<std::string> InodeTable::PathOf(uint64_t ino) const {
  std::lock_guard<std::mutex> l(mu_);
  auto it = map_.find(ino);
  if (it == map_.end()) return std::nullopt;
  return it->second.path;
}

void InodeTable::Rename(uint64_t old_ino, uint64_t new_ino, const std::string& new_path) {
  std::lock_guard<std::mutex> l(mu_);
  auto it = map_.find(old_ino);
  if (it == map_.end()) return;
  Entry e = it->second;
  map_.erase(it);
  e.path = new_path;
  map_[new_ino] = e;
}

size_t InodeTable::size() const {
  std::lock_guard<std::mutex> l(mu_);
  return map_.size();
}

}  // namespace lfs::fs
