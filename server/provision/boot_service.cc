#include "provision/boot_service.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "core/log_util.h"
#include "core/mac.h"

namespace kiln::provision {

namespace {

// The file name part of an artifact name ("kiln/initrd.img" -> "initrd.img"): what the EFI
// stub of the kernel looks for in `initrd=` when iPXE has no LoadFile2 (iPXE 2019 on EFI).
std::string base_name(const std::string& name) {
  auto slash = name.rfind('/');
  return slash == std::string::npos ? name : name.substr(slash + 1);
}

}  // namespace

BootService::BootService(BootOptions options, MachineDirectory& machines,
                         DeploymentLedger& deployments, LeaseBook& leases, Metrics& metrics,
                         const Clock& clock, std::shared_ptr<spdlog::logger> log)
    : options_(std::move(options)),
      machines_(machines),
      deployments_(deployments),
      leases_(leases),
      metrics_(metrics),
      clock_(clock),
      log_(std::move(log)) {
  metrics_.describe("kiln_boot_scripts_total", Metrics::Type::kCounter,
                    "iPXE scripts served by script (discover, wait, deploy, localboot, failed)");
  metrics_.describe("kiln_boot_scripts_refused_total", Metrics::Type::kCounter,
                    "iPXE script requests refused (asked from another address than the lease)");
}

Status BootService::init() {
  if (!options_.scripts_dir.empty()) {
    auto t = boot::Templates::with_overrides(options_.scripts_dir);
    if (!t) return t.error();
    templates_ = std::move(*t);
  }
  if (options_.after != "reboot" && options_.after != "kexec") {
    return make_error(Errc::kInvalid, "boot.after must be reboot or kexec");
  }
  if (options_.after_discover != "reboot" && options_.after_discover != "poweroff") {
    return make_error(Errc::kInvalid, "boot.after_discover must be reboot or poweroff");
  }
  if (options_.discovery != "open" && options_.discovery != "approve") {
    return make_error(Errc::kInvalid, "boot.discovery must be open or approve");
  }
  if (options_.discovery_per_minute < 0 || options_.discovery_per_minute_per_address < 0) {
    return make_error(
        Errc::kInvalid,
        "boot.discovery_per_minute and discovery_per_minute_per_address must be >= 0");
  }
  if (options_.poll_s < 1 || options_.retry_s < 1 || options_.retries < 0) {
    return make_error(Errc::kInvalid, "boot.poll_s and boot.retry_s must be >= 1, retries >= 0");
  }
  return ok_status();
}

void BootService::set_server_url(std::string url) {
  std::lock_guard lock(url_mu_);
  options_.server_url = std::move(url);
}

void BootService::set_fallback_servers(std::vector<std::string> urls) {
  std::lock_guard lock(url_mu_);
  fallback_servers_ = std::move(urls);
}

std::string BootService::agent_servers(const std::string& server) const {
  std::lock_guard lock(url_mu_);
  std::string out = server;
  const bool tls = server.rfind("https://", 0) == 0;
  for (const auto& u : fallback_servers_) {
    if (u == server || (tls && u.rfind("https://", 0) != 0)) continue;
    out += "," + u;
  }
  return out;
}

std::string BootService::server_url() const {
  std::lock_guard lock(url_mu_);
  return options_.server_url;
}

Result<std::string> BootService::generate(std::string_view rel, const boot::Requester& who) {
  constexpr std::string_view kSuffix = ".ipxe";
  if (rel.size() <= kSuffix.size() || rel.substr(rel.size() - kSuffix.size()) != kSuffix) {
    return make_error(Errc::kNotFound, "not a boot script");
  }
  auto mac = normalize_mac(rel.substr(0, rel.size() - kSuffix.size()));
  if (!mac) return make_error(Errc::kNotFound, "not a MAC address");
  Result<std::string> out = make_error(Errc::kInternal, "not rendered");
  try {
    out = render_for(*mac, who);
  } catch (const std::exception& e) {
    // A storage error (busy, disk full, no descriptors) must not reach the HTTP or TFTP
    // thread: the machine's script retries, the cause is logged.
    out = make_error(Errc::kInternal, std::string("store: ") + e.what());
  }
  if (!out && out.error().code != Errc::kNotFound) {
    log_->error("event=boot.script_failed mac={} peer={} err=\"{}\"", *mac, who.address,
                log_escape(out.error().message, 300));
    // The client sees a 503 / TFTP error and its script retries; the cause is in the log.
    return make_error(Errc::kUnavailable, out.error().message);
  }
  return out;
}

namespace {

// Refills a token bucket (capacity `cap`, refilled `cap` a minute) to `now`; true when it holds
// a whole token.
bool refill(double cap, std::int64_t now, double& tokens, std::int64_t& at_ms) {
  tokens =
      tokens < 0 ? cap : std::min(cap, tokens + static_cast<double>(now - at_ms) * cap / 60'000.0);
  at_ms = now;
  return tokens >= 1;
}

}  // namespace

bool BootService::take_discovery_token(const std::string& address, const char*& which) {
  const std::int64_t now = clock_.now_ms();
  std::lock_guard lock(bucket_mu_);
  const int global = options_.discovery_per_minute;
  const int per_address = options_.discovery_per_minute_per_address;
  if (global > 0 && !refill(global, now, bucket_.tokens, bucket_.at_ms)) {
    which = "discovery-rate";
    return false;
  }
  if (per_address > 0) {
    if (per_address_.size() > 4096 && !per_address_.contains(address)) per_address_.clear();
    Bucket& mine = per_address_[address];
    if (!refill(per_address, now, mine.tokens, mine.at_ms)) {
      which = "discovery-rate-address";
      return false;
    }
    mine.tokens -= 1;
  }
  if (global > 0) bucket_.tokens -= 1;
  return true;
}

Result<std::string> BootService::render_for(const std::string& mac, const boot::Requester& who) {
  const std::string server = server_url();
  if (server.empty()) {
    return make_error(Errc::kInvalid,
                      "boot.server_url is not set and http.listen is a wildcard address");
  }
  if (auto st = check_lease(mac, who); !st) return st.error();
  auto identified = identify(mac, who);
  if (!identified) return identified.error();
  auto& [found, created] = *identified;
  auto machine = &found;

  boot::Templates::Vars vars = base_vars(mac, server);
  boot::MachineBootState st;
  st.known = true;
  st.state = machine->state;
  st.awaiting_approval = !machine->approved;
  st.deployment_active = machine->active_deployment_id.has_value();
  std::string retry_note;
  if (st.state == proto::MachineState::kFailed && !st.deployment_active) {
    retry_note = retry(*machine, st, vars);
  }
  const boot::Script script = boot::choose_script(st);
  vars["state"] = st.awaiting_approval ? std::string("awaiting-approval")
                                       : std::string(proto::to_string(machine->state));
  if (auto filled = fill_script_vars(script, *machine, vars); !filled) return filled.error();
  auto text = templates_.render(script, vars);
  if (!text) return text.error();
  metrics_.add("kiln_boot_scripts_total", {{"script", std::string(boot::to_string(script))}});
  log_->info("event=boot.script mac={} machine={} state={} script={} proto={} peer={}{}{}", mac,
             machine->id, proto::to_string(machine->state), boot::to_string(script), who.protocol,
             who.address, created ? " discovered=new" : "", retry_note);
  return text;
}

boot::Templates::Vars BootService::base_vars(const std::string& mac,
                                             const std::string& server) const {
  return {
      {"mac", mac},
      {"server", server},
      {"agent_servers", agent_servers(server)},
      {"script_url", server + "/boot/" + mac_hyphenated(mac) + ".ipxe"},
      {"kernel_url", server + "/files/" + options_.kernel},
      {"initrd_url", server + "/files/" + options_.initrd},
      {"initrd_name", base_name(options_.initrd)},
      {"cmdline", options_.cmdline},
      {"retry_s", std::to_string(options_.retry_s)},
      {"poll_s", std::to_string(options_.poll_s)},
  };
}

Status BootService::check_lease(const std::string& mac, const boot::Requester& who) {
  if (!options_.bind_to_lease && !options_.require_lease) return ok_status();
  auto leased = leases_.bound_addresses(mac);
  if (leased.empty() && options_.require_lease) {
    log_->warn("event=boot.script_refused mac={} peer={} proto={} msg=\"no lease from kilnd\"", mac,
               who.address, who.protocol);
    metrics_.add("kiln_boot_scripts_refused_total", {{"reason", "no-lease"}});
    return make_error(Errc::kNotFound, "no lease from kilnd (boot.require_lease)");
  }
  // A dual-stack listener sees an IPv4 client as ::ffff:a.b.c.d.
  std::string_view peer = who.address;
  if (peer.rfind("::ffff:", 0) == 0) peer.remove_prefix(7);
  if (leased.empty() || std::find(leased.begin(), leased.end(), peer) != leased.end()) {
    return ok_status();
  }
  log_->warn(
      "event=boot.script_refused mac={} peer={} proto={} leased={} "
      "msg=\"not the address leased to this MAC\"",
      mac, who.address, who.protocol, leased.front());
  metrics_.add("kiln_boot_scripts_refused_total", {{"reason", "not-lease-address"}});
  return make_error(Errc::kNotFound, "not the address leased to this MAC");
}

Result<std::pair<proto::Machine, bool>> BootService::identify(const std::string& mac,
                                                              const boot::Requester& who) {
  auto m = machines_.find_by_mac(mac);
  if (m) return std::pair{std::move(*m), false};
  if (m.error().code != Errc::kNotFound) return m.error();
  if (!options_.discover_unknown) {
    log_->info("event=boot.unknown_ignored mac={} peer={} proto={}", mac, who.address,
               who.protocol);
    return make_error(Errc::kNotFound, "unknown machine and discovery is off");
  }
  const std::int64_t discovered = machines_.count_discovered();
  if (discovered >= options_.max_discovered) {
    log_->warn("event=boot.discovery_full mac={} discovered={} max={}", mac, discovered,
               options_.max_discovered);
    return make_error(Errc::kNotFound, "too many discovered machines");
  }
  std::string_view peer = who.address;
  if (peer.rfind("::ffff:", 0) == 0) peer.remove_prefix(7);
  if (const char* which = ""; !take_discovery_token(std::string(peer), which)) {
    log_->warn("event=boot.discovery_rate_limited mac={} peer={} limit={}", mac, who.address,
               which);
    metrics_.add("kiln_boot_scripts_refused_total", {{"reason", which}});
    return make_error(Errc::kNotFound, "discovery rate limit reached");
  }
  return machines_.discover(mac, "kilnd:pxe", options_.discovery != "approve");
}

std::string BootService::retry(proto::Machine& machine, boot::MachineBootState& st,
                               boot::Templates::Vars& vars) {
  auto r = deployments_.retry_failed(machine.id, options_.retries + 1, "kilnd:retry");
  if (r) {
    st.retry_available = true;
    machine.active_deployment_id = r->id;
    return " retry_deployment=" + std::to_string(r->id);
  }
  if (auto again = machines_.get(machine.id); again && again->active_deployment_id) {
    // Another request (a second NIC, a retried fetch) started the retry first: join it.
    machine = std::move(*again);
    st.state = machine.state;
    st.deployment_active = true;
    return "";
  }
  vars["reason"] = boot::script_text(machine.state_reason + " (" + r.error().message + ")");
  return " no_retry=\"" + log_escape(r.error().message, 200) + "\"";
}

Status BootService::fill_script_vars(boot::Script script, const proto::Machine& machine,
                                     boot::Templates::Vars& vars) {
  switch (script) {
    case boot::Script::kDiscover:
      vars["after"] = options_.after_discover;
      break;
    case boot::Script::kDeploy: {
      auto d = deployments_.get(*machine.active_deployment_id);
      if (!d) return d.error();
      auto ticket = deployments_.agent_ticket(d->id, clock_.now_ms() + options_.token_ttl.count());
      if (!ticket) return ticket.error();
      vars["ticket"] = *ticket;
      vars["deployment"] = std::to_string(d->id);
      vars["image"] = boot::script_text(d->to_version.name + ":" + d->to_version.version);
      auto disk = machine.labels.find("kiln.disk");
      vars["disk"] = disk != machine.labels.end() ? disk->second : options_.disk;
      vars["after"] = options_.after;
      break;
    }
    case boot::Script::kLocalBoot:
      vars["image"] = machine.current_version
                          ? boot::script_text(machine.current_version->name + ":" +
                                              machine.current_version->version)
                          : std::string("its image");
      vars["bios_command"] = boot::local_boot_command(options_.local_bios);
      vars["efi_command"] = boot::local_boot_command(options_.local_efi);
      break;
    case boot::Script::kWait:
    case boot::Script::kFailed:
      break;
  }
  return ok_status();
}

}  // namespace kiln::provision
