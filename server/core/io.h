// core/io.h — whole reads and writes on file descriptors, and the one EINTR loop.
//
// A short read or write is never a silent success: `write_full` writes everything or fails,
// `read_full` fills the buffer unless the file ends first (and says how much it read).
// Errors name the operation and errno's text. Thread-safety: as the underlying syscalls.
#pragma once

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "core/result.h"

namespace kiln {

// Calls `f` until it does not fail with EINTR; returns its last result. `f` returns a
// syscall-style value (-1 with errno set on failure).
template <typename F>
auto retry_eintr(F&& f) -> decltype(f()) {
  for (;;) {
    auto r = f();
    if (r != -1 || errno != EINTR) return r;
  }
}

// Writes all of `data` to `fd` (at the file offset), retrying short writes and EINTR.
Status write_full(int fd, std::string_view data);
// Writes all of `data` at `offset`.
Status pwrite_full(int fd, std::string_view data, std::uint64_t offset);
// Reads until `n` bytes are in `buf` or the file ends; returns the bytes read (< n only at
// the end of the file).
Result<std::size_t> read_full(int fd, void* buf, std::size_t n);
// Reads at `offset` until `n` bytes are in `buf` or the file ends.
Result<std::size_t> pread_full(int fd, void* buf, std::size_t n, std::uint64_t offset);

}  // namespace kiln
