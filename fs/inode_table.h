// Inode number -> path, with the kernel's lookup counts. Inode numbers are a
// hash of the path (stable across remounts); the table only remembers which
// ones the kernel holds. Thread-safe; its mutex is a leaf in the lock order.
#pragma once

#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

namespace lfs::fs {

class InodeTable {
 public:
  InodeTable();
  // Records one kernel lookup of (ino, path). A different path hashing to the
  // same ino is refused (false): the caller reports EIO rather than alias.
  bool Remember(uint64_t ino, const std::string& path);
  void Forget(uint64_t ino, uint64_t nlookup);
  std::optional<std::string> PathOf(uint64_t ino) const;
  // After a rename inside a draft: moves the entry.
  void Rename(uint64_t old_ino, uint64_t new_ino, const std::string& new_path);
  size_t size() const;

 private:
  struct Entry {
    std::string path;
    uint64_t nlookup = 0;
  };
  mutable std::mutex mu_;
  std::unordered_map<uint64_t, Entry> map_;
};

}  // namespace lfs::fs
