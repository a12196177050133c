// Namespace mutations: mkdir (model, draft), rmdir, unlink, rename, symlink
// (parent links), setattr, setxattr, removexattr. Committed content answers
// EROFS; everything else is a draft edit through Lineage or Drafts.
#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>

#include "fs/fuse_internal.h"
#include "store/log.h"

namespace lfs::fs {

using lineage::ParentSpec;
using lineage::VersionKey;

namespace {

Result<std::string> PathOf(Daemon& d, fuse_ino_t ino) {
  auto p = d.inodes.PathOf(ino);
  if (!p) return Status::NotFound("stale inode");
  return *p;
}

bool IsParentLinkName(const std::string& n, size_t* index) {
  auto i = ParentLinkIndex(n);
  if (i) *index = *i;
  return i.has_value();
}

Result<Namespace::Where> DraftDir(Daemon& d, const std::string& dir) {
  if (d.opts.read_only) return Status::ReadOnly("mounted read-only");
  LFS_ASSIGN_OR_RETURN(auto w, d.ns->Locate(dir));
  if (w.kind != NodeKind::kVersion) {
    return Status::ReadOnly(dir + " is not a version folder");
  }
  if (w.committed) return Status::ReadOnly(w.model + "/" + w.version + " is committed");
  return w;
}

// A symlink target naming a version: "../../m/v", "m/v", or an absolute path
// under the mount point.
Result<VersionKey> ParseLinkTarget(const Daemon& d, std::string t) {
  std::string mnt = d.opts.mountpoint;
  if (!t.empty() && t[0] == '/') {
    if (t.rfind(mnt + "/", 0) != 0) {
      return Status::InvalidArgument("parent link " + t + " points outside the mount");
    }
    t = t.substr(mnt.size() + 1);
  } else {
    while (t.rfind("../", 0) == 0) t = t.substr(3);
  }
  while (!t.empty() && t.back() == '/') t.pop_back();
  auto k = VersionKey::Parse(t);
  if (!k.ok()) return Status::InvalidArgument("parent link must name MODEL/VERSION: " + t);
  return k;
}

Status SetParentAt(Daemon& d, const VersionKey& key, size_t index, const VersionKey& parent) {
  LFS_ASSIGN_OR_RETURN(auto v, d.lineage->GetVersion(key));
  std::vector<ParentSpec> ps;
  for (const auto& p : v.parents) {
    if (!p.tombstone) ps.push_back({p.parent, p.relation});
  }
  if (index > ps.size()) {
    return Status::InvalidArgument("set parent." + std::to_string(ps.size()) + " first");
  }
  auto rel = lineage::Relation::kFinetune;
  if (!ps.empty()) rel = ps[0].relation;
  if (index == ps.size()) {
    ps.push_back({parent, rel});
  } else {
    ps[index].parent = parent;
  }
  if (ps.size() > 1 && index > 0 && rel != lineage::Relation::kMerge) {
    // A second parent is, more often than not, a merge.
    for (auto& p : ps) p.relation = lineage::Relation::kMerge;
  }
  return d.lineage->SetParents(key, ps);
}

int do_mkdir(Daemon& d, const fuse_ctx& who, fuse_ino_t parent, const char* name,
             fuse_entry_param* e) {
  auto dir = PathOf(d, parent);
  if (!dir.ok()) return ESTALE;
  std::string path = JoinPath(*dir, name);
  if (d.opts.read_only) return LogErrno("mkdir", path, Status::ReadOnly("mounted read-only"));
  auto w = d.ns->Locate(*dir);
  if (!w.ok()) return LogErrno("mkdir", path, w.status());
  Status s;
  if (w->kind == NodeKind::kRoot) {
    s = d.lineage->CreateModel(name);
  } else if (w->kind == NodeKind::kModel) {
    lineage::Lineage::DraftOptions o;
    o.name = name;
    o.owner = {who.uid, who.gid};  // the draft is theirs (see Version::owner)
    auto v = d.lineage->CreateDraft(w->model, o);
    s = v.ok() ? Status::OK() : v.status();
  } else if (w->committed) {
    s = Status::ReadOnly(*dir + " is committed");
  } else {
    // EPERM (LAYOUT.md), as for mknod and link: the operation is refused, not the caller.
    (void)LogErrno("mkdir", path, Status::Unsupported("no folders inside a version: " + *dir));
    return EPERM;
  }
  if (!s.ok()) return LogErrno("mkdir", path, s);
  return LookupEntry(d, path, e);
}
void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t) {
  fuse_entry_param e;
  int err = do_mkdir(*GetDaemon(req), *fuse_req_ctx(req), parent, name, &e);
  if (err) {
    fuse_reply_err(req, err);
  } else {
    fuse_reply_entry(req, &e);
  }
}

int do_rmdir(Daemon& d, fuse_ino_t parent, const char* name) {
  auto dir = PathOf(d, parent);
  if (!dir.ok()) return ESTALE;
  std::string path = JoinPath(*dir, name);
  if (d.opts.read_only) return LogErrno("rmdir", path, Status::ReadOnly("mounted read-only"));
  auto w = d.ns->Locate(path);
  if (!w.ok()) return LogErrno("rmdir", path, w.status());
  Status s;
  if (w->kind == NodeKind::kModel) {
    s = d.lineage->RemoveModel(w->model);
  } else if (w->kind == NodeKind::kVersion) {
    VersionKey key{w->model, w->version};
    auto v = d.lineage->GetVersion(key);
    if (!v.ok()) return LogErrno("rmdir", path, v.status());
    if (!v->committed() && (!v->files.empty() || d.drafts->HasOpenFiles(key))) {
      s = Status::NotEmpty(path + " still holds files");
    } else {
      // A committed version goes as a whole; refused while it has children.
      s = d.lineage->RemoveVersion(key, false);
      if (s.ok()) d.drafts->Discard(key);
    }
    d.ns->Invalidate(w->model, w->version);
  } else if (w->committed) {
    s = Status::ReadOnly(path + " belongs to a committed version");
  } else {
    s = Status::NotADirectory(path);
  }
  return s.ok() ? 0 : LogErrno("rmdir", path, s);
}
void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char* name) {
  fuse_reply_err(req, do_rmdir(*GetDaemon(req), parent, name));
}

int do_unlink(Daemon& d, fuse_ino_t parent, const char* name) {
  auto dir = PathOf(d, parent);
  if (!dir.ok()) return ESTALE;
  std::string path = JoinPath(*dir, name);
  auto w = DraftDir(d, *dir);
  if (!w.ok()) return LogErrno("unlink", path, w.status());
  VersionKey key{w->model, w->version};
  size_t index;
  Status s;
  if (IsParentLinkName(name, &index)) {
    auto v = d.lineage->GetVersion(key);
    if (!v.ok()) return LogErrno("unlink", path, v.status());
    std::vector<ParentSpec> ps;
    for (size_t i = 0; i < v->parents.size(); i++) {
      if (i != index) ps.push_back({v->parents[i].parent, v->parents[i].relation});
    }
    s = index < v->parents.size() ? d.lineage->SetParents(key, ps) : Status::NotFound(path);
  } else {
    s = d.drafts->Unlink(key, name);
  }
  d.ns->Invalidate(w->model, w->version);
  return s.ok() ? 0 : LogErrno("unlink", path, s);
}
void op_unlink(fuse_req_t req, fuse_ino_t parent, const char* name) {
  fuse_reply_err(req, do_unlink(*GetDaemon(req), parent, name));
}

int do_rename(Daemon& d, fuse_ino_t parent, const char* name, fuse_ino_t newparent,
              const char* newname, unsigned int flags) {
  auto dir = PathOf(d, parent);
  auto newdir = PathOf(d, newparent);
  if (!dir.ok() || !newdir.ok()) return ESTALE;
  std::string from = JoinPath(*dir, name), to = JoinPath(*newdir, newname);
  if (flags != 0) return LogErrno("rename", from, Status::InvalidArgument("rename flags"));
  if (d.opts.read_only) return LogErrno("rename", from, Status::ReadOnly("mounted read-only"));
  auto w = d.ns->Locate(*dir);
  if (!w.ok()) return LogErrno("rename", from, w.status());
  if (w->kind == NodeKind::kRoot && *dir == *newdir) {
    Status s = d.lineage->RenameModel(name, newname);
    return s.ok() ? 0 : LogErrno("rename", from, s);
  }
  if (*dir != *newdir) {
    (void)LogErrno("rename", from, Status::Unsupported("files move only within one draft"));
    return EXDEV;
  }
  auto dw = DraftDir(d, *dir);
  if (!dw.ok()) return LogErrno("rename", from, dw.status());
  Status s = d.drafts->Rename({dw->model, dw->version}, name, newname);
  if (s.ok()) d.inodes.Rename(Namespace::InoOf(from), Namespace::InoOf(to), to);
  return s.ok() ? 0 : LogErrno("rename", from, s);
}
void op_rename(fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t newparent,
               const char* newname, unsigned int flags) {
  fuse_reply_err(req, do_rename(*GetDaemon(req), parent, name, newparent, newname, flags));
}

int do_symlink(Daemon& d, const char* link, fuse_ino_t parent, const char* name,
               fuse_entry_param* e) {
  auto dir = PathOf(d, parent);
  if (!dir.ok()) return ESTALE;
  std::string path = JoinPath(*dir, name);
  auto w = DraftDir(d, *dir);
  if (!w.ok()) return LogErrno("symlink", path, w.status());
  size_t index;
  if (!IsParentLinkName(name, &index)) {
    return LogErrno("symlink", path,
                    Status::InvalidArgument("only parent, parent.1 … links can be made"));
  }
  auto target = ParseLinkTarget(d, link);
  if (!target.ok()) return LogErrno("symlink", path, target.status());
  Status s = SetParentAt(d, {w->model, w->version}, index, *target);
  if (!s.ok()) return LogErrno("symlink", path, s);
  d.ns->Invalidate(w->model, w->version);
  return LookupEntry(d, path, e);
}
void op_symlink(fuse_req_t req, const char* link, fuse_ino_t parent, const char* name) {
  fuse_entry_param e;
  int err = do_symlink(*GetDaemon(req), link, parent, name, &e);
  if (err) {
    fuse_reply_err(req, err);
  } else {
    fuse_reply_entry(req, &e);
  }
}

int do_setattr(Daemon& d, fuse_ino_t ino, struct stat* attr, int to_set, fuse_file_info* fi,
               struct stat* out, double* timeout) {
  auto p = PathOf(d, ino);
  if (!p.ok()) return ESTALE;
  auto w = d.ns->Locate(*p);
  Attr open_attr;
  if (!w.ok() && w.status().IsNotFound() && OpenFileAttr(d, ino, &open_attr)) {
    // Unlinked while open: ftruncate still works on the descriptor.
    if (to_set & FUSE_SET_ATTR_SIZE) {
      int err = TruncateOpenFile(d, ino, static_cast<uint64_t>(attr->st_size));
      if (err) return err;
    }
    (void)OpenFileAttr(d, ino, &open_attr);
    FillStat(open_attr, out);
    *timeout = 0;
    return 0;
  }
  if (!w.ok()) return LogErrno("setattr", *p, w.status());
  bool in_draft =
      !w->committed && (w->kind == NodeKind::kOriginal || w->kind == NodeKind::kVersion);
  if (!in_draft || d.opts.read_only) {
    return LogErrno("setattr", *p, Status::ReadOnly("committed content is immutable"));
  }
  if (to_set & FUSE_SET_ATTR_SIZE) {
    if (w->kind != NodeKind::kOriginal) return EISDIR;
    VersionKey key{w->model, w->version};
    Status s;
    (void)fi;
    s = d.drafts->Truncate(key, w->name, static_cast<uint64_t>(attr->st_size));
    if (!s.ok()) return LogErrno("truncate", *p, s);
  }
  // Modes, owners and times of draft files are accepted and not kept: a
  // version's files take their times from the version (cp -a must not fail).
  auto a = d.ns->GetAttr(*p);
  if (!a.ok()) return LogErrno("setattr", *p, a.status());
  FillStat(*a, out);
  *timeout = 0;
  return 0;
}
void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set, fuse_file_info* fi) {
  struct stat st;
  double timeout = 0;
  int err = do_setattr(*GetDaemon(req), ino, attr, to_set, fi, &st, &timeout);
  if (err) {
    fuse_reply_err(req, err);
  } else {
    fuse_reply_attr(req, &st, timeout);
  }
}

int do_setxattr(Daemon& d, fuse_ino_t ino, const char* name, const char* value, size_t size) {
  auto p = PathOf(d, ino);
  if (!p.ok()) return ESTALE;
  std::string n = name, v(value, size);
  while (!v.empty() && (v.back() == '\n' || v.back() == '\0')) v.pop_back();
  auto w = d.ns->Locate(*p);
  if (!w.ok()) return LogErrno("setxattr", *p, w.status());
  if (w->kind != NodeKind::kVersion) {
    return LogErrno("setxattr", *p,
                    w->committed ? Status::ReadOnly("immutable")
                                 : Status::Unsupported("attributes live on versions"));
  }
  if (w->committed || d.opts.read_only) {
    return LogErrno("setxattr", *p,
                    Status::ReadOnly(w->model + "/" + w->version + " is committed"));
  }
  VersionKey key{w->model, w->version};
  Status s;
  if (n == "user.lineage.state") {
    if (v == "committed") {
      if (d.drafts->HasOpenFiles(key)) {
        s = Status::Busy("files of " + key.str() + " are still open for writing");
      } else {
        s = d.lineage->Commit(key);
      }
    } else if (v != "draft") {
      s = Status::InvalidArgument("state is draft or committed");
    }
  } else if (n == "user.lineage.parent" || n == "user.lineage.parents") {
    std::vector<ParentSpec> ps;
    auto cur = d.lineage->GetVersion(key);
    auto rel = lineage::Relation::kFinetune;
    if (cur.ok() && !cur->parents.empty()) rel = cur->parents[0].relation;
    size_t start = 0;
    while (start <= v.size() && !v.empty()) {
      size_t comma = v.find_first_of(",\n", start);
      std::string one =
          v.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
      auto k = ParseLinkTarget(d, one);
      if (!k.ok()) return LogErrno("setxattr", *p, k.status());
      ps.push_back({*k, rel});
      if (comma == std::string::npos) break;
      start = comma + 1;
    }
    if (ps.size() > 1 && rel == lineage::Relation::kFinetune) {
      for (auto& x : ps) x.relation = lineage::Relation::kMerge;
    }
    s = d.lineage->SetParents(key, ps);
  } else if (n == "user.lineage.relation") {
    auto rel = lineage::ParseRelation(v);
    auto cur = d.lineage->GetVersion(key);
    if (!rel) {
      s = Status::InvalidArgument("unknown relation '" + v + "'");
    } else if (!cur.ok()) {
      s = cur.status();
    } else {
      std::vector<ParentSpec> ps;
      for (const auto& e : cur->parents) {
        if (!e.tombstone) ps.push_back({e.parent, *rel});
      }
      s = d.lineage->SetParents(key, ps);
    }
  } else if (n == "user.lineage.message") {
    s = d.lineage->SetMessage(key, v);
  } else if (n == "user.lineage.metadata") {
    s = d.lineage->SetMetadata(key, v);
  } else if (n.rfind("user.lineage.", 0) == 0) {
    s = Status::InvalidArgument(n + " cannot be set");
  } else {
    s = Status::Unsupported("only user.lineage.* attributes are kept");
  }
  d.ns->Invalidate(w->model, w->version);
  return s.ok() ? 0 : LogErrno("setxattr", *p, s);
}
void op_setxattr(fuse_req_t req, fuse_ino_t ino, const char* name, const char* value, size_t size,
                 int) {
  fuse_reply_err(req, do_setxattr(*GetDaemon(req), ino, name, value, size));
}

void op_removexattr(fuse_req_t req, fuse_ino_t ino, const char*) {
  Daemon& d = *GetDaemon(req);
  auto p = PathOf(d, ino);
  auto w = p.ok() ? d.ns->Locate(*p) : Result<Namespace::Where>(p.status());
  int err = !w.ok() ? ENOENT : (w->committed ? EROFS : ENOTSUP);
  fuse_reply_err(req, err);
}

void op_mknod(fuse_req_t req, fuse_ino_t, const char*, mode_t, dev_t) {
  fuse_reply_err(req, EPERM);
}
void op_link(fuse_req_t req, fuse_ino_t, fuse_ino_t, const char*) { fuse_reply_err(req, EPERM); }

}  // namespace

void AddWriteOps(fuse_lowlevel_ops* ops) {
  ops->mkdir = op_mkdir;
  ops->rmdir = op_rmdir;
  ops->unlink = op_unlink;
  ops->rename = op_rename;
  ops->symlink = op_symlink;
  ops->setattr = op_setattr;
  ops->setxattr = op_setxattr;
  ops->removexattr = op_removexattr;
  ops->mknod = op_mknod;
  ops->link = op_link;
}

}  // namespace lfs::fs
