// daemon/daemon.h — kilnd's process: wires store, API and HTTP server onto one io_context,
// runs it on N threads, and shuts down cleanly on SIGTERM/SIGINT. Also the offline
// administrative commands that work on the database directly (token bootstrap, db check).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "daemon/config.h"

namespace spdlog {
class logger;
}

namespace kiln::daemon {

std::shared_ptr<spdlog::logger> make_logger(const std::string& level);

// Where machines reach kilnd, from the configuration and the bound listeners' ports (`port`:
// http.listen's, `tls_port`: http.tls_listen's, 0 when there is none; `listener_tls`: the one
// listener speaks TLS). A wildcard listen address cannot be put in a machine's script, so it
// derives nothing.
struct BootUrls {
  // boot.server_url, else dhcp.boot.http_base, else http.listen's address.
  std::string plain;
  // With a TLS listener: boot.https_url, else https://<plain's host>:<tls_port>, else
  // tls_listen's address; "" without a TLS listener (or when nothing can be derived).
  std::string https;
};
BootUrls boot_urls(const Config& c, std::uint16_t port, std::uint16_t tls_port, bool listener_tls);

// Serves until SIGTERM/SIGINT. Returns the process exit code.
int serve(const Config& config, std::shared_ptr<spdlog::logger> log);

// Offline commands (exit codes): create an API token and print it once; list; revoke.
int token_create(const Config& config, const std::string& name, const std::string& scope);
int token_list(const Config& config);
int token_revoke(const Config& config, std::int64_t id);
// Applies migrations and runs PRAGMA integrity_check.
int db_check(const Config& config);
// `kilnd db-copy`: copies the SQLite database (db_path) into the empty PostgreSQL database `to`
// (empty: the config's db_url), prints a line per table; 0 when copied and verified.
int db_copy(const Config& config, const std::string& to);
// Prints every API route (method and pattern), one per line.
int print_routes();

}  // namespace kiln::daemon
