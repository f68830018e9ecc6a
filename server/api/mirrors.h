// api/mirrors.h — which chunk mirrors (rack-local HTTP caches) an agent is told to use: kilnd's
// `mirrors` rules, each a subnet and its mirror URLs, matched against the address the agent's
// plan request came from. The most specific subnet holding the address wins; its URLs go into
// the plan in order (an empty list turns a broader rule off for that subnet). Pure: no I/O.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.h"

namespace kiln::api {

struct MirrorRule {
  std::string subnet;             // as configured: "10.1.0.0/24", "fd00:1::/64"
  std::vector<std::string> urls;  // http:// or https:// base URLs, in order of preference
  // Parsed from `subnet`: IPv4 as an IPv4-mapped IPv6 network, prefix counted over 128 bits.
  std::array<std::uint8_t, 16> network{};
  int prefix = 0;
};

// A rule from its configured text. Errors (kInvalid) name the bad part: a subnet that is not
// a.b.c.d/n or v6/n, one with host bits set, a URL that is not http:// or https://.
Result<MirrorRule> make_mirror_rule(std::string subnet, std::vector<std::string> urls);

// The URLs of the most specific rule holding `peer` (an IPv4 or IPv6 address as the HTTP
// server reports it; IPv4-mapped IPv6 counts as IPv4, a zone "%eth0" is ignored); empty when
// no rule holds it or `peer` is not an address. Two rules for one subnet: the first.
std::vector<std::string> mirrors_for(const std::vector<MirrorRule>& rules, std::string_view peer);

}  // namespace kiln::api
