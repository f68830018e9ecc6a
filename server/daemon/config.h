// daemon/config.h — kilnd's configuration: a JSON file with every field defaulted, then
// command-line flags on top. `kilnd --help` and deploy/kilnd.example.json document the fields.
#pragma once

#include <string>
#include <vector>

#include "api/api.h"
#include "core/result.h"
#include "dhcp/ra.h"
#include "dhcp/server.h"
#include "http/server.h"
#include "provision/boot_service.h"
#include "tftp/server.h"

namespace kiln::daemon {

struct Config {
  std::string data_dir = "./var";   // state and served files live here unless set otherwise
  std::string db_path;              // default: <data_dir>/kiln.db
  std::string files_dir;            // served at /files/; default: <data_dir>/files
  int threads = 0;                  // io threads; 0 = number of cores
  std::string log_level = "info";   // trace, debug, info, warn, error
  int shutdown_grace_ms = 10'000;   // how long in-flight requests may take at SIGTERM
  std::string ready_file;           // written with the base URL once listening
  bool db_synchronous_full = true;  // "full": fsync every commit; "normal": survive crashes only
  int db_busy_timeout_ms = 5'000;
  std::string images_dir;                 // the chunk store; default: <data_dir>/images
  std::vector<std::string> trusted_keys;  // Ed25519 public keys (PEM); set: uploads must be signed
  std::vector<std::string> boot_roots;    // boot artifacts searched after files_dir, in order
  provision::BootOptions boot;            // the iPXE scripts: /boot/<mac>.ipxe
  http::ServerOptions http;
  bool tftp_enabled = false;  // tftp.listen set
  tftp::ServerOptions tftp;
  std::string dhcp_mode = "off";  // off | authoritative | proxy
  dhcp::ServerOptions dhcp;
  dhcp::RaOptions ra;  // IPv6 router advertisements (lifetime 0) on the provisioning network
  api::ApiOptions api;

  std::string effective_db_path() const;
  std::string effective_files_dir() const;
  std::string effective_images_dir() const;
};

// Reads a JSON config file over the defaults in `base`. Unknown keys are errors (a typo must
// not silently fall back to a default).
Result<Config> load_config_file(const std::string& path, Config base = {});
// Parses "host:port" (IPv6 hosts in brackets) into the http or tftp options.
Status parse_listen(const std::string& listen, http::ServerOptions& out);
Status parse_listen(const std::string& listen, tftp::ServerOptions& out);
// The effective configuration as JSON (same shape as the file).
std::string dump_config(const Config& c);

}  // namespace kiln::daemon
