#include "core/log_util.h"

#include <cstdio>

namespace kiln {

std::string log_escape(std::string_view s, std::size_t max) {
  std::string out;
  for (const char c : s.substr(0, max)) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u >= 0x7f || c == '"' || c == '\\') {
      char hex[5];
      std::snprintf(hex, sizeof hex, "\\x%02x", u);
      out += hex;
    } else {
      out.push_back(c);
    }
  }
  return out;
}

std::string loggable_target(std::string_view target) {
  constexpr std::string_view kPhoneHome = "/phone-home/";
  const auto at = target.find(kPhoneHome);
  if (at == std::string_view::npos) return log_escape(target, 512);
  return log_escape(std::string(target.substr(0, at + kPhoneHome.size())) + "{token}", 512);
}

}  // namespace kiln
