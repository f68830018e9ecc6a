// core/mac.h — Ethernet MAC addresses as they appear in the API, DHCP and boot URLs.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace kiln {

// Accepts "aa:bb:cc:dd:ee:ff", "AA-BB-CC-DD-EE-FF" and "aabbccddeeff"; returns the canonical
// lower-case colon form, or nullopt if `s` is not a 48-bit MAC.
std::optional<std::string> normalize_mac(std::string_view s);

// A canonical MAC with hyphens for colons ("aa-bb-cc-dd-ee-ff", iPXE's ${net0/mac:hexhyp}): the
// form in boot script URLs, which the DHCP boot decision and the scripts themselves must share.
std::string mac_hyphenated(std::string_view canonical);

}  // namespace kiln
