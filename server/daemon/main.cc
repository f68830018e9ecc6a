// kilnd — the kiln provisioning daemon. See README.md and `kilnd --help`.
#include <CLI/CLI.hpp>
#include <iostream>
#include <list>

#include "daemon/config.h"
#include "daemon/daemon.h"

namespace {

// The flag's help: the setting's doc, its default and its key in the config file.
std::string flag_help(const kiln::daemon::ConfigField& f) {
  static const kiln::daemon::Config kDefaults;
  std::string help = f.flag_clears ? "turn off: " + std::string(f.doc) : std::string(f.doc);
  if (!f.derived_default && !f.flag_clears) help += "; default " + f.dump(kDefaults).dump();
  return help + " (config: " + std::string(f.key) + ")";
}

}  // namespace

int main(int argc, char** argv) {
  using kiln::daemon::Config;
  using kiln::daemon::ConfigField;
  CLI::App app{"kilnd: bare-metal image provisioning daemon (DHCP/TFTP/HTTP boot, REST API)"};
  app.require_subcommand(0, 1);
  std::string config_file;
  bool print_config = false;
  bool print_example = false;
  app.add_option("-c,--config", config_file,
                 "JSON config file (every field optional; see --print-example-config)");
  // One flag per setting that has one (the config table); applied over the file.
  struct FlagValue {
    const ConfigField* field;
    CLI::Option* option;
    std::string text;
  };
  std::list<FlagValue> flags;  // stable addresses: CLI11 writes into `text`
  for (const auto& f : kiln::daemon::config_fields()) {
    if (f.flag.empty()) continue;
    auto& fv = flags.emplace_back(FlagValue{&f, nullptr, {}});
    const std::string help = flag_help(f);
    fv.option = f.flag_clears ? app.add_flag(std::string(f.flag), help)
                              : app.add_option(std::string(f.flag), fv.text, help);
    if (f.type == "an integer") fv.option->type_name("INT");
  }
  app.add_flag("--print-config", print_config, "print the effective configuration and exit");
  app.add_flag("--print-example-config", print_example,
               "print the commented example config file (deploy/kilnd.example.json) and exit");

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
  auto* db_copy = app.add_subcommand(
      "db-copy",
      "copy the SQLite database (db_path) into an empty PostgreSQL database, verified; stop "
      "kilnd first");
  std::string db_copy_to;
  db_copy->add_option("--to", db_copy_to,
                      "the PostgreSQL database (URL or conninfo; default: db_url)");
  auto* routes = app.add_subcommand("routes", "print the API routes");

  CLI11_PARSE(app, argc, argv);

  if (print_example) {
    std::cout << kiln::daemon::example_config();
    return 0;
  }
  Config config;
  if (!config_file.empty()) {
    auto loaded = kiln::daemon::load_config_file(config_file, config);
    if (!loaded) {
      std::cerr << "kilnd: " << loaded.error().message << "\n";
      return 2;
    }
    config = *loaded;
  }
  for (const auto& fv : flags) {
    if (!fv.option->count()) continue;
    if (auto st = kiln::daemon::apply_flag(*fv.field, fv.text, config); !st) {
      std::cerr << "kilnd: " << fv.option->get_name() << ": " << st.error().message << "\n";
      return 2;
    }
  }
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
  if (*db_copy) return kiln::daemon::db_copy(config, db_copy_to);
  if (*routes) return kiln::daemon::print_routes();
  return kiln::daemon::serve(config, kiln::daemon::make_logger(config.log_level));
}
