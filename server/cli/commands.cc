// The command line of `kiln`: CLI11 options and subcommands bound to the commands of
// api_commands.h (which call kilnd) and image_commands.h (local files), then the settings
// that make the Client (flag, environment, config file, default).
#include "cli/commands.h"

#include <CLI/CLI.hpp>
#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "cli/api_commands.h"
#include "cli/client.h"
#include "cli/image_commands.h"
#include "cli/session.h"

namespace kiln::cli {

namespace {

constexpr const char* kVersion = "0.1.0";

// The options that come before (or, by fallthrough, after) any subcommand.
struct GlobalOptions {
  std::string url, token, config, cacert;
  bool insecure = false;
  bool json_mode = false;
  int timeout_s = 30;
  CLI::Option* url_opt = nullptr;
  CLI::Option* token_opt = nullptr;
  CLI::Option* config_opt = nullptr;
  CLI::Option* cacert_opt = nullptr;
};

// What the subcommands bind to, and what runs once parsing succeeded: an API command
// (`action`, given a Session) or a command on local files (`offline`).
struct Bindings {
  Args a;
  ImageBuildArgs build;
  std::vector<std::string> trusted_keys;
  std::string image_path;
  std::string key_prefix;
  std::function<int(Session&)> action;
  std::function<int()> offline;

  // Binds subcommand `sub` to the API command `fn`.
  void bind(CLI::App* sub, ApiCommand fn) {
    sub->callback([this, fn] { action = [this, fn](Session& s) { return fn(s, a); }; });
  }
  void bind_offline(CLI::App* sub, std::function<int()> fn) {
    sub->callback([this, fn = std::move(fn)] { offline = fn; });
  }
};

void add_global_options(CLI::App& app, GlobalOptions& g) {
  g.url_opt =
      app.add_option("--url", g.url, "server URL (default " + std::string(kDefaultUrl) + ")");
  g.token_opt = app.add_option("--token", g.token, "API token");
  g.config_opt =
      app.add_option("--config", g.config, "config file (JSON: url, token, cacert, insecure)");
  g.cacert_opt = app.add_option("--cacert", g.cacert, "PEM file of CAs to trust for https");
  app.add_flag("--insecure", g.insecure, "https: do not verify the server's certificate");
  app.add_option("--timeout", g.timeout_s, "connect/read timeout in seconds (default 30)")
      ->check(CLI::Range(1, 3600));
  app.add_flag("--json", g.json_mode, "print the raw JSON response");
}

// --reboot / --no-reboot; neither: the server's power.reboot_on_assign.
void add_reboot_flags(CLI::App* c, Args& a) {
  auto* on = c->add_flag("--reboot", a.reboot,
                         "reboot through the BMC now (one-time network boot, power cycle)");
  auto* off = c->add_flag("--no-reboot", a.no_reboot, "do not reboot (wait for the next PXE boot)");
  on->excludes(off);
}

// The configuration document's flags (machine config set, profile set).
void add_config_flags(CLI::App* c, Args& a) {
  auto& d = a.config;
  c->add_option("--file", d.file, "the whole document as JSON (flags below override its fields)");
  c->add_option("--hostname", d.hostname, "host name (RFC 1123 label)");
  c->add_option("--fqdn", d.fqdn, "fully qualified name (starts with the host name)");
  c->add_option("--ssh-key-file", d.ssh_key_files, "authorized_keys-style file (repeatable)")
      ->allow_extra_args(false);
  c->add_option("--user-data-file", d.user_data_file,
                "user-data (#cloud-config or script; - = stdin)");
  c->add_option("--vendor-data-file", d.vendor_data_file, "vendor-data");
  c->add_option("--network-config-file", d.network_config_file,
                "network config version 2, as JSON");
  c->add_option("--meta", d.metadata, "free metadata key=value (repeatable)")
      ->allow_extra_args(false);
  c->add_flag("--no-config-drive", d.no_config_drive, "no config drive: the metadata service only");
}

void add_machine_commands(CLI::App& app, Bindings& b) {
  Args& a = b.a;
  auto* machine = app.add_subcommand("machine", "list, inspect, label and (re)image machines");
  machine->require_subcommand(1);

  auto* c = machine->add_subcommand("list", "list machines (every page unless --limit)");
  c->add_option("--selector,-l", a.selector, "label selector, e.g. rack=r12,role!=db");
  c->add_option("--state", a.state, "only machines in this state");
  c->add_option("--limit", a.limit, "at most N machines (one request)");
  b.bind(c, machine_list);

  c = machine->add_subcommand("show", "show one machine");
  c->add_option("id", a.id, "machine id or MAC")->required();
  b.bind(c, machine_show);

  c = machine->add_subcommand("create", "register a machine by MAC");
  c->add_option("--mac", a.macs, "MAC address (repeatable)")->required()->allow_extra_args(false);
  c->add_option("--uuid", a.uuid, "SMBIOS UUID");
  c->add_option("--name", a.name, "display name");
  c->add_option("--label", a.labels, "label key=value (repeatable)")->allow_extra_args(false);
  b.bind(c, machine_create);

  c = machine->add_subcommand("label", "set (key=value) or remove (key-) labels");
  c->add_option("id", a.id, "machine id or MAC")->required();
  c->add_option("labels", a.labels, "key=value or key-")->required();
  b.bind(c, machine_label);

  c = machine->add_subcommand("assign", "assign an image version (re-images the machine)");
  c->add_option("id", a.id, "machine id or MAC")->required();
  c->add_option("image", a.image, "image name")->required();
  c->add_option("version", a.version, "image version")->required();
  c->add_flag("--force", a.force, "supersede a deployment in progress");
  add_reboot_flags(c, a);
  b.bind(c, machine_assign);

  c = machine->add_subcommand("rollback",
                              "reassign the last version the machine confirmed booting");
  c->add_option("id", a.id, "machine id or MAC")->required();
  add_reboot_flags(c, a);
  b.bind(c, machine_rollback);

  auto* bmc = machine->add_subcommand("bmc", "the machine's BMC (Redfish or IPMI)");
  bmc->require_subcommand(1);
  c = bmc->add_subcommand("set", "set (replace) the BMC; credentials are write-only");
  c->add_option("id", a.id, "machine id or MAC")->required();
  c->add_option("--driver", a.bmc.driver, "redfish | ipmi")->required();
  c->add_option("--address", a.bmc.address, "redfish: https://host[:port]; ipmi: host[:port]")
      ->required();
  c->add_option("--username", a.bmc.username, "BMC user (kept when left out)");
  c->add_option("--password-file", a.bmc.password_file,
                "file whose first line is the password, - for stdin (kept when left out)");
  c->add_option("--ca-file", a.bmc.ca_file, "CA (PEM, on kilnd's host) for the BMC's certificate");
  c->add_flag("--insecure", a.bmc.insecure, "do not verify the BMC's TLS certificate");
  c->add_option("--system-id", a.bmc.system_id, "Redfish system (when there are several)");
  c->add_option("--boot-mode", a.bmc.boot_mode, "auto | uefi | legacy (one-time network boot)");
  b.bind(c, machine_bmc_set);
  c = bmc->add_subcommand("show", "show the BMC (never its credentials)");
  c->add_option("id", a.id, "machine id or MAC")->required();
  b.bind(c, machine_bmc_show);
  c = bmc->add_subcommand("remove", "remove the BMC and its credentials");
  c->add_option("id", a.id, "machine id or MAC")->required();
  b.bind(c, machine_bmc_remove);

  auto* config = machine->add_subcommand("config", "the machine's cloud-init configuration");
  config->require_subcommand(1);
  c = config->add_subcommand("set", "set (replace) the machine's own configuration document");
  c->add_option("id", a.id, "machine id or MAC")->required();
  add_config_flags(c, a);
  b.bind(c, machine_config_set);
  c = config->add_subcommand("show", "its own document and the effective configuration");
  c->add_option("id", a.id, "machine id or MAC")->required();
  b.bind(c, machine_config_show);
  c = config->add_subcommand("remove", "remove the machine's own document (profiles still apply)");
  c->add_option("id", a.id, "machine id or MAC")->required();
  b.bind(c, machine_config_remove);

  c = machine->add_subcommand("power", "power on|off|cycle|soft-off|status through the BMC");
  c->add_option("id", a.id, "machine id or MAC")->required();
  c->add_option("action", a.power_action, "on | off | cycle | soft-off | status")
      ->required()
      ->check(CLI::IsMember({"on", "off", "cycle", "soft-off", "status"}));
  b.bind(c, machine_power);

  c = machine->add_subcommand("history", "list the machine's deployments");
  c->add_option("id", a.id, "machine id or MAC")->required();
  b.bind(c, machine_history);

  c = machine->add_subcommand("delete", "delete a machine (its history stays)");
  c->add_option("id", a.id, "machine id or MAC")->required();
  c->add_flag("--force", a.force, "also supersede a deployment in progress");
  b.bind(c, machine_delete);
}

void add_assign_command(CLI::App& app, Bindings& b) {
  Args& a = b.a;
  auto* assign =
      app.add_subcommand("assign", "assign an image version to every machine matching a selector");
  assign->add_option("--selector,-l", a.selector, "label selector, e.g. rack=r12")->required();
  assign->add_option("image", a.image, "image name")->required();
  assign->add_option("version", a.version, "image version")->required();
  assign->add_flag("--force", a.force, "supersede deployments in progress");
  add_reboot_flags(assign, a);
  b.bind(assign, bulk_assign);
}

// image list, show, register (kilnd); build (a local file). The rest of `image` is added by
// add_image_file_commands and add_image_transfer_commands, in --help's order.
void add_image_commands(CLI::App* image, Bindings& b, const GlobalOptions& g, std::ostream& out,
                        std::ostream& err) {
  Args& a = b.a;
  auto* c = image->add_subcommand("list", "list every image version");
  b.bind(c, image_list);

  c = image->add_subcommand("show", "show an image's versions, or one version");
  c->add_option("name", a.image, "image name")->required();
  c->add_option("version", a.version, "image version");
  b.bind(c, image_show);

  c = image->add_subcommand("register", "register an external raw image by URL");
  c->add_option("name", a.image, "image name")->required();
  c->add_option("version", a.version, "image version")->required();
  c->add_option("--url", a.url, "http(s) URL of the image")->required();
  c->add_option("--sha256", a.sha256, "SHA-256 of the image file")->required();
  c->add_option("--size", a.size, "image size in bytes")->required();
  c->add_option("--format", a.format, "raw (default), raw.gz, raw.xz or raw.zst")
      ->check(CLI::IsMember({"raw", "raw.gz", "raw.xz", "raw.zst"}));
  c->add_option("--description", a.description, "free text");
  c->add_option("--label", a.labels, "label key=value (repeatable)")->allow_extra_args(false);
  c->add_option("--sign", a.sign_key,
                "sign with this private key (PEM), as signed-only sites and agents require");
  b.bind(c, image_register);

  ImageBuildArgs& build = b.build;
  c = image->add_subcommand("build", "build a packed .kiln image from a raw disk image");
  c->add_option("input", build.input,
                "raw image, block device, qcow2 (v2/v3), or raw.gz/.xz/.zst/.bz2")
      ->required();
  c->add_option("-o,--output", build.output, "output .kiln file")->required();
  c->add_option("--name", build.name, "image name")->required();
  c->add_option("--version", build.version, "image version")->required();
  c->add_option("--chunk-size", build.chunk_size, "power of two, 256K..64M (default 4M)");
  c->add_option("--level", build.level, "zstd level (default 3)")->check(CLI::Range(-7, 22));
  c->add_option("--threads", build.threads, "compression threads (default: cores)");
  c->add_flag("--free-holes", build.free_holes,
              "holes (of a sparse input; qcow2 unallocated/zero clusters) are free space "
              "(UNMAPPED), not zeroes");
  c->add_option("--sector-size", build.sector_size, "512 or 4096 (default: detect)");
  c->add_option("--sign", build.sign_key, "Ed25519 private key (PEM) to sign the manifest");
  c->add_option("--label", build.labels, "label key=value (repeatable)")->allow_extra_args(false);
  c->add_option("--boot-partition", build.boot_partition, "kexec hint: partition number");
  c->add_option("--boot-kernel", build.boot_kernel, "kexec hint: kernel path in the partition");
  c->add_option("--boot-initrd", build.boot_initrd, "kexec hint: initrd path");
  c->add_option("--boot-cmdline", build.boot_cmdline, "kexec hint: kernel command line");
  b.bind_offline(c, [&b, &g, &out, &err] { return image_build(b.build, g.json_mode, out, err); });
}

// image inspect, verify (local files); push, delete (kilnd).
void add_image_file_commands(CLI::App* image, Bindings& b, const GlobalOptions& g,
                             std::ostream& out, std::ostream& err) {
  Args& a = b.a;
  for (bool quiet : {false, true}) {
    auto* c =
        quiet ? image->add_subcommand("verify",
                                      "verify a .kiln image; exit 1 naming the first bad chunk")
              : image->add_subcommand("inspect", "summarize a .kiln image and verify every chunk");
    c->add_option("file", b.image_path, ".kiln file")->required();
    c->add_option("--key", b.trusted_keys, "trusted public key (PEM); repeatable")
        ->allow_extra_args(false);
    b.bind_offline(c, [&b, &g, &out, &err, quiet] {
      return image_inspect(b.image_path, b.trusted_keys, g.json_mode, quiet, out, err);
    });
  }

  auto* c = image->add_subcommand("push", "upload a .kiln image to the server (verified there)");
  c->add_option("file", a.path, ".kiln file")->required();
  b.bind(c, image_push);

  c = image->add_subcommand("delete", "delete an image version no machine uses");
  c->add_option("name", a.image, "image name")->required();
  c->add_option("version", a.version, "image version")->required();
  b.bind(c, image_delete);
}

void add_deployment_and_token_commands(CLI::App& app, Bindings& b) {
  Args& a = b.a;
  auto* deployment = app.add_subcommand("deployment", "inspect deployments");
  deployment->require_subcommand(1);
  auto* c = deployment->add_subcommand("show", "show one deployment");
  c->add_option("id", a.id, "deployment id")->required();
  b.bind(c, deployment_show);
  c = deployment->add_subcommand("config", "the configuration snapshot it applies (admin)");
  c->add_option("id", a.id, "deployment id")->required();
  b.bind(c, deployment_config);

  auto* profile = app.add_subcommand("profile", "configuration profiles selected by labels");
  profile->require_subcommand(1);
  c = profile->add_subcommand("set", "create or replace a profile");
  c->add_option("name", a.name, "profile name")->required();
  c->add_option("--selector,-l", a.selector, "label selector (default: every machine)");
  c->add_option("--priority", a.config.priority, "merge order, lower first (default 0)");
  add_config_flags(c, a);
  b.bind(c, profile_set);
  c = profile->add_subcommand("list", "list profiles");
  b.bind(c, profile_list);
  c = profile->add_subcommand("show", "show a profile");
  c->add_option("name", a.name, "profile name")->required();
  b.bind(c, profile_show);
  c = profile->add_subcommand("remove", "remove a profile");
  c->add_option("name", a.name, "profile name")->required();
  b.bind(c, profile_remove);

  auto* rollout =
      app.add_subcommand("rollout", "roll an image version across machines in gated batches");
  rollout->require_subcommand(1);
  c = rollout->add_subcommand("start", "start a rollout (canary first, then batches)");
  c->add_option("--selector,-l", a.selector, "label selector (\"\" = every machine)")->required();
  c->add_option("--image", a.image, "image name")->required();
  c->add_option("--version", a.version, "image version")->required();
  c->add_option("--batch", a.rollout.batch, "machines per batch: a count (10) or a percentage (5%)")
      ->required();
  c->add_option("--canary", a.rollout.canary, "machines in the canary batch (default 0)");
  c->add_option("--max-unavailable", a.rollout.max_unavailable,
                "machines deploying or failed at once (default: the batch size)");
  c->add_option("--max-failures", a.rollout.max_failures, "failures tolerated (default 0)");
  c->add_option("--on-failure", a.rollout.on_failure, "pause (default), rollback or stop");
  c->add_option("--gate", a.rollout.gate, "booted (default) or written");
  c->add_option("--gate-timeout", a.rollout.gate_timeout_s, "seconds to pass the gate (1800)");
  c->add_option("--pause-between", a.rollout.pause_between_s, "seconds between batches (0)");
  c->add_option("--spread-by", a.rollout.spread_by,
                "a label key to interleave batches over (rack)");
  c->add_flag("--watch,-w", a.follow, "show live batch progress until it finishes");
  b.bind(c, rollout_start);
  c = rollout->add_subcommand("list", "list rollouts, newest first");
  c->add_option("--state", a.state, "only rollouts in this state");
  b.bind(c, rollout_list);
  c = rollout->add_subcommand("show", "a rollout's batches and machines");
  c->add_option("id", a.id, "rollout id")->required();
  c->add_flag("--watch,-w", a.follow, "show live batch progress until it finishes");
  b.bind(c, rollout_show);
  struct Action {
    const char* name;
    const char* help;
    ApiCommand fn;
  };
  for (const Action& act :
       {Action{"pause", "no machine starts until resumed", rollout_pause},
        Action{"resume", "go on (acknowledges the failures so far)", rollout_resume},
        Action{"abort", "stop for good; machines not started are skipped", rollout_abort},
        Action{"rollback", "every machine it touched back to its previous version",
               rollout_rollback}}) {
    c = rollout->add_subcommand(act.name, act.help);
    c->add_option("id", a.id, "rollout id")->required();
    c->add_flag("--watch,-w", a.follow, "then show live progress until it finishes");
    b.bind(c, act.fn);
  }

  auto* tokens = app.add_subcommand("token", "manage API tokens (admin)");
  tokens->require_subcommand(1);
  c = tokens->add_subcommand("list", "list tokens (never their values)");
  b.bind(c, token_list);

  c = tokens->add_subcommand("create", "create a token and print it once");
  c->add_option("--name", a.name, "who or what uses the token")->required();
  c->add_option("--scope", a.scope, "read (default) or admin");
  b.bind(c, token_create);

  c = tokens->add_subcommand("revoke", "revoke a token");
  c->add_option("id", a.id, "token id")->required();
  b.bind(c, token_revoke);
}

void add_key_and_events_commands(CLI::App& app, Bindings& b, std::ostream& out, std::ostream& err) {
  auto* key = app.add_subcommand("key", "manage image signing keys (local files)");
  key->require_subcommand(1);
  auto* c = key->add_subcommand("generate", "generate an Ed25519 key pair");
  c->add_option("--out", b.key_prefix, "writes PREFIX.pem (private) and PREFIX.pub.pem")
      ->required();
  b.bind_offline(c, [&b, &out, &err] { return key_generate(b.key_prefix, out, err); });

  Args& a = b.a;
  auto* ev = app.add_subcommand("events", "print events (deployments, machines, images)");
  ev->add_option("--since", a.since, "only events after this id (default 0: all)");
  ev->add_option("--wait", a.wait, "long-poll up to S seconds for the first event");
  ev->add_option("--machine", a.machine, "only events of this machine (id or MAC)");
  ev->add_flag(
      "--follow,-f", a.follow,
      "keep long-polling and printing new events until interrupted (with --json: one event "
      "object per line)");
  b.bind(ev, events);
}

// The Client's settings: flag, else environment, else config file, else default. Sets
// `token_hint` (shown after a 401) when no token is configured. nullopt: printed, exit 2.
std::optional<ClientOptions> client_options(const GlobalOptions& g, const Environment& env,
                                            std::string& token_hint, std::ostream& err) {
  auto path = config_path(g.config_opt->count() ? std::optional(g.config) : std::nullopt, env);
  FileConfig file;
  if (path) {
    const bool explicit_path = g.config_opt->count() > 0 || env.config_path.has_value();
    auto loaded = load_config(*path, explicit_path);
    if (!loaded) {
      err << "kiln: " << loaded.error().message << "\n";
      return std::nullopt;
    }
    file = std::move(*loaded);
  }
  ClientOptions options;
  options.url = g.url_opt->count() ? g.url
                : env.url          ? *env.url
                : file.url         ? *file.url
                                   : std::string(kDefaultUrl);
  options.token = g.token_opt->count() ? g.token : env.token ? *env.token : file.token.value_or("");
  options.cacert = g.cacert_opt->count() ? g.cacert : file.cacert.value_or("");
  options.insecure = g.insecure || file.insecure.value_or(false);
  options.timeout = std::chrono::seconds(g.timeout_s);
  options.user_agent = std::string("kiln/") + kVersion;
  if (options.token.empty()) {
    token_hint = "no API token configured; pass --token, set KILN_TOKEN, or add \"token\" to " +
                 path.value_or(std::string("~/.config/kiln/config.json"));
  }
  return options;
}

}  // namespace

int run(int argc, const char* const* argv, const Environment& env, std::ostream& out,
        std::ostream& err) {
  CLI::App app{"kiln: command-line client for the kilnd REST API"};
  app.name("kiln");
  app.set_version_flag("--version", std::string("kiln ") + kVersion);
  // Subcommands inherit fallthrough, so global options may also follow the subcommand.
  app.fallthrough();
  app.require_subcommand(1);
  app.footer(
      "Server and token come from --url/--token, else KILN_URL/KILN_TOKEN, else the config "
      "file\n(~/.config/kiln/config.json, or --config/KILN_CONFIG: "
      "{\"url\":...,\"token\":...}).\nExit codes: 0 ok, 1 API error, 2 usage error or server "
      "unreachable.");

  GlobalOptions g;
  Bindings b;
  add_global_options(app, g);
  add_machine_commands(app, b);
  add_assign_command(app, b);
  auto* image = app.add_subcommand("image", "list, inspect, register and delete image versions");
  image->require_subcommand(1);
  add_image_commands(image, b, g, out, err);
  add_image_file_commands(image, b, g, out, err);
  add_deployment_and_token_commands(app, b);
  add_key_and_events_commands(app, b, out, err);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and --version exit 0; every other parse failure is a usage error.
    return app.exit(e, out, err) == 0 ? kExitOk : kExitUsage;
  }
  if (b.offline) return b.offline();
  if (!b.action) {
    err << "kiln: no command given; see kiln --help\n";
    return kExitUsage;
  }
  std::string token_hint;
  auto options = client_options(g, env, token_hint, err);
  if (!options) return kExitUsage;
  auto client = Client::create(std::move(*options));
  if (!client) {
    err << "kiln: " << client.error().message << "\n";
    return kExitUsage;
  }
  Session session(std::move(*client), g.json_mode, std::move(token_hint), out, err);
  return b.action(session);
}

}  // namespace kiln::cli
