// cli/config.h — where the kiln CLI finds its server URL and token.
//
// Each setting comes from the first of: a command-line flag, an environment variable
// (KILN_URL, KILN_TOKEN), the config file (~/.config/kiln/config.json, or --config /
// KILN_CONFIG), and the built-in default. The config file is a JSON object:
//   {"url": "https://kiln.example:8443", "token": "...", "cacert": "/etc/kiln/ca.pem",
//    "insecure": false}
// with every field optional; unknown fields are errors (so typos do not go unnoticed).
#pragma once

#include <optional>
#include <string>

#include "core/result.h"

namespace kiln::cli {

inline constexpr const char* kDefaultUrl = "http://127.0.0.1:8080";

// The process environment as the CLI sees it (read by main, so the rest is testable).
struct Environment {
  std::optional<std::string> url;          // KILN_URL
  std::optional<std::string> token;        // KILN_TOKEN
  std::optional<std::string> config_path;  // KILN_CONFIG
  std::optional<std::string> home;         // HOME
};

struct FileConfig {
  std::optional<std::string> url;
  std::optional<std::string> token;
  std::optional<std::string> cacert;
  std::optional<bool> insecure;
};

// The config file to read: `flag` if set, else KILN_CONFIG, else ~/.config/kiln/config.json
// (nullopt when there is no HOME either).
std::optional<std::string> config_path(const std::optional<std::string>& flag,
                                       const Environment& env);

// Reads `path`. A missing file is an empty config unless `must_exist` (an explicitly named
// file); an unreadable or malformed one is an error (kInvalid) naming the path.
Result<FileConfig> load_config(const std::string& path, bool must_exist);

}  // namespace kiln::cli
