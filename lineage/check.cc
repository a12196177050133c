#include "lineage/check.h"

#include <map>
#include <set>

#include "store/objects.h"

namespace lfs::lineage {

namespace {
std::string Printable(std::string_view key) {
  std::string s(key);
  for (auto& c : s) {
    if (c == '\0') c = '/';
  }
  return s;
}
}  // namespace

Status CheckLineage(const Store& store, LineageCheck* out) {
  ReadTxn txn(store.db());
  LFS_RETURN_IF_ERROR(txn.begin_status());
  auto err = [&](std::string e) { out->errors.push_back(std::move(e)); };

  std::map<Digest, uint64_t> file_uses;
  std::map<std::string, uint8_t> want_children;  // ChildDbKey -> relation
  std::map<std::string, std::set<std::string>> versions_of;
  std::vector<Version> all;
  LFS_RETURN_IF_ERROR(
      txn.Scan(Table::kVersions, "", [&](std::string_view key, std::string_view val) {
        auto v = DecodeVersion(val);
        if (!v.ok()) {
          err("version record " + Printable(key) + " cannot be read: " + v.status().ToString());
          return true;
        }
        if (VersionDbKey(v->key) != key) {
          err("version record " + Printable(key) + " names itself " + v->key.str());
        }
        out->versions++;
        versions_of[v->key.model].insert(v->key.version);
        for (const auto& [name, fe] : v->files) file_uses[fe.digest]++;
        for (const auto& p : v->parents) {
          if (p.tombstone) continue;
          want_children[ChildDbKey(p.parent, v->key)] = static_cast<uint8_t>(p.relation);
        }
        all.push_back(std::move(*v));
        return true;
      }));

  // Every live parent edge: the parent exists and the children entry agrees.
  std::set<std::string> have_children;
  LFS_RETURN_IF_ERROR(
      txn.Scan(Table::kChildren, "", [&](std::string_view key, std::string_view val) {
        have_children.insert(std::string(key));
        auto it = want_children.find(std::string(key));
        if (it == want_children.end()) {
          err("children entry " + Printable(key) + " has no parent edge behind it");
        } else if (val.size() != 1 || static_cast<uint8_t>(val[0]) != it->second) {
          err("children entry " + Printable(key) + " disagrees with the edge's relation");
        }
        return true;
      }));
  for (const auto& [key, rel] : want_children) {
    out->edges++;
    if (!have_children.count(key)) err("parent edge " + Printable(key) + " is not in children");
  }
  for (const auto& v : all) {
    for (const auto& p : v.parents) {
      if (p.tombstone) continue;
      auto got = txn.Get(Table::kVersions, VersionDbKey(p.parent));
      if (!got.ok() || !*got) {
        err(v.key.str() + " names parent " + p.parent.str() +
            ", which does not exist (and is not a tombstone)");
      }
    }
  }

  // Models list exactly their versions.
  LFS_RETURN_IF_ERROR(txn.Scan(Table::kModels, "", [&](std::string_view key, std::string_view val) {
    auto m = DecodeModel(val);
    if (!m.ok()) {
      err("model record " + std::string(key) + " cannot be read: " + m.status().ToString());
      return true;
    }
    out->models++;
    std::set<std::string> listed(m->versions.begin(), m->versions.end());
    if (listed.size() != m->versions.size()) err("model " + m->name + " lists a version twice");
    if (listed != versions_of[m->name]) {
      err("model " + m->name + " lists " + std::to_string(listed.size()) + " version(s) but " +
          std::to_string(versions_of[m->name].size()) + " exist");
    }
    versions_of.erase(m->name);
    return true;
  }));
  for (const auto& [model, vs] : versions_of) {
    err(std::to_string(vs.size()) + " version(s) of " + model + " but no model record");
  }

  // File reference counts: one per (version, name) entry.
  LFS_RETURN_IF_ERROR(txn.Scan(Table::kFiles, "", [&](std::string_view key, std::string_view val) {
    auto d = Digest::Decode(reinterpret_cast<const uint8_t*>(key.data()), key.size());
    auto f = FileRecipe::Decode(val);
    if (!d || !f.ok()) return true;  // the store-level fsck reports unreadable records
    uint64_t uses = 0;
    if (auto it = file_uses.find(*d); it != file_uses.end()) {
      uses = it->second;
      file_uses.erase(it);
    }
    if (f->refs != uses) {
      err("file " + d->Hex() + " has reference count " + std::to_string(f->refs) + ", but " +
          std::to_string(uses) + " version entr" + (uses == 1 ? "y names" : "ies name") + " it");
    }
    return true;
  }));
  for (const auto& [d, n] : file_uses) {
    err("file " + d.Hex() + " is named by " + std::to_string(n) + " version entr" +
        (n == 1 ? "y" : "ies") + " but has no record");
  }
  return Status::OK();
}

}  // namespace lfs::lineage
