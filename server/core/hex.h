// core/hex.h — hexadecimal text: the one encoder and decoder every module uses (digests,
// signatures, tokens, MAC-like identifiers). Lower-case out; either case in.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace kiln {

// Two lower-case hex digits per byte of `bytes`.
std::string hex_encode(std::string_view bytes);
// The bytes `hex` spells (either case); nullopt on an odd length or any non-hex character.
std::optional<std::string> hex_decode(std::string_view hex);
// The value (0-15) of one hex digit of either case; -1 for any other byte.
int hex_digit_value(char c);
// Whether `s` is a SHA-256 digest as kiln writes it: exactly 64 lower-case hex digits.
bool is_sha256_hex(std::string_view s);
// `s` with ASCII upper-case letters lowered; every other byte (including >= 0x80) unchanged.
std::string ascii_lower(std::string_view s);

}  // namespace kiln
