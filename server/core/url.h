// core/url.h — URL pieces shared by every module: percent-decoding, query strings,
// host:port (listen addresses) and http(s) base URLs (the CLI's and the agent's server).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "core/result.h"

namespace kiln {

// Decodes %XX escapes (and '+' as space when `plus_is_space`). nullopt on a malformed escape
// or a decoded NUL byte.
std::optional<std::string> percent_decode(std::string_view s, bool plus_is_space = false);

// Splits "a=1&b=x%20y" into decoded pairs; a key without '=' maps to "". nullopt if any part
// is malformed. Later duplicates override earlier ones.
std::optional<std::map<std::string, std::string>> parse_query(std::string_view query);

// "host:port", "[v6]:port" or "v6addr:port" (the last colon splits). The port is 0-65535
// in decimal, nothing else; the host is not resolved and may be empty only if `allow_empty_host`.
struct HostPort {
  std::string host;  // without brackets
  std::uint16_t port = 0;
};
Result<HostPort> parse_host_port(std::string_view text, bool allow_empty_host = false);

// "http[s]://host[:port][/prefix]" with no user info, query or fragment. The port defaults to
// 80/443 and must be 1-65535; the prefix keeps no trailing slash.
struct HttpUrl {
  bool tls = false;
  std::string host;  // without brackets
  std::uint16_t port = 0;
  std::string path;  // "" or "/prefix"
  std::string url;   // as given, without trailing slashes
  // "host" or "host:port" (bracketed for IPv6) as an HTTP Host header says it.
  std::string host_header() const;
};
Result<HttpUrl> parse_http_url(std::string_view url);

}  // namespace kiln
