// core/url.h — URL pieces shared by the HTTP server and the API: percent-decoding, query strings.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <string_view>

namespace kiln {

// Decodes %XX escapes (and '+' as space when `plus_is_space`). nullopt on a malformed escape
// or a decoded NUL byte.
std::optional<std::string> percent_decode(std::string_view s, bool plus_is_space = false);

// Splits "a=1&b=x%20y" into decoded pairs; a key without '=' maps to "". nullopt if any part
// is malformed. Later duplicates override earlier ones.
std::optional<std::map<std::string, std::string>> parse_query(std::string_view query);

}  // namespace kiln
