// Consistency of the lineage tables with each other and with the file
// records they reference — the part of fsck that store/ cannot do, since it
// does not know what a version is. Read-only; one read transaction.
#pragma once

#include <string>
#include <vector>

#include "lineage/lineage.h"

namespace lfs::lineage {

struct LineageCheck {
  uint64_t models = 0, versions = 0, edges = 0;
  std::vector<std::string> errors;  // each a sentence naming what is wrong
};

// Checks that every file record's reference count equals the number of
// (version, name) entries naming it; that the `children` table holds exactly
// one entry per live parent edge, with its relation; that each model lists
// exactly its versions and each predecessor exists; and that every version
// record decodes and sits under its own key.
Status CheckLineage(const Store& store, LineageCheck* out);

}  // namespace lfs::lineage
