// kilnd — the kiln provisioning daemon. See README.md and `kilnd --help`.
#include <CLI/CLI.hpp>
#include <iostream>

#include "daemon/daemon.h"

int main(int argc, char** argv) {
  using kiln::daemon::Config;
  CLI::App app{"kilnd: bare-metal image provisioning daemon (DHCP/TFTP/HTTP boot, REST API)"};
  app.require_subcommand(0, 1);
  std::string config_file;
  std::string listen, tftp_listen, db, level;
  Config defaults;
  Config overrides;
  int threads = -1;
  bool no_auth = false;
  bool print_config = false;
  app.add_option("-c,--config", config_file, "JSON config file (every field optional)");
  app.add_option("--data-dir", overrides.data_dir, "state directory (default ./var)");
  app.add_option("--db", db, "SQLite database path (default <data-dir>/kiln.db)");
  app.add_option("--files-dir", overrides.files_dir,
                 "directory served at /files/ (default <data-dir>/files)");
  app.add_option("-l,--listen", listen,
                 "HTTP listen address host:port (default 127.0.0.1:8080; port 0 = ephemeral)");
  app.add_option("--tftp-listen", tftp_listen,
                 "TFTP listen address host:port (default off; port 0 = ephemeral)");
  app.add_option("--threads", threads, "io threads (default: number of cores)");
  app.add_option("--log-level", level, "trace|debug|info|warn|error (default info)");
  app.add_option("--tls-cert", overrides.http.tls_cert_file, "PEM certificate chain: serve HTTPS");
  app.add_option("--tls-key", overrides.http.tls_key_file, "PEM private key for --tls-cert");
  app.add_option("--ready-file", overrides.ready_file, "write the base URL here once listening");
  app.add_flag("--no-auth", no_auth, "disable API authentication (development only)");
  app.add_flag("--print-config", print_config, "print the effective configuration and exit");

  auto* token = app.add_subcommand("token", "manage API tokens in the database (offline)");
  token->require_subcommand(1);
  std::string token_name, token_scope = "admin";
  std::int64_t token_id = 0;
  auto* token_create = token->add_subcommand("create", "create a token and print it once");
  token_create->add_option("--name", token_name, "who or what uses the token")->required();
  token_create->add_option("--scope", token_scope, "read|admin (default admin)");
  auto* token_list = token->add_subcommand("list", "list tokens (never their values)");
  auto* token_revoke = token->add_subcommand("revoke", "revoke a token by id");
  token_revoke->add_option("id", token_id, "token id")->required();
  auto* db_check = app.add_subcommand("db-check", "apply migrations and run an integrity check");
  auto* routes = app.add_subcommand("routes", "print the API routes");

  CLI11_PARSE(app, argc, argv);

  Config config = defaults;
  if (!config_file.empty()) {
    auto loaded = kiln::daemon::load_config_file(config_file, config);
    if (!loaded) {
      std::cerr << "kilnd: " << loaded.error().message << "\n";
      return 2;
    }
    config = *loaded;
  }
  if (app.count("--data-dir")) config.data_dir = overrides.data_dir;
  if (!db.empty()) config.db_path = db;
  if (app.count("--files-dir")) config.files_dir = overrides.files_dir;
  if (!listen.empty()) {
    if (auto st = kiln::daemon::parse_listen(listen, config.http); !st) {
      std::cerr << "kilnd: " << st.error().message << "\n";
      return 2;
    }
  }
  if (!tftp_listen.empty()) {
    if (auto st = kiln::daemon::parse_listen(tftp_listen, config.tftp); !st) {
      std::cerr << "kilnd: --tftp-listen: " << st.error().message << "\n";
      return 2;
    }
    config.tftp_enabled = true;
  }
  if (threads >= 0) config.threads = threads;
  if (!level.empty()) config.log_level = level;
  if (app.count("--tls-cert")) config.http.tls_cert_file = overrides.http.tls_cert_file;
  if (app.count("--tls-key")) config.http.tls_key_file = overrides.http.tls_key_file;
  if (app.count("--ready-file")) config.ready_file = overrides.ready_file;
  if (no_auth) config.api.auth_required = false;
  if (config.http.tls_cert_file.empty() != config.http.tls_key_file.empty()) {
    std::cerr << "kilnd: --tls-cert and --tls-key go together\n";
    return 2;
  }

  if (print_config) {
    std::cout << kiln::daemon::dump_config(config) << "\n";
    return 0;
  }
  if (*token_create) return kiln::daemon::token_create(config, token_name, token_scope);
  if (*token_list) return kiln::daemon::token_list(config);
  if (*token_revoke) return kiln::daemon::token_revoke(config, token_id);
  if (*db_check) return kiln::daemon::db_check(config);
  if (*routes) return kiln::daemon::print_routes();
  return kiln::daemon::serve(config, kiln::daemon::make_logger(config.log_level));
}
