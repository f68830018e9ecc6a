// boot/file_root.h — where boot artifacts come from: files under a configured root, resolved
// safely. Shared by the HTTP file mounts and TFTP so both refuse and serve exactly the same
// paths.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

#include "core/result.h"
#include "core/unique_fd.h"

namespace kiln::boot {

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
  // Opens the regular file `rel` (a decoded URL path below a mount prefix, a TFTP file name).
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

}  // namespace kiln::boot
