#include "core/mac.h"

#include <algorithm>
#include <cctype>

namespace kiln {

std::optional<std::string> normalize_mac(std::string_view s) {
  std::string hex;
  hex.reserve(12);
  char sep = 0;
  for (std::size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (c == ':' || c == '-') {
      // Separators must sit between byte pairs and be used consistently.
      if (hex.size() % 2 != 0 || hex.empty() || (sep && sep != c)) return std::nullopt;
      sep = c;
      continue;
    }
    if (!std::isxdigit(static_cast<unsigned char>(c))) return std::nullopt;
    hex.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  }
  if (hex.size() != 12) return std::nullopt;
  if (sep && s.size() != 17) return std::nullopt;
  std::string out;
  for (int i = 0; i < 6; ++i) {
    if (i) out.push_back(':');
    out.append(hex, static_cast<std::size_t>(i) * 2, 2);
  }
  return out;
}

std::string mac_hyphenated(std::string_view canonical) {
  std::string out(canonical);
  std::replace(out.begin(), out.end(), ':', '-');
  return out;
}

}  // namespace kiln
