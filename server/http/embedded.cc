#include "http/embedded.h"

#include <nlohmann/json.hpp>

namespace kiln::http {
namespace {

namespace bhttp = boost::beast::http;

constexpr std::pair<std::string_view, std::string_view> kUiHeaders[] = {
    {"Content-Security-Policy", kUiContentSecurityPolicy},
    {"X-Content-Type-Options", "nosniff"},
    {"Referrer-Policy", "no-referrer"},
    {"X-Frame-Options", "DENY"},
    {"Cross-Origin-Opener-Policy", "same-origin"},
};

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

}  // namespace

const EmbeddedSite& ui_site() {
  static const EmbeddedSite site{ui_files(), "index.html", "no-cache", kUiHeaders};
  return site;
}

bool if_none_match(std::string_view header, std::string_view etag) {
  if (etag.rfind("W/", 0) == 0) etag.remove_prefix(2);
  while (!header.empty()) {
    const auto comma = header.find(',');
    auto tag = trim(header.substr(0, comma));
    if (tag == "*") return true;
    if (tag.rfind("W/", 0) == 0) tag.remove_prefix(2);
    if (!tag.empty() && tag == etag) return true;
    if (comma == std::string_view::npos) break;
    header.remove_prefix(comma + 1);
  }
  return false;
}

EmbeddedAnswer serve_embedded(const EmbeddedSite& site,
                              const bhttp::request<bhttp::string_body>& req, std::string_view rel,
                              unsigned version) {
  EmbeddedAnswer a{bhttp::response<bhttp::string_body>{bhttp::status::ok, version}, std::nullopt};
  auto& res = a.res;
  for (const auto& [k, v] : site.headers) res.set(k, v);
  const std::string_view name = rel.empty() ? site.index : rel;
  const EmbeddedFile* file = nullptr;
  for (const auto& f : site.files) {
    if (f.name == name) file = &f;
  }
  if (!file) {
    res.result(bhttp::status::not_found);
    res.set(bhttp::field::content_type, "application/json");
    res.set(bhttp::field::cache_control, "no-store");
    res.body() =
        nlohmann::json{{"error", {{"code", "not_found"}, {"message", "no such file"}}}}.dump();
    return a;
  }
  res.set(bhttp::field::etag, file->etag);
  res.set(bhttp::field::cache_control, site.cache_control);
  if (auto inm = req[bhttp::field::if_none_match]; !inm.empty() && if_none_match(inm, file->etag)) {
    res.result(bhttp::status::not_modified);
    return a;
  }
  res.set(bhttp::field::content_type, file->content_type);
  if (req.method() == bhttp::verb::head) {
    a.head_length = file->data.size();
  } else {
    res.body() = std::string(file->data);
  }
  return a;
}

}  // namespace kiln::http
