// RAII wrappers around one LMDB environment per process. Transactions are
// short: copy values out before the transaction ends, never hold a read
// transaction across a FUSE reply. LMDB return codes become Status here.
#pragma once

#include <lmdb.h>

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "store/status.h"

namespace lfs {

// Named databases of the environment; ids are resolved at open time.
enum class Table : int {
  kMeta = 0,
  kChunks,
  kPacks,
  kTensors,
  kFiles,
  kModels,
  kVersions,
  kChildren,
  kCount
};
const char* TableName(Table t);

Status LmdbStatus(int rc, const std::string& context);

class Db {
 public:
  struct Options {
    uint64_t map_size = 1ull << 40;  // virtual reservation; the file grows as needed
    bool read_only = false;
  };
  static Result<std::unique_ptr<Db>> Open(const std::string& dir, const Options& opts);
  ~Db();
  MDB_env* env() const { return env_; }
  MDB_dbi dbi(Table t) const { return dbis_[static_cast<int>(t)]; }
  bool read_only() const { return read_only_; }
  // Copies the environment consistently (mdb_env_copy2 with compaction).
  Status CopyTo(const std::string& dir) const;

 private:
  Db() = default;
  MDB_env* env_ = nullptr;
  MDB_dbi dbis_[static_cast<int>(Table::kCount)] = {};
  bool read_only_ = false;
};

class Txn {
 public:
  Txn(const Txn&) = delete;
  Txn& operator=(const Txn&) = delete;
  virtual ~Txn();
  MDB_txn* raw() const { return txn_; }
  const Db& db() const { return *db_; }

  // Value view valid until the transaction ends: copy it out.
  Result<std::optional<std::string_view>> Get(Table t, std::string_view key) const;
  Result<std::optional<std::string>> GetCopy(Table t, std::string_view key) const;
  // Visits keys >= from (all keys when from is empty) in order while fn returns true.
  Status Scan(Table t, std::string_view from,
              const std::function<bool(std::string_view key, std::string_view value)>& fn) const;
  // Visits every key that starts with prefix.
  Status ScanPrefix(
      Table t, std::string_view prefix,
      const std::function<bool(std::string_view key, std::string_view value)>& fn) const;
  Result<uint64_t> Count(Table t) const;

 protected:
  Txn(const Db& db, bool write);
  const Db* db_;
  MDB_txn* txn_ = nullptr;
  Status begin_status_;

 public:
  const Status& begin_status() const { return begin_status_; }
};

class ReadTxn final : public Txn {
 public:
  explicit ReadTxn(const Db& db) : Txn(db, false) {}
};

class WriteTxn final : public Txn {
 public:
  explicit WriteTxn(const Db& db) : Txn(db, true) {}
  Status Put(Table t, std::string_view key, std::string_view value);
  Status Del(Table t, std::string_view key);  // NotFound is not an error
  Status Commit();

 private:
  bool done_ = false;
};

}  // namespace lfs
