#include "core/url.h"

#include "core/hex.h"

namespace kiln {

std::optional<std::string> percent_decode(std::string_view s, bool plus_is_space) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (c == '%') {
      if (i + 2 >= s.size()) return std::nullopt;
      int hi = hex_digit_value(s[i + 1]), lo = hex_digit_value(s[i + 2]);
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

// "host", "host:port", "[v6]" or "[v6]:port" split at the port's colon. An unbracketed host
// ends at the last colon when `last_colon` (so "v6addr:port" works), else at the first.
struct SplitHost {
  std::string host;                      // without brackets
  std::optional<std::string_view> port;  // the text after the colon; nullopt without one
  bool unclosed = false;                 // '[' without ']'
  bool malformed = false;                // something other than ":port" after ']'
};
SplitHost split_host(std::string_view text, bool last_colon) {
  SplitHost out;
  if (!text.empty() && text.front() == '[') {
    const auto close = text.find(']');
    if (close == std::string_view::npos) {
      out.unclosed = true;
      return out;
    }
    out.host = std::string(text.substr(1, close - 1));
    const auto after = text.substr(close + 1);
    if (!after.empty() && after.front() != ':') out.malformed = true;
    if (!after.empty()) out.port = after.substr(1);
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
  auto split = split_host(text, /*last_colon=*/true);
  if (split.unclosed) return bad("unclosed '['");
  if (split.malformed || !split.port) return bad("no port");
  HostPort out;
  out.host = std::move(split.host);
  const std::string_view port = *split.port;
  if (out.host.empty() && !allow_empty_host) return bad("no host");
  auto p = parse_port(port);
  if (!p) return bad("port must be 0-65535");
  out.port = *p;
  return out;
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
  auto split = split_host(authority, /*last_colon=*/false);
  if (split.unclosed) return bad("has an unclosed '['");
  if (split.malformed) return bad("is malformed");
  out.host = std::move(split.host);
  const std::string_view port = split.port.value_or("");
  if (out.host.empty()) return bad("has no host");
  if (port.empty()) {
    out.port = out.tls ? 443 : 80;
  } else {
    auto p = parse_port(port);
    if (!p || *p == 0) return bad("has a bad port '" + std::string(port) + "'");
    out.port = *p;
  }
  while (!path.empty() && path.back() == '/') path.remove_suffix(1);
  out.path = std::string(path);
  out.url = std::string(url);
  while (!out.url.empty() && out.url.back() == '/') out.url.pop_back();
  return out;
}

}  // namespace kiln
