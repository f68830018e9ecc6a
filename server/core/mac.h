// core/mac.h — Ethernet MAC addresses as they appear in the API, DHCP and boot URLs.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace kiln {

// Accepts "aa:bb:cc:dd:ee:ff", "AA-BB-CC-DD-EE-FF" and "aabbccddeeff"; returns the canonical
// lower-case colon form, or nullopt if `s` is not a 48-bit MAC.
std::optional<std::string> normalize_mac(std::string_view s);

}  // namespace kiln
