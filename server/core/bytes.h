// core/bytes.h — small byte-buffer predicates shared by the image codec, the builder and the
// agent's writer.
#pragma once

#include <cstring>
#include <string_view>

namespace kiln {

// Whether every byte of `d` is zero (true for an empty buffer). One memcmp of the buffer
// against itself shifted by a byte: vectorized by libc, no allocation.
inline bool is_all_zero(std::string_view d) {
  return d.empty() || (d[0] == 0 && std::memcmp(d.data(), d.data() + 1, d.size() - 1) == 0);
}

}  // namespace kiln
