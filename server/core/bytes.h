// core/bytes.h — small byte-buffer predicates shared by the image codec, the builder and the
// agent's writer.
#pragma once

#include <cstdint>
#include <cstring>
#include <string_view>

namespace kiln {

// Whether every byte of `d` is zero (true for an empty buffer). One memcmp of the buffer
// against itself shifted by a byte: vectorized by libc, no allocation.
inline bool is_all_zero(std::string_view d) {
  return d.empty() || (d[0] == 0 && std::memcmp(d.data(), d.data() + 1, d.size() - 1) == 0);
}

// Little-endian fields of `n` bytes (1..8) at `p`: on-disk structures (GPT, MBR, FAT).
inline std::uint64_t get_le(const char* p, int n) {
  std::uint64_t v = 0;
  for (int i = n - 1; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}
inline void put_le(char* p, std::uint64_t v, int n) {
  for (int i = 0; i < n; ++i) p[i] = static_cast<char>((v >> (8 * i)) & 0xff);
}

}  // namespace kiln
