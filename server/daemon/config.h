// daemon/config.h — kilnd's configuration: a JSON file with every field defaulted, then
// command-line flags on top.
//
// Every setting is one row of one table (config_fields()): its key in the file, its one-line
// doc, its flag if it has one, and how it is parsed and printed. That table alone drives the
// unknown-key check, parsing, `kilnd --print-config`, kilnd's flags and the example file
// deploy/kilnd.example.json (`kilnd --print-example-config`); a setting is added in one place.
#pragma once

#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "api/api.h"
#include "core/result.h"
#include "dhcp/ra.h"
#include "dhcp/server.h"
#include "http/server.h"
#include "images/image_service.h"
#include "images/peer_fetch.h"
#include "provision/boot_service.h"
#include "provision/power_service.h"
#include "provision/rollout_service.h"
#include "tftp/server.h"

namespace kiln::daemon {

struct Config {
  std::string data_dir = "./var";   // state and served files live here unless set otherwise
  std::string db_path;              // default: <data_dir>/kiln.db
  std::string db_url;               // PostgreSQL (URI or conninfo); empty: SQLite at db_path
  std::string files_dir;            // served at /files/; default: <data_dir>/files
  int threads = 0;                  // io threads; 0 = number of cores
  std::string log_level = "info";   // trace, debug, info, warn, error
  int shutdown_grace_ms = 10'000;   // how long in-flight requests may take at SIGTERM
  std::string ready_file;           // written with the base URL once listening
  bool db_synchronous_full = true;  // "full": fsync every commit; "normal": survive crashes only
  int db_busy_timeout_ms = 5'000;
  std::string images_dir;                 // the chunk store; default: <data_dir>/images
  std::vector<std::string> trusted_keys;  // Ed25519 public keys (PEM); set: uploads must be signed
  images::ImportLimits image_limits;      // declared size, chunks, concurrent uploads, free space
  std::vector<std::string> boot_roots;    // boot artifacts searched after files_dir, in order
  provision::BootOptions boot;            // the iPXE scripts: /boot/<mac>.ipxe
  std::string boot_https_url;             // how machines reach http.tls_listen ("": derived)
  http::ServerOptions http;
  bool tftp_enabled = false;  // tftp.listen set
  tftp::ServerOptions tftp;
  std::string dhcp_mode = "off";  // off | authoritative | proxy
  dhcp::ServerOptions dhcp;
  dhcp::RaOptions ra;  // IPv6 router advertisements (lifetime 0) on the provisioning network
  api::ApiOptions api;
  provision::PowerOptions power;                  // BMC control, reimage-on-assign, deadlines
  provision::RolloutOptions rollouts;             // the rollout engine
  std::chrono::milliseconds bmc_timeout{10'000};  // per BMC request
  int bmc_retries = 2;                            // extra attempts per BMC request
  std::string secrets_key_file;  // seals BMC credentials; default: <data_dir>/secrets.key
  bool ui_enabled = true;        // the web dashboard at /ui/ (its data is behind API tokens)
  // Several instances: where missing chunks/manifests come from (peers, then the upstream) and
  // the servers handed to agents as fallbacks (this one first, then the peers).
  images::PeerFetchOptions cluster;  // its token is read from cluster_token_file at start
  std::string cluster_token_file;    // the shared secret peers authenticate with ("": none)

  std::string effective_db_path() const;
  std::string effective_secrets_key_file() const;
  std::string effective_files_dir() const;
  std::string effective_images_dir() const;
};

// One setting: a row of the config table.
struct ConfigField {
  std::string_view key;   // dotted path in the file: "http.listen"
  std::string_view type;  // what the value must be, for messages and --help: "integer", ...
  std::string_view doc;   // one line: the example file's comment and the flag's help
  std::string_view flag;  // CLI11 names ("-l,--listen"); "" when the setting has no flag
  // The flag takes no value and sets this boolean setting to false ("--no-auth").
  bool flag_clears = false;
  // The printed value is derived from other settings when unset (db_path from data_dir): the
  // doc says how, and the example shows the unset value.
  bool derived_default = false;
  // Sets the field from its JSON value. Throws std::runtime_error with a message that names
  // the key ("http.body_limit must be an integer ...") on a wrong type or a bad value.
  std::function<void(const nlohmann::json&, Config&)> parse;
  // The field's value as the file writes it (parse(dump(c)) leaves c unchanged).
  std::function<nlohmann::json(const Config&)> dump;
  // What the example file shows where that differs from the default; null: the default.
  nlohmann::json example;
};

// The table, in the example file's order. Static; thread-safe.
const std::vector<ConfigField>& config_fields();

// Parses config text (JSON; comments allowed) over `base`. Unknown keys are errors (a typo must
// not silently fall back to a default), as are wrong types and bad values; messages name the
// key. Text that is not a JSON object is kBadRequest, every other error kInvalid.
Result<Config> parse_config(std::string_view text, Config base = {});
// Reads a config file and parses it over `base`; messages start "config file <path>".
Result<Config> load_config_file(const std::string& path, Config base = {});
// Sets `field` from its command-line flag's text (ignored for flag_clears flags).
Status apply_flag(const ConfigField& field, const std::string& text, Config& c);
// The effective configuration as JSON (same shape as the file).
std::string dump_config(const Config& c);
// The commented example file (deploy/kilnd.example.json) made from the table.
std::string example_config();

}  // namespace kiln::daemon
