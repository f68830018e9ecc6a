// provision/ports.h — what the boot service needs of the rest of kilnd, declared by the boot
// service itself (the consumer owns the interface): machines, their deployments and the DHCP
// leases they hold. daemon/ adapts the store to them; tests use in-memory fakes.
//
// Every method is called concurrently from the HTTP and TFTP threads: implementations are
// thread-safe. Expected outcomes (unknown machine, nothing to retry, ...) are `Result`s; a
// storage failure (disk full, I/O error) may throw, and the boot service turns it into an
// "unavailable" answer (the machine's script asks again) and a log line.
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/result.h"
#include "power/driver.h"
#include "proto/resources.h"
#include "proto/rollout.h"

namespace kiln::provision {

// The registry of machines, as the boot path sees it.
class MachineDirectory {
 public:
  virtual ~MachineDirectory() = default;
  // The live machine that owns `mac` (canonical, lower-case). kNotFound when none does.
  virtual Result<proto::Machine> find_by_mac(const std::string& mac) = 0;
  // The machine that owns `mac`; an unknown MAC is registered now as `discovered` (no name,
  // no labels), recorded as done by `who`, waiting for an operator's approval unless
  // `approved`. Returns the machine and whether it was created now (false: another request
  // registered it first).
  virtual Result<std::pair<proto::Machine, bool>> discover(const std::string& mac,
                                                           const std::string& who,
                                                           bool approved) = 0;
  // The live machine `id`. kNotFound when it does not exist (or was deleted).
  virtual Result<proto::Machine> get(std::int64_t id) = 0;
  // How many live machines are in state `discovered` now.
  virtual std::int64_t count_discovered() = 0;
};

// Deployments: read them, credential their agents, end or restart them.
class DeploymentLedger {
 public:
  virtual ~DeploymentLedger() = default;
  // Deployment `id`. kNotFound when it does not exist.
  virtual Result<proto::Deployment> get(std::int64_t id) = 0;
  // The boot ticket of the active deployment `deployment_id`: the same one on every call while
  // it is valid (a new one, valid until `expires_at_ms`, when there is none). It only opens an
  // agent session, bound at first use to the agent's address. kNotFound: no such deployment;
  // conflict: it is not active.
  virtual Result<std::string> agent_ticket(std::int64_t deployment_id,
                                           std::int64_t expires_at_ms) = 0;
  // Retries a failed machine: when its latest deployment failed and fewer than
  // `max_attempts` deployments of that version failed in a row (counting back to the last one
  // not requested by `who`), starts a new deployment of the same version requested by `who`
  // and returns it. Conflict when there is nothing to retry or the attempts are used up (the
  // message says which).
  virtual Result<proto::Deployment> retry_failed(std::int64_t machine_id, int max_attempts,
                                                 const std::string& who) = 0;
};

// The DHCP leases kilnd has granted (committed before their ACK was sent).
class LeaseBook {
 public:
  virtual ~LeaseBook() = default;
  // The IPv4 addresses (dotted quads) `mac` holds a bound, unexpired lease on; empty when it
  // holds none.
  virtual std::vector<std::string> bound_addresses(const std::string& mac) = 0;
};

// Work that must run on one kilnd at a time when several share one database (the rollout
// engine's passes, the deadline checks): a lease in the database that another instance takes
// over when its holder dies (PostgreSQL: a session advisory lock, dropped with the holder's
// connection). With SQLite (one kilnd per database) it is always held.
class Leadership {
 public:
  virtual ~Leadership() = default;
  // Whether this process holds the lease now; tries to take it when it does not. Cheap enough
  // to ask before every pass; thread-safe.
  virtual bool held() = 0;
};

// Machines' BMCs, credentials opened (power_service.h).
struct MachineBmc {
  power::BmcConfig config;
  power::BootMode mode = power::BootMode::kUefi;  // the firmware's boot mode, resolved
};
class BmcBook {
 public:
  virtual ~BmcBook() = default;
  // Machine `machine_id`'s BMC. kNotFound: none configured; kInternal: its credentials do not
  // open (the key file changed).
  virtual Result<MachineBmc> bmc(std::int64_t machine_id) = 0;
};

// Makes drivers (power::make_driver in kilnd; scripted fakes in tests).
class DriverFactory {
 public:
  virtual ~DriverFactory() = default;
  virtual Result<std::unique_ptr<power::Driver>> make(const power::BmcConfig& config) = 0;
};

// What the power service records and changes in deployments (store::Store's methods of the
// same names; see store/store.h).
class PowerLedger {
 public:
  virtual ~PowerLedger() = default;
  virtual void record(std::string_view type, std::int64_t machine_id,
                      std::optional<std::int64_t> deployment_id, const nlohmann::json& data) = 0;
  virtual Status mark_powered(std::int64_t deployment_id,
                              std::optional<std::int64_t> deadline_at) = 0;
  // A deadline for an active deployment that has none yet (a reimage that failed to power it).
  // The default does nothing (a ledger that tracks no deadlines).
  virtual Status watch(std::int64_t /*deployment_id*/, std::int64_t /*deadline_at*/) {
    return Unit{};
  }
  virtual std::vector<proto::Deployment> overdue(std::int64_t now, int limit) = 0;
  virtual Result<proto::Deployment> miss_deadline(std::int64_t deployment_id,
                                                  std::int64_t expected_deadline,
                                                  std::int64_t next_deadline,
                                                  const std::string& why) = 0;
  virtual Result<proto::Deployment> return_miss(std::int64_t deployment_id,
                                                std::int64_t expected_deadline,
                                                const std::string& why) = 0;
  virtual Result<proto::Deployment> fail_overdue(std::int64_t deployment_id,
                                                 std::int64_t expected_deadline,
                                                 const std::string& why) = 0;
  // Rolls machine `machine_id` back to the last version it confirmed booting, with reboot and
  // the write deadline `deadline_at` (in case its power-on never happens), requested by `who`.
  // Conflict when there is none.
  virtual Result<proto::Deployment> rollback_to_booted(std::int64_t machine_id,
                                                       const std::string& who,
                                                       std::optional<std::int64_t> deadline_at) = 0;
  // Deployment `id` as it is now (a queued power job checks it is still wanted).
  virtual Result<proto::Deployment> deployment(std::int64_t id) = 0;
};

// Rollouts as the rollout service moves them (store::Store's rollout methods; see
// store/store.h). A (machine id, deployment id) pair names a deployment started for a machine.
using MachineDeployment = std::pair<std::int64_t, std::int64_t>;
class RolloutLedger {
 public:
  virtual ~RolloutLedger() = default;
  // Rollouts to drive: pending, running, paused, rolling_back.
  virtual std::vector<std::int64_t> active() = 0;
  // Moves machines on from their deployments; the rollout as it is now.
  // `timeouts` false: no machine fails for its gate's timeout in this pass.
  virtual Result<proto::Rollout> sync(std::int64_t id, bool timeouts) = 0;
  // from -> to; conflict when an operator moved it meanwhile.
  // `seen_at`: the updated_at of the view the decision was made on (conflict when it changed).
  virtual Result<proto::Rollout> transition(std::int64_t id, proto::RolloutState from,
                                            proto::RolloutState to, const std::string& reason,
                                            std::int64_t seen_at) = 0;
  // Starts (with reboot) pending machines of a running rollout; those that cannot start are
  // marked skipped by the ledger. `deadline_at`: the write deadline, in case no power-on happens.
  virtual Result<std::vector<MachineDeployment>> start(std::int64_t id,
                                                       const std::vector<std::int64_t>& machines,
                                                       std::optional<std::int64_t> deadline_at) = 0;
  // Rolls machines of a rolling_back rollout back to their previous version, with reboot.
  virtual Result<std::vector<MachineDeployment>> roll_back(
      std::int64_t id, const std::vector<std::int64_t>& machines,
      std::optional<std::int64_t> deadline_at) = 0;
  // The rollout's deployments recorded with a reboot and not powered yet.
  virtual std::vector<MachineDeployment> unpowered(std::int64_t id) = 0;
};

}  // namespace kiln::provision
