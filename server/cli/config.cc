#include "cli/config.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <system_error>

namespace kiln::cli {

std::optional<std::string> config_path(const std::optional<std::string>& flag,
                                       const Environment& env) {
  if (flag && !flag->empty()) return flag;
  if (env.config_path && !env.config_path->empty()) return env.config_path;
  if (env.home && !env.home->empty()) return *env.home + "/.config/kiln/config.json";
  return std::nullopt;
}

Result<FileConfig> load_config(const std::string& path, bool must_exist) {
  std::ifstream in(path);
  if (!in) {
    const int err = errno;
    if (err == ENOENT && !must_exist) return FileConfig{};
    return make_error(Errc::kInvalid,
                      "cannot read config file '" + path + "': " + std::strerror(err));
  }
  std::stringstream text;
  text << in.rdbuf();
  auto j = nlohmann::json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return make_error(Errc::kInvalid, "config file '" + path + "' is not a JSON object");
  }
  FileConfig out;
  for (const auto& [key, value] : j.items()) {
    auto wrong_type = [&](const char* type) {
      return make_error(Errc::kInvalid,
                        "config file '" + path + "': '" + key + "' must be " + type);
    };
    if (key == "url" || key == "token" || key == "cacert") {
      if (!value.is_string()) return wrong_type("a string");
      auto& field = key == "url" ? out.url : key == "token" ? out.token : out.cacert;
      field = value.get<std::string>();
    } else if (key == "insecure") {
      if (!value.is_boolean()) return wrong_type("true or false");
      out.insecure = value.get<bool>();
    } else {
      return make_error(Errc::kInvalid, "config file '" + path + "': unknown field '" + key +
                                            "' (known: url, token, cacert, insecure)");
    }
  }
  return out;
}

}  // namespace kiln::cli
