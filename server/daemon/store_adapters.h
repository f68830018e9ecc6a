// daemon/store_adapters.h — the store seen through the small interfaces its users declare:
// the boot service's (provision/ports.h) and the DHCP server's (dhcp/backend.h). Each adapter
// only forwards to store::Store; it holds a reference, so the store must outlive it. Thread-safe
// as the store is.
#pragma once

#include <chrono>
#include <memory>
#include <string_view>

#include "core/secret_box.h"
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

// Machines' BMCs from the store, credentials opened with `secrets`; the boot mode "auto"
// follows the firmware the discovery inventory reported (UEFI when unknown).
class StoreBmcBook final : public provision::BmcBook {
 public:
  StoreBmcBook(store::Store& store, const SecretBox& secrets, std::chrono::milliseconds timeout,
               int retries)
      : store_(store), secrets_(secrets), timeout_(timeout), retries_(retries) {}
  Result<provision::MachineBmc> bmc(std::int64_t machine_id) override;

 private:
  store::Store& store_;
  const SecretBox& secrets_;
  std::chrono::milliseconds timeout_;
  int retries_;
};

class StorePowerLedger final : public provision::PowerLedger {
 public:
  explicit StorePowerLedger(store::Store& store) : store_(store) {}
  void record(std::string_view type, std::int64_t machine_id,
              std::optional<std::int64_t> deployment_id, const nlohmann::json& data) override;
  Status mark_powered(std::int64_t deployment_id, std::optional<std::int64_t> deadline_at) override;
  Status watch(std::int64_t deployment_id, std::int64_t deadline_at) override;
  std::vector<proto::Deployment> overdue(std::int64_t now, int limit) override;
  Result<proto::Deployment> miss_deadline(std::int64_t deployment_id,
                                          std::int64_t expected_deadline,
                                          std::int64_t next_deadline,
                                          const std::string& why) override;
  Result<proto::Deployment> return_miss(std::int64_t deployment_id, std::int64_t expected_deadline,
                                        const std::string& why) override;
  Result<proto::Deployment> fail_overdue(std::int64_t deployment_id, std::int64_t expected_deadline,
                                         const std::string& why) override;
  Result<proto::Deployment> rollback_to_booted(std::int64_t machine_id, const std::string& who,
                                               std::optional<std::int64_t> deadline_at) override;
  Result<proto::Deployment> deployment(std::int64_t id) override {
    return store_.get_deployment(id);
  }

 private:
  store::Store& store_;
};

// The rollout engine's view of the store; its deployments take `snapshotter`'s configuration
// (the API's, as assignments do) and are requested by "rollout <id>".
class StoreRolloutLedger final : public provision::RolloutLedger {
 public:
  StoreRolloutLedger(store::Store& store, store::ConfigSnapshotter snapshotter)
      : store_(store), snapshotter_(std::move(snapshotter)) {}
  std::vector<std::int64_t> active() override { return store_.active_rollout_ids(); }
  Result<proto::Rollout> sync(std::int64_t id, bool timeouts) override {
    return store_.sync_rollout(id, timeouts);
  }
  Result<proto::Rollout> transition(std::int64_t id, proto::RolloutState from,
                                    proto::RolloutState to, const std::string& reason,
                                    std::int64_t seen_at) override {
    return store_.transition_rollout(id, from, to, reason, seen_at);
  }
  Result<std::vector<provision::MachineDeployment>> start(
      std::int64_t id, const std::vector<std::int64_t>& machines,
      std::optional<std::int64_t> deadline_at) override;
  Result<std::vector<provision::MachineDeployment>> roll_back(
      std::int64_t id, const std::vector<std::int64_t>& machines,
      std::optional<std::int64_t> deadline_at) override;
  std::vector<provision::MachineDeployment> unpowered(std::int64_t id) override {
    return store_.unpowered_rollout_deployments(id);
  }

 private:
  store::Store& store_;
  store::ConfigSnapshotter snapshotter_;
};

// power::make_driver.
class RealDriverFactory final : public provision::DriverFactory {
 public:
  Result<std::unique_ptr<power::Driver>> make(const power::BmcConfig& config) override {
    return power::make_driver(config);
  }
};

class StoreDhcpBackend final : public dhcp::Backend {
 public:
  explicit StoreDhcpBackend(store::Store& store) : store_(store) {}
  std::vector<proto::DhcpLease> load_leases() override;
  std::optional<proto::DhcpLease> load_lease(const std::string& ip) override;
  std::vector<std::string> save_leases(const std::vector<proto::DhcpLease>& leases) override;
  std::vector<std::pair<std::string, std::optional<std::string>>> machine_macs() override;

 private:
  store::Store& store_;
};

// The store's lease on once-only work (Store::try_lead), as the rollout engine and the power
// service's deadline checks ask for it: one lease shared by both (held() is thread-safe).
class StoreLeadership final : public provision::Leadership {
 public:
  StoreLeadership(store::Store& store, std::string_view name) : lead_(store.try_lead(name)) {}
  bool held() override { return lead_->held(); }

 private:
  std::unique_ptr<store::Store::Leadership> lead_;
};

}  // namespace kiln::daemon
