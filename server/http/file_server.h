// http/file_server.h — the pure parts of static file serving: safe path resolution under a
// root, Range headers (RFC 9110 §14), content types.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

#include "core/result.h"
#include "core/unique_fd.h"

namespace kiln::http {

using kiln::UniqueFd;

struct OpenFile {
  UniqueFd fd;
  std::uint64_t size = 0;
  std::int64_t mtime_s = 0;
  std::filesystem::path path;
};

// A directory that files are served from. Holds the directory open, and resolves every
// request relative to it with openat2(RESOLVE_BENEATH), so the kernel itself refuses any
// resolution (symlinks included) that leaves the directory. Immutable; thread-safe.
class FileRoot {
 public:
  static Result<FileRoot> open(const std::filesystem::path& root);
  // Opens the regular file `rel` (a decoded URL path below the mount prefix).
  // Refused (kInvalid): NUL bytes, ".." segments, backslashes. Not found (kNotFound): missing
  // files, directories, and anything that resolves (after symlinks) outside the root.
  Result<OpenFile> open_file(std::string_view rel) const;
  const std::filesystem::path& path() const { return path_; }

 private:
  UniqueFd dir_;
  std::filesystem::path path_;
};

// One-shot convenience over FileRoot.
Result<OpenFile> open_under(const std::filesystem::path& root, std::string_view rel);

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
