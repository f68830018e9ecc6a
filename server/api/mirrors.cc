#include "api/mirrors.h"

#include <arpa/inet.h>

#include <algorithm>
#include <charconv>
#include <cstring>
#include <optional>

#include "core/url.h"

namespace kiln::api {
namespace {

using Addr = std::array<std::uint8_t, 16>;

// An IPv4 address as ::ffff:a.b.c.d, so one comparison covers both families.
std::optional<Addr> parse_address(std::string_view text, bool& v4) {
  std::string s(text.substr(0, text.find('%')));
  Addr a{};
  in_addr a4{};
  if (::inet_pton(AF_INET, s.c_str(), &a4) == 1) {
    a[10] = a[11] = 0xff;
    std::memcpy(a.data() + 12, &a4, 4);
    v4 = true;
    return a;
  }
  if (::inet_pton(AF_INET6, s.c_str(), a.data()) == 1) {
    static constexpr std::uint8_t kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    v4 = std::memcmp(a.data(), kMapped, 12) == 0;
    return a;
  }
  return std::nullopt;
}

// The first `prefix` bits of `a`, the rest zero.
Addr masked(const Addr& a, int prefix) {
  Addr m{};
  for (int i = 0; i < 16; ++i) {
    const int bits = std::clamp(prefix - 8 * i, 0, 8);
    m[i] = a[i] & static_cast<std::uint8_t>(0xff << (8 - bits));
  }
  return m;
}

bool in_network(const Addr& a, const Addr& net, int prefix) {
  return masked(a, prefix) == masked(net, prefix);
}

}  // namespace

Result<MirrorRule> make_mirror_rule(std::string subnet, std::vector<std::string> urls) {
  auto bad = [&](const std::string& why) {
    return make_error(Errc::kInvalid, "mirrors: subnet '" + subnet + "' " + why);
  };
  const auto slash = subnet.find('/');
  if (slash == std::string::npos) return bad("is not address/prefix (e.g. 10.1.0.0/24)");
  bool v4 = false;
  auto net = parse_address(std::string_view(subnet).substr(0, slash), v4);
  if (!net || subnet.find('%') != std::string::npos) {
    return bad("is not address/prefix (e.g. 10.1.0.0/24)");
  }
  int len = -1;
  const char* first = subnet.data() + slash + 1;
  const char* last = subnet.data() + subnet.size();
  auto [end, ec] = std::from_chars(first, last, len);
  const int max = v4 ? 32 : 128;
  if (first == last || ec != std::errc() || end != last || len < 0 || len > max) {
    return bad("has a prefix length that is not 0-" + std::to_string(max));
  }
  MirrorRule r;
  r.network = *net;
  r.prefix = v4 ? 96 + len : len;
  if (masked(r.network, r.prefix) != r.network) {
    return bad("has host bits set (write the network address)");
  }
  for (const auto& u : urls) {
    auto parsed = parse_http_url(u);
    if (!parsed) {
      return make_error(Errc::kInvalid,
                        "mirrors: subnet " + subnet + ": " + parsed.error().message);
    }
  }
  r.subnet = std::move(subnet);
  r.urls = std::move(urls);
  return r;
}

std::vector<std::string> mirrors_for(const std::vector<MirrorRule>& rules, std::string_view peer) {
  bool v4 = false;
  auto a = parse_address(peer, v4);
  if (!a) return {};
  const MirrorRule* best = nullptr;
  for (const auto& r : rules) {
    if (in_network(*a, r.network, r.prefix) && (!best || r.prefix > best->prefix)) best = &r;
  }
  return best ? best->urls : std::vector<std::string>{};
}

}  // namespace kiln::api
