// cli/api_commands.h — the `kiln` commands that call kilnd's REST API, one function per
// subcommand, defined by resource: machine_commands.cc, deployment_commands.cc (assignments,
// rollbacks, histories, deployments), image_commands.cc, token_commands.cc,
// event_commands.cc. commands.cc binds them to the command line.
//
// Each takes the Session and the parsed arguments and returns the exit code (commands.h).
// With --json a command prints the server's body as received; otherwise it decodes the
// resources with proto's decoders and renders them (render.h), and a body that does not decode
// is an error (exit 1).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "cli/session.h"

namespace kiln::cli {

// Every value a command line can carry, bound to CLI11 options; each command reads its own.
struct Args {
  std::string id;  // machine id or MAC, deployment id, token id
  std::string selector;
  std::string state;
  std::optional<int> limit;
  std::vector<std::string> macs;
  std::string uuid;
  std::string name;
  std::vector<std::string> labels;
  std::string image;
  std::string version;
  bool force = false;
  std::string url;
  std::string sha256;
  std::int64_t size = 0;
  std::string format;
  std::string sign_key;  // image register --sign: the private key (PEM) to sign with
  std::string description;
  std::string scope = "read";
  std::int64_t since = 0;
  std::optional<std::int64_t> wait;
  bool follow = false;
  std::string machine;
  std::string path;
  // assign/rollback: --reboot / --no-reboot (unset: the server's power.reboot_on_assign)
  bool reboot = false, no_reboot = false;
  struct {
    std::string driver, address, username, password_file, ca_file, system_id, boot_mode;
    bool insecure = false;
  } bmc;
  std::string power_action;
  // machine config set / profile set: the configuration document (docs/config.md)
  struct {
    std::string file, hostname, fqdn, user_data_file, vendor_data_file, network_config_file;
    std::vector<std::string> ssh_key_files, metadata;
    bool no_config_drive = false;
    int priority = 0;
  } config;
  // rollout start (docs/rollouts.md); unset: the server's default
  struct {
    std::string batch, on_failure, gate, spread_by;
    std::optional<int> canary, max_unavailable, max_failures, gate_timeout_s, pause_between_s;
  } rollout;
};

using ApiCommand = int (*)(Session&, const Args&);

// machine_commands.cc
int machine_list(Session& s, const Args& a);
int machine_show(Session& s, const Args& a);
int machine_create(Session& s, const Args& a);
int machine_label(Session& s, const Args& a);
int machine_delete(Session& s, const Args& a);

// rollout_commands.cc
int rollout_start(Session& s, const Args& a);
int rollout_list(Session& s, const Args& a);
int rollout_show(Session& s, const Args& a);
int rollout_pause(Session& s, const Args& a);
int rollout_resume(Session& s, const Args& a);
int rollout_abort(Session& s, const Args& a);
int rollout_rollback(Session& s, const Args& a);

// power_commands.cc
int machine_bmc_set(Session& s, const Args& a);
int machine_bmc_show(Session& s, const Args& a);
int machine_bmc_remove(Session& s, const Args& a);
int machine_power(Session& s, const Args& a);

// config_commands.cc
int machine_config_set(Session& s, const Args& a);
int machine_config_show(Session& s, const Args& a);
int machine_config_remove(Session& s, const Args& a);
int profile_set(Session& s, const Args& a);
int profile_list(Session& s, const Args& a);
int profile_show(Session& s, const Args& a);
int profile_remove(Session& s, const Args& a);
int deployment_config(Session& s, const Args& a);

// deployment_commands.cc
int machine_assign(Session& s, const Args& a);
int machine_rollback(Session& s, const Args& a);
int machine_history(Session& s, const Args& a);
int bulk_assign(Session& s, const Args& a);
int deployment_show(Session& s, const Args& a);

// image_commands.cc
int image_list(Session& s, const Args& a);
int image_show(Session& s, const Args& a);
int image_register(Session& s, const Args& a);
int image_push(Session& s, const Args& a);
int image_delete(Session& s, const Args& a);

// token_commands.cc
int token_list(Session& s, const Args& a);
int token_create(Session& s, const Args& a);
int token_revoke(Session& s, const Args& a);

// event_commands.cc
int events(Session& s, const Args& a);

}  // namespace kiln::cli
