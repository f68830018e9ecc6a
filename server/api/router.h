// api/router.h — maps (method, path) to a route: "/api/v1/machines/{id}" style patterns.
//
// A pattern segment "{name}" matches one non-empty path segment and binds it (percent-decoded)
// as a parameter. Lookup distinguishes "no such path" (404) from "path exists, method does
// not" (405, with the allowed methods). Immutable after construction; lookups are thread-safe.
#pragma once

#include <boost/beast/http.hpp>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace kiln::api {

using Request = boost::beast::http::request<boost::beast::http::string_body>;
using Response = boost::beast::http::response<boost::beast::http::string_body>;
// Completes a request. Call exactly once, from any thread.
using Respond = std::function<void(Response&&)>;

// Who may call a route. kMetrics: public when ApiOptions::metrics_public, else kRead.
enum class Access { kPublic, kRead, kAdmin, kAgent, kMetrics };

struct RouteInfo {
  boost::beast::http::verb method;
  std::string pattern;
  Access access;
};

using Params = std::map<std::string, std::string, std::less<>>;

template <typename Fn>
class Router {
 public:
  struct Route {
    RouteInfo info;
    Fn fn;
    std::vector<std::string> segments;
  };
  struct Match {
    const Route* route = nullptr;
    Params params;
    std::string allow;  // set when the path matched but the method did not
  };

  void add(boost::beast::http::verb method, std::string pattern, Access access, Fn fn) {
    Route r{{method, pattern, access}, std::move(fn), split(pattern)};
    routes_.push_back(std::move(r));
  }

  // `path` is the raw (still percent-encoded) path without the query string.
  Match match(boost::beast::http::verb method, std::string_view path) const;

  std::vector<RouteInfo> infos() const {
    std::vector<RouteInfo> out;
    for (const auto& r : routes_) out.push_back(r.info);
    return out;
  }

  static std::vector<std::string> split(std::string_view path);

 private:
  std::vector<Route> routes_;
};

// Matches `segments` of a pattern against a path; binds {params}. Exposed for the template.
bool match_segments(const std::vector<std::string>& pattern, const std::vector<std::string>& path,
                    Params& params);

template <typename Fn>
std::vector<std::string> Router<Fn>::split(std::string_view path) {
  std::vector<std::string> out;
  while (!path.empty()) {
    if (path.front() == '/') {
      path.remove_prefix(1);
      continue;
    }
    auto slash = path.find('/');
    out.emplace_back(path.substr(0, slash));
    if (slash == std::string_view::npos) break;
    path.remove_prefix(slash);
  }
  return out;
}

template <typename Fn>
typename Router<Fn>::Match Router<Fn>::match(boost::beast::http::verb method,
                                             std::string_view path) const {
  Match m;
  const auto segs = split(path);
  for (const auto& r : routes_) {
    Params p;
    if (!match_segments(r.segments, segs, p)) continue;
    if (r.info.method == method) {
      m.route = &r;
      m.params = std::move(p);
      m.allow.clear();
      return m;
    }
    if (!m.allow.empty()) m.allow += ", ";
    m.allow += std::string(boost::beast::http::to_string(r.info.method));
  }
  return m;
}

}  // namespace kiln::api
