#include "core/io.h"

#include <unistd.h>

#include <cstring>

namespace kiln {
namespace {

Error io_error(const char* what) {
  return make_error(Errc::kInternal, std::string(what) + ": " + std::strerror(errno));
}

}  // namespace

Status write_full(int fd, std::string_view data) {
  while (!data.empty()) {
    const ssize_t n = retry_eintr([&] { return ::write(fd, data.data(), data.size()); });
    if (n < 0) return io_error("write");
    if (n == 0) return make_error(Errc::kInternal, "write: wrote nothing");
    data.remove_prefix(static_cast<std::size_t>(n));
  }
  return ok_status();
}

Status pwrite_full(int fd, std::string_view data, std::uint64_t offset) {
  while (!data.empty()) {
    const ssize_t n = retry_eintr(
        [&] { return ::pwrite(fd, data.data(), data.size(), static_cast<off_t>(offset)); });
    if (n < 0) return io_error("pwrite");
    if (n == 0) return make_error(Errc::kInternal, "pwrite: wrote nothing");
    data.remove_prefix(static_cast<std::size_t>(n));
    offset += static_cast<std::uint64_t>(n);
  }
  return ok_status();
}

Result<std::size_t> read_full(int fd, void* buf, std::size_t n) {
  auto* p = static_cast<char*>(buf);
  std::size_t got = 0;
  while (got < n) {
    const ssize_t r = retry_eintr([&] { return ::read(fd, p + got, n - got); });
    if (r < 0) return io_error("read");
    if (r == 0) break;
    got += static_cast<std::size_t>(r);
  }
  return got;
}

Result<std::size_t> pread_full(int fd, void* buf, std::size_t n, std::uint64_t offset) {
  auto* p = static_cast<char*>(buf);
  std::size_t got = 0;
  while (got < n) {
    const ssize_t r = retry_eintr(
        [&] { return ::pread(fd, p + got, n - got, static_cast<off_t>(offset + got)); });
    if (r < 0) return io_error("pread");
    if (r == 0) break;
    got += static_cast<std::size_t>(r);
  }
  return got;
}

}  // namespace kiln
