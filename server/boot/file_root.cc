#include "boot/file_root.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <system_error>

namespace kiln::boot {

Result<FileRoot> FileRoot::open(const std::filesystem::path& root) {
  int fd = ::open(root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    return make_error(Errc::kNotFound,
                      "cannot open file root " + root.string() + ": " + std::strerror(errno));
  }
  FileRoot r;
  r.dir_ = UniqueFd(fd);
  r.path_ = root;
  return r;
}

Result<OpenFile> FileRoot::open_file(std::string_view rel) const {
  if (rel.find('\0') != std::string_view::npos || rel.find('\\') != std::string_view::npos) {
    return make_error(Errc::kInvalid, "invalid characters in path");
  }
  std::string relative;
  std::size_t pos = 0;
  while (pos <= rel.size()) {
    std::size_t slash = rel.find('/', pos);
    std::string_view seg =
        rel.substr(pos, slash == std::string_view::npos ? rel.npos : slash - pos);
    if (seg == "..") return make_error(Errc::kInvalid, "'..' is not allowed in paths");
    if (!seg.empty() && seg != ".") {
      if (!relative.empty()) relative.push_back('/');
      relative.append(seg);
    }
    if (slash == std::string_view::npos) break;
    pos = slash + 1;
  }
  if (relative.empty()) return make_error(Errc::kNotFound, "not found");
  struct open_how how {};
  // O_NONBLOCK: opening a FIFO must not block an io thread (it is refused below as not regular).
  how.flags = O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK;
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;
  int fd = static_cast<int>(::syscall(SYS_openat2, dir_.get(), relative.c_str(), &how, sizeof how));
  if (fd < 0 && errno == ENOSYS) {
    // Kernels before 5.6: resolve in user space and check the real path stays inside.
    std::error_code ec;
    const auto real_root = std::filesystem::canonical(path_, ec);
    const auto real = ec ? real_root : std::filesystem::canonical(real_root / relative, ec);
    if (ec) return make_error(Errc::kNotFound, "not found");
    auto [root_end, _] =
        std::mismatch(real_root.begin(), real_root.end(), real.begin(), real.end());
    if (root_end != real_root.end()) return make_error(Errc::kNotFound, "not found");
    fd = ::open(real.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  }
  if (fd < 0) {
    // Missing, escaping (EXDEV), through a non-directory, a symlink loop, unreadable: 404.
    // Anything else (EMFILE, ENOMEM, EIO) is the server's problem, not the client's.
    const int e = errno;
    if (e == ENOENT || e == EXDEV || e == ENOTDIR || e == ELOOP || e == EACCES ||
        e == ENAMETOOLONG) {
      return make_error(Errc::kNotFound, "not found");
    }
    return make_error(Errc::kUnavailable, std::string("cannot open file: ") + std::strerror(e));
  }
  OpenFile f;
  f.fd = UniqueFd(fd);
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    return make_error(Errc::kNotFound, "not found");
  }
  f.size = static_cast<std::uint64_t>(st.st_size);
  f.mtime_s = st.st_mtim.tv_sec;
  f.path = relative;
  return f;
}

Result<OpenFile> open_under(const std::filesystem::path& root, std::string_view rel) {
  auto r = FileRoot::open(root);
  if (!r) return r.error();
  return r->open_file(rel);
}

}  // namespace kiln::boot
