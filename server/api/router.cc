#include "api/router.h"

#include "core/url.h"

namespace kiln::api {

bool match_segments(const std::vector<std::string>& pattern, const std::vector<std::string>& path,
                    Params& params) {
  if (pattern.size() != path.size()) return false;
  for (std::size_t i = 0; i < pattern.size(); ++i) {
    const auto& p = pattern[i];
    if (p.size() > 2 && p.front() == '{' && p.back() == '}') {
      auto v = percent_decode(path[i]);
      if (!v || v->empty()) return false;
      params[p.substr(1, p.size() - 2)] = std::move(*v);
    } else if (p != path[i]) {
      return false;
    }
  }
  return true;
}

}  // namespace kiln::api
