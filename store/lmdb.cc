#include "store/lmdb.h"

#include <sys/stat.h>

#include <cerrno>

namespace lfs {

const char* TableName(Table t) {
  switch (t) {
    case Table::kMeta: return "meta";
    case Table::kChunks: return "chunks";
    case Table::kPacks: return "packs";
    case Table::kTensors: return "tensors";
    case Table::kFiles: return "files";
    case Table::kModels: return "models";
    case Table::kVersions: return "versions";
    case Table::kChildren: return "children";
    case Table::kCount: break;
  }
  return "?";
}

Status LmdbStatus(int rc, const std::string& context) {
  if (rc == MDB_SUCCESS) return Status::OK();
  std::string m = context + ": " + mdb_strerror(rc);
  switch (rc) {
    case MDB_NOTFOUND: return Status::NotFound(m);
    case MDB_MAP_FULL: return Status::NoSpace(m + " (index map full)");
    case MDB_CORRUPTED:
    case MDB_PAGE_NOTFOUND:
    case MDB_INVALID:
    case MDB_VERSION_MISMATCH: return Status::Corruption(m);
    case MDB_READERS_FULL:
    case MDB_TXN_FULL: return Status::Busy(m);
    default:
      if (rc > 0) return Status::FromErrno(rc, context);
      return Status::IOError(m);
  }
}

namespace {
MDB_val Val(std::string_view s) { return MDB_val{s.size(), const_cast<char*>(s.data())}; }
std::string_view View(const MDB_val& v) {
  return std::string_view(static_cast<const char*>(v.mv_data), v.mv_size);
}
}  // namespace

Result<std::unique_ptr<Db>> Db::Open(const std::string& dir, const Options& opts) {
  std::unique_ptr<Db> db(new Db);
  db->read_only_ = opts.read_only;
  LFS_RETURN_IF_ERROR(LmdbStatus(mdb_env_create(&db->env_), "mdb_env_create"));
  LFS_RETURN_IF_ERROR(LmdbStatus(mdb_env_set_maxdbs(db->env_, 16), "mdb_env_set_maxdbs"));
  LFS_RETURN_IF_ERROR(LmdbStatus(mdb_env_set_maxreaders(db->env_, 1024), "mdb_env_set_maxreaders"));
  LFS_RETURN_IF_ERROR(
      LmdbStatus(mdb_env_set_mapsize(db->env_, opts.map_size), "mdb_env_set_mapsize"));
  // MDB_NOTLS: read transactions are not bound to threads (FUSE worker pools).
  unsigned flags = MDB_NOTLS | (opts.read_only ? MDB_RDONLY : 0);
  LFS_RETURN_IF_ERROR(
      LmdbStatus(mdb_env_open(db->env_, dir.c_str(), flags, 0644), "mdb_env_open " + dir));
  int dead = 0;
  (void)mdb_reader_check(db->env_, &dead);  // clears readers left by crashed processes
  MDB_txn* txn = nullptr;
  LFS_RETURN_IF_ERROR(LmdbStatus(
      mdb_txn_begin(db->env_, nullptr, opts.read_only ? MDB_RDONLY : 0, &txn), "mdb_txn_begin"));
  for (int i = 0; i < static_cast<int>(Table::kCount); i++) {
    const char* name = TableName(static_cast<Table>(i));
    int rc = mdb_dbi_open(txn, name, opts.read_only ? 0 : MDB_CREATE, &db->dbis_[i]);
    if (rc != MDB_SUCCESS) {
      mdb_txn_abort(txn);
      return LmdbStatus(rc, std::string("mdb_dbi_open ") + name);
    }
  }
  LFS_RETURN_IF_ERROR(LmdbStatus(mdb_txn_commit(txn), "mdb_txn_commit (open)"));
  return db;
}

Db::~Db() {
  if (env_) mdb_env_close(env_);
}

Status Db::CopyTo(const std::string& dir) const {
  return LmdbStatus(mdb_env_copy2(env_, dir.c_str(), MDB_CP_COMPACT), "mdb_env_copy2 " + dir);
}

Txn::Txn(const Db& db, bool write) : db_(&db) {
  int rc = mdb_txn_begin(db.env(), nullptr, write ? 0 : MDB_RDONLY, &txn_);
  if (rc != MDB_SUCCESS) {
    txn_ = nullptr;
    begin_status_ = LmdbStatus(rc, "mdb_txn_begin");
  }
}

Txn::~Txn() {
  if (txn_) mdb_txn_abort(txn_);
}

Result<std::optional<std::string_view>> Txn::Get(Table t, std::string_view key) const {
  if (!txn_) return begin_status_;
  MDB_val k = Val(key), v;
  int rc = mdb_get(txn_, db_->dbi(t), &k, &v);
  if (rc == MDB_NOTFOUND) return std::optional<std::string_view>();
  LFS_RETURN_IF_ERROR(LmdbStatus(rc, std::string("get ") + TableName(t)));
  return std::optional<std::string_view>(View(v));
}

Result<std::optional<std::string>> Txn::GetCopy(Table t, std::string_view key) const {
  LFS_ASSIGN_OR_RETURN(auto v, Get(t, key));
  if (!v) return std::optional<std::string>();
  return std::optional<std::string>(std::string(*v));
}

Status Txn::Scan(Table t, std::string_view from,
                 const std::function<bool(std::string_view, std::string_view)>& fn) const {
  if (!txn_) return begin_status_;
  MDB_cursor* c = nullptr;
  LFS_RETURN_IF_ERROR(LmdbStatus(mdb_cursor_open(txn_, db_->dbi(t), &c), "mdb_cursor_open"));
  MDB_val k = Val(from), v;
  int rc = from.empty() ? mdb_cursor_get(c, &k, &v, MDB_FIRST)
                        : mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
  while (rc == MDB_SUCCESS) {
    if (!fn(View(k), View(v))) break;
    rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
  }
  mdb_cursor_close(c);
  if (rc != MDB_SUCCESS && rc != MDB_NOTFOUND) return LmdbStatus(rc, "cursor");
  return Status::OK();
}

Status Txn::ScanPrefix(Table t, std::string_view prefix,
                       const std::function<bool(std::string_view, std::string_view)>& fn) const {
  return Scan(t, prefix, [&](std::string_view k, std::string_view v) {
    if (k.substr(0, prefix.size()) != prefix) return false;
    return fn(k, v);
  });
}

Result<uint64_t> Txn::Count(Table t) const {
  if (!txn_) return begin_status_;
  MDB_stat st;
  LFS_RETURN_IF_ERROR(LmdbStatus(mdb_stat(txn_, db_->dbi(t), &st), "mdb_stat"));
  return static_cast<uint64_t>(st.ms_entries);
}

Status WriteTxn::Put(Table t, std::string_view key, std::string_view value) {
  if (!txn_) return begin_status_;
  MDB_val k = Val(key), v = Val(value);
  return LmdbStatus(mdb_put(txn_, db_->dbi(t), &k, &v, 0), std::string("put ") + TableName(t));
}

Status WriteTxn::Del(Table t, std::string_view key) {
  if (!txn_) return begin_status_;
  MDB_val k = Val(key);
  int rc = mdb_del(txn_, db_->dbi(t), &k, nullptr);
  if (rc == MDB_NOTFOUND) return Status::OK();
  return LmdbStatus(rc, std::string("del ") + TableName(t));
}

Status WriteTxn::Commit() {
  if (!txn_) return begin_status_;
  int rc = mdb_txn_commit(txn_);
  txn_ = nullptr;  // committed or aborted by LMDB either way
  return LmdbStatus(rc, "mdb_txn_commit");
}

}  // namespace lfs
