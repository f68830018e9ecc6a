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

void StoreDhcpBackend::save_leases(const std::vector<proto::DhcpLease>& leases) {
  store_.save_dhcp_leases(leases);
}

std::vector<std::pair<std::string, std::optional<std::string>>> StoreDhcpBackend::machine_macs() {
  return store_.list_machine_macs();
}

}  // namespace kiln::daemon
