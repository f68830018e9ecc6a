// core/time.h — timestamps on the wire: RFC 3339 UTC with millisecond precision.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace kiln {

// 1700000000123 -> "2023-11-14T22:13:20.123Z"
std::string format_rfc3339_ms(std::int64_t epoch_ms);
// Inverse of format_rfc3339_ms (accepts only the "Z" form it produces); nullopt if malformed.
std::optional<std::int64_t> parse_rfc3339_ms(std::string_view s);

}  // namespace kiln
