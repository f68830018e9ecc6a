// http/file_server.h — the pure parts of static file serving: Range headers (RFC 9110 §14)
// and content types. Safe path resolution under a root is boot::FileRoot, shared with TFTP.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

#include "boot/file_root.h"
#include "core/result.h"

namespace kiln::http {

using boot::FileRoot;
using boot::open_under;
using boot::OpenFile;

struct ByteRange {
  std::uint64_t first = 0;
  std::uint64_t last = 0;  // inclusive
};
enum class RangeParse { kNone, kOk, kUnsatisfiable };
// Parses a single-range "bytes=a-b" | "bytes=a-" | "bytes=-n" header against `size`.
// Multi-range and unknown units yield kNone (the whole file is sent, as RFC 9110 allows).
RangeParse parse_range(std::string_view header, std::uint64_t size, ByteRange& out);

std::string_view content_type_for(const std::filesystem::path& p);

}  // namespace kiln::http
