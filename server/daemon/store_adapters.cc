#include "daemon/store_adapters.h"

namespace kiln::daemon {

// --- provision::MachineDirectory ----------------------------------------------------------

Result<proto::Machine> StoreMachineDirectory::find_by_mac(const std::string& mac) {
  return store_.find_machine_by_mac(mac);
}

Result<std::pair<proto::Machine, bool>> StoreMachineDirectory::discover(const std::string& mac,
                                                                        const std::string& who,
                                                                        bool approved) {
  return store_.discover_machine(mac, who, approved);
}

Result<proto::Machine> StoreMachineDirectory::get(std::int64_t id) {
  return store_.get_machine(id);
}

std::int64_t StoreMachineDirectory::count_discovered() {
  return store_.count_machines_by_state()["discovered"];
}

// --- provision::DeploymentLedger ----------------------------------------------------------

Result<proto::Deployment> StoreDeploymentLedger::get(std::int64_t id) {
  return store_.get_deployment(id);
}

Result<std::string> StoreDeploymentLedger::agent_ticket(std::int64_t deployment_id,
                                                        std::int64_t expires_at_ms) {
  return store_.agent_ticket(deployment_id, expires_at_ms);
}

Result<proto::Deployment> StoreDeploymentLedger::retry_failed(std::int64_t machine_id,
                                                              int max_attempts,
                                                              const std::string& who) {
  auto outcome = store_.retry_failed(machine_id, max_attempts, who);
  if (!outcome) return outcome.error();
  return std::move(outcome->deployment);
}

// --- provision::LeaseBook -----------------------------------------------------------------

std::vector<std::string> StoreLeaseBook::bound_addresses(const std::string& mac) {
  return store_.bound_lease_addresses(mac);
}

// --- dhcp::Backend ------------------------------------------------------------------------

std::vector<proto::DhcpLease> StoreDhcpBackend::load_leases() { return store_.load_dhcp_leases(); }

std::optional<proto::DhcpLease> StoreDhcpBackend::load_lease(const std::string& ip) {
  return store_.load_dhcp_lease(ip);
}

std::vector<std::string> StoreDhcpBackend::save_leases(
    const std::vector<proto::DhcpLease>& leases) {
  // The addresses another instance sharing the database holds: never acknowledged.
  return store_.save_dhcp_leases(leases);
}

std::vector<std::pair<std::string, std::optional<std::string>>> StoreDhcpBackend::machine_macs() {
  return store_.list_machine_macs();
}

}  // namespace kiln::daemon

namespace kiln::daemon {

// --- provision::BmcBook -------------------------------------------------------------------

Result<provision::MachineBmc> StoreBmcBook::bmc(std::int64_t machine_id) {
  auto r = store_.get_bmc(machine_id);
  if (!r) return r.error();
  auto opened = secrets_.open(r->credentials, store::bmc_credentials_aad(*r));
  if (!opened) {
    return make_error(Errc::kInternal, "machine " + std::to_string(machine_id) +
                                           "'s BMC credentials do not open with this kilnd's "
                                           "key (secrets.key_file changed?): set them again");
  }
  auto creds = nlohmann::json::parse(*opened, nullptr, /*allow_exceptions=*/false);
  if (!creds.is_object()) return make_error(Errc::kInternal, "malformed sealed BMC credentials");
  provision::MachineBmc out;
  out.config.driver = r->driver;
  out.config.address = r->address;
  out.config.username = creds.value("username", "");
  out.config.password = creds.value("password", "");
  out.config.ca_file = r->ca_file;
  out.config.insecure = r->insecure;
  out.config.system_id = r->system_id;
  out.config.timeout = timeout_;
  out.config.retries = retries_;
  std::string mode = r->boot_mode;
  if (mode == "auto") {
    mode = "uefi";
    if (auto m = store_.get_machine(machine_id)) {
      auto inv = nlohmann::json::parse(m->inventory_json, nullptr, false);
      if (inv.is_object() && inv.value("firmware", "") == "bios") mode = "legacy";
    }
  }
  out.mode = mode == "legacy" ? power::BootMode::kLegacy : power::BootMode::kUefi;
  return out;
}

// --- provision::PowerLedger ---------------------------------------------------------------

void StorePowerLedger::record(std::string_view type, std::int64_t machine_id,
                              std::optional<std::int64_t> deployment_id,
                              const nlohmann::json& data) {
  store_.record_event(type, machine_id, deployment_id, data);
}

Status StorePowerLedger::mark_powered(std::int64_t deployment_id,
                                      std::optional<std::int64_t> deadline_at) {
  return store_.mark_powered(deployment_id, deadline_at);
}

Status StorePowerLedger::watch(std::int64_t deployment_id, std::int64_t deadline_at) {
  return store_.watch_deployment(deployment_id, deadline_at);
}

std::vector<proto::Deployment> StorePowerLedger::overdue(std::int64_t now, int limit) {
  return store_.overdue_deployments(now, limit);
}

Result<proto::Deployment> StorePowerLedger::miss_deadline(std::int64_t deployment_id,
                                                          std::int64_t expected_deadline,
                                                          std::int64_t next_deadline,
                                                          const std::string& why) {
  return store_.miss_deadline(deployment_id, expected_deadline, next_deadline, why);
}

Result<proto::Deployment> StorePowerLedger::return_miss(std::int64_t deployment_id,
                                                        std::int64_t expected_deadline,
                                                        const std::string& why) {
  return store_.return_miss(deployment_id, expected_deadline, why);
}

Result<proto::Deployment> StorePowerLedger::fail_overdue(std::int64_t deployment_id,
                                                         std::int64_t expected_deadline,
                                                         const std::string& why) {
  return store_.fail_overdue(deployment_id, expected_deadline, why);
}

Result<proto::Deployment> StorePowerLedger::rollback_to_booted(
    std::int64_t machine_id, const std::string& who, std::optional<std::int64_t> deadline_at) {
  store::AssignRequest req;
  req.requested_by = who;
  req.reboot = true;  // recorded only when the machine has a BMC
  req.deadline_at = deadline_at;
  auto out = store_.rollback(machine_id, req, /*booted_only=*/true);
  if (!out) return out.error();
  return std::move(out->deployment);
}

namespace {
std::vector<provision::MachineDeployment> started(const std::vector<store::RolloutStart>& in) {
  std::vector<provision::MachineDeployment> out;
  for (const auto& s : in) {
    if (s.deployment) out.emplace_back(s.machine_id, s.deployment->id);
  }
  return out;
}
}  // namespace

Result<std::vector<provision::MachineDeployment>> StoreRolloutLedger::start(
    std::int64_t id, const std::vector<std::int64_t>& machines,
    std::optional<std::int64_t> deadline_at) {
  store::AssignRequest req;
  req.requested_by = "rollout " + std::to_string(id);
  req.deadline_at = deadline_at;
  req.config = snapshotter_;
  auto r = store_.start_rollout_machines(id, machines, req);
  if (!r) return r.error();
  return started(*r);
}

Result<std::vector<provision::MachineDeployment>> StoreRolloutLedger::roll_back(
    std::int64_t id, const std::vector<std::int64_t>& machines,
    std::optional<std::int64_t> deadline_at) {
  store::AssignRequest req;
  req.requested_by = "rollout " + std::to_string(id) + " rollback";
  req.deadline_at = deadline_at;
  auto r = store_.roll_back_rollout_machines(id, machines, req);
  if (!r) return r.error();
  return started(*r);
}

}  // namespace kiln::daemon
