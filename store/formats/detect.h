#pragma once

#include <string_view>

#include "store/formats/format.h"

namespace lfs::formats {

// Chooses a parser by content (magic bytes) and, where content is ambiguous,
// by file name. Returns format kGeneric with no ranges when no parser applies;
// returns a non-ok Status (the reason, for the log) when a file looks like a
// known format but is malformed: the caller then stores it generically.
Result<ParsedFile> ParseAny(std::string_view file_name, const RandomAccess& f,
                            const ParseLimits& lim = {});

}  // namespace lfs::formats
