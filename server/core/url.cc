#include "core/url.h"

namespace kiln {
namespace {

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

std::optional<std::string> percent_decode(std::string_view s, bool plus_is_space) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (c == '%') {
      if (i + 2 >= s.size()) return std::nullopt;
      int hi = hex_value(s[i + 1]), lo = hex_value(s[i + 2]);
      if (hi < 0 || lo < 0) return std::nullopt;
      c = static_cast<char>(hi * 16 + lo);
      i += 2;
    } else if (c == '+' && plus_is_space) {
      c = ' ';
    }
    if (c == '\0') return std::nullopt;
    out.push_back(c);
  }
  return out;
}

std::optional<std::map<std::string, std::string>> parse_query(std::string_view q) {
  std::map<std::string, std::string> out;
  while (!q.empty()) {
    auto amp = q.find('&');
    auto part = q.substr(0, amp);
    if (!part.empty()) {
      auto eq = part.find('=');
      auto k = percent_decode(part.substr(0, eq), true);
      auto v = eq == std::string_view::npos ? std::optional<std::string>("")
                                            : percent_decode(part.substr(eq + 1), true);
      if (!k || !v) return std::nullopt;
      out[*k] = *v;
    }
    if (amp == std::string_view::npos) break;
    q.remove_prefix(amp + 1);
  }
  return out;
}

namespace {

// A decimal port, 0-65535, digits only.
std::optional<std::uint16_t> parse_port(std::string_view p) {
  if (p.empty() || p.size() > 5) return std::nullopt;
  unsigned n = 0;
  for (char c : p) {
    if (c < '0' || c > '9') return std::nullopt;
    n = n * 10 + static_cast<unsigned>(c - '0');
  }
  if (n > 65535) return std::nullopt;
  return static_cast<std::uint16_t>(n);
}

}  // namespace

namespace {

// "host", "host:port", "[v6]" or "[v6]:port" split into the host (brackets removed) and the
// port text, if any. With `last_colon`, an unbracketed host may itself hold colons (a bare
// IPv6 address before its port); otherwise the first colon splits.
struct Authority {
  std::string host;
  std::optional<std::string_view> port;
};
Result<Authority> split_authority(std::string_view text, bool last_colon) {
  Authority out;
  if (!text.empty() && text.front() == '[') {
    const auto close = text.find(']');
    if (close == std::string_view::npos) return make_error(Errc::kInvalid, "unclosed '['");
    out.host = std::string(text.substr(1, close - 1));
    auto after = text.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') return make_error(Errc::kInvalid, "text after ']'");
      out.port = after.substr(1);
    }
    return out;
  }
  const auto colon = last_colon ? text.rfind(':') : text.find(':');
  out.host = std::string(text.substr(0, colon));
  if (colon != std::string_view::npos) out.port = text.substr(colon + 1);
  return out;
}

}  // namespace

Result<HostPort> parse_host_port(std::string_view text, bool allow_empty_host) {
  const auto bad = [&](const std::string& why) {
    return make_error(Errc::kInvalid, "'" + std::string(text) + "' is not host:port (" + why + ")");
  };
  auto a = split_authority(text, /*last_colon=*/true);
  if (!a) return bad(a.error().message);
  if (!a->port) return bad("no port");
  if (a->host.empty() && !allow_empty_host) return bad("no host");
  auto p = parse_port(*a->port);
  if (!p) return bad("port must be 0-65535");
  return HostPort{a->host, *p};
}

std::string HttpUrl::host_header() const {
  std::string h = host.find(':') != std::string::npos ? "[" + host + "]" : host;
  if (port != (tls ? 443 : 80)) h += ":" + std::to_string(port);
  return h;
}

Result<HttpUrl> parse_http_url(std::string_view url) {
  const auto bad = [&](const std::string& why) {
    return make_error(Errc::kInvalid, "URL '" + std::string(url) + "' " + why);
  };
  HttpUrl out;
  std::string_view rest;
  if (url.rfind("http://", 0) == 0) {
    rest = url.substr(7);
  } else if (url.rfind("https://", 0) == 0) {
    out.tls = true;
    rest = url.substr(8);
  } else {
    return bad("must start with http:// or https://");
  }
  if (rest.find_first_of("?#") != std::string_view::npos) {
    return bad("must not have a query or fragment");
  }
  const auto slash = rest.find('/');
  std::string_view authority = rest.substr(0, slash);
  std::string_view path = slash == std::string_view::npos ? "" : rest.substr(slash);
  if (authority.find('@') != std::string_view::npos) return bad("must not contain user info");
  auto a = split_authority(authority, /*last_colon=*/false);
  if (!a) return bad("is malformed (" + a.error().message + ")");
  out.host = std::move(a->host);
  if (out.host.empty()) return bad("has no host");
  if (!a->port || a->port->empty()) {
    out.port = out.tls ? 443 : 80;
  } else {
    auto p = parse_port(*a->port);
    if (!p || *p == 0) return bad("has a bad port '" + std::string(*a->port) + "'");
    out.port = *p;
  }
  while (!path.empty() && path.back() == '/') path.remove_suffix(1);
  out.path = std::string(path);
  out.url = std::string(url);
  while (!out.url.empty() && out.url.back() == '/') out.url.pop_back();
  return out;
}

}  // namespace kiln
