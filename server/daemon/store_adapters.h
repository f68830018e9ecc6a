// daemon/store_adapters.h — the store seen through the small interfaces its users declare:
// the boot service's (provision/ports.h) and the DHCP server's (dhcp/backend.h). Each adapter
// only forwards to store::Store; it holds a reference, so the store must outlive it. Thread-safe
// as the store is.
#pragma once

#include "dhcp/backend.h"
#include "provision/ports.h"
#include "store/store.h"

namespace kiln::daemon {

class StoreMachineDirectory final : public provision::MachineDirectory {
 public:
  explicit StoreMachineDirectory(store::Store& store) : store_(store) {}
  Result<proto::Machine> find_by_mac(const std::string& mac) override;
  Result<std::pair<proto::Machine, bool>> discover(const std::string& mac, const std::string& who,
                                                   bool approved) override;
  Result<proto::Machine> get(std::int64_t id) override;
  std::int64_t count_discovered() override;

 private:
  store::Store& store_;
};

class StoreDeploymentLedger final : public provision::DeploymentLedger {
 public:
  explicit StoreDeploymentLedger(store::Store& store) : store_(store) {}
  Result<proto::Deployment> get(std::int64_t id) override;
  Result<std::string> agent_ticket(std::int64_t deployment_id, std::int64_t expires_at_ms) override;
  Result<proto::Deployment> retry_failed(std::int64_t machine_id, int max_attempts,
                                         const std::string& who) override;

 private:
  store::Store& store_;
};

class StoreLeaseBook final : public provision::LeaseBook {
 public:
  explicit StoreLeaseBook(store::Store& store) : store_(store) {}
  std::vector<std::string> bound_addresses(const std::string& mac) override;

 private:
  store::Store& store_;
};

class StoreDhcpBackend final : public dhcp::Backend {
 public:
  explicit StoreDhcpBackend(store::Store& store) : store_(store) {}
  std::vector<proto::DhcpLease> load_leases() override;
  void save_leases(const std::vector<proto::DhcpLease>& leases) override;
  std::vector<std::pair<std::string, std::optional<std::string>>> machine_macs() override;

 private:
  store::Store& store_;
};

}  // namespace kiln::daemon
