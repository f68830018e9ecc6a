// http/embedded.h — files compiled into kilnd and served from memory: the web dashboard
// (ui/, embedded by cmake/embed_ui.cmake). Pure: request in, response out, no socket.
//
// A file is answered with its content type, a strong ETag (its SHA-256), the site's
// Cache-Control and the site's extra headers (the dashboard's Content-Security-Policy and
// friends), on every status including 304 and 404. If-None-Match with a matching tag is a 304.
// The tables are immutable; everything here is thread-safe.
#pragma once

#include <boost/beast/http.hpp>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <utility>

namespace kiln::http {

struct EmbeddedFile {
  std::string_view name;          // served as <mount prefix><name>; no '/'
  std::string_view content_type;  // e.g. "text/javascript; charset=utf-8"
  std::string_view etag;          // quoted: "\"<sha256 hex>\""
  std::string_view data;
};

struct EmbeddedSite {
  std::span<const EmbeddedFile> files;
  std::string_view index;          // answers the bare prefix ("/ui/" -> "index.html")
  std::string_view cache_control;  // e.g. "no-cache": revalidate (cheap 304) on every use
  std::span<const std::pair<std::string_view, std::string_view>> headers;  // on every answer
};

// The web dashboard's files (generated from ui/ at build time), in name order.
std::span<const EmbeddedFile> ui_files();
// The dashboard served under /ui/: ui_files(), index.html, "no-cache", and the security
// headers (kUiContentSecurityPolicy, nosniff, no-referrer, frame denial).
const EmbeddedSite& ui_site();
inline constexpr std::string_view kUiContentSecurityPolicy =
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

struct EmbeddedAnswer {
  boost::beast::http::response<boost::beast::http::string_body> res;
  // HEAD: the length a GET's body would have (the response's body is empty).
  std::optional<std::uint64_t> head_length;
};

// Answers a GET or HEAD for `rel`, the still percent-encoded path below the mount's prefix
// (no query string): "" is the index, a file's name is the file, anything else a 404.
EmbeddedAnswer serve_embedded(
    const EmbeddedSite& site,
    const boost::beast::http::request<boost::beast::http::string_body>& req, std::string_view rel,
    unsigned version = 11);

// Whether an If-None-Match header value ("*", or a list of entity tags, weak or strong)
// matches `etag` (weak comparison, RFC 9110 §13.1.2).
bool if_none_match(std::string_view header, std::string_view etag);

}  // namespace kiln::http
