// daemon/observability.h — the /metrics families kilnd computes at scrape time from where the
// truth lives: deploy stage durations (from the event log), DHCP pool use (the lease table),
// the image store (its chunk files and filesystem) and BMCs (what the power service last learnt).
//
// Deploy stages (`kiln_deployment_stage_seconds`, a histogram) are observed once per stage and
// deployment, when the stage ends: a scrape turns the events committed since the previous one
// (deployment.progress/succeeded/failed/booted/superseded, in commit order) into observations,
// so every path that ends a stage — an agent's report, a boot confirmation, a missed deadline,
// a newer assignment — is counted exactly once, whichever thread committed it, and a rolled-back
// transaction never. Stages, from the deployment's timestamps:
//   waiting  created → the agent's first report (started_at)
//   imaging  started → image written (written_at)
//   booting  written → boot confirmed by the deployed OS (booted_at)
//   total    created → boot confirmed; or created → the end for failed/superseded deployments
// `result` says how the stage ended: ok, failed or superseded. A deployment of an image without
// the boot-confirmation hook stays `succeeded`: its booting and total stages never end.
// The histogram counts stages that ended while this kilnd ran (it starts at the event log's end).
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <set>
#include <vector>

#include "core/clock.h"
#include "core/metrics.h"
#include "dhcp/engine.h"

namespace kiln::store {
class Store;
}
namespace kiln::provision {
class PowerService;
}

namespace kiln::daemon {

inline constexpr const char* kStageHistogram = "kiln_deployment_stage_seconds";

// Also kiln_deployment_oldest_active_seconds{status}: the age of the oldest pending and of the
// oldest running deployment (0: none), for "stuck deployment" alerts.
class DeployStageMetrics {
 public:
  // Declares the families and registers a collector on `metrics`; all must outlive this.
  DeployStageMetrics(store::Store& store, Metrics& metrics, const Clock& clock);
  // Observes the stages ended by events committed since the last call (a scrape calls it).
  void collect();

 private:
  store::Store& store_;
  Metrics& metrics_;
  const Clock& clock_;
  std::mutex mu_;            // one collection at a time: each event is read once
  std::int64_t cursor_ = 0;  // the last event turned into observations
  // Deployments whose waiting stage was observed and that have not ended yet.
  std::set<std::int64_t> started_;
};

// kiln_dhcp_pool_{addresses,leases,free_addresses}{subnet}: per configured subnet, from the
// lease table (an address is used while an offer or lease on it is unexpired, or while it is
// quarantined after a DECLINE: as the DHCP engine decides).
void add_dhcp_pool_collector(Metrics& metrics, store::Store& store, const Clock& clock,
                             std::vector<dhcp::Subnet> subnets);

// kiln_image_store_{chunk,filesystem_free,filesystem_size}_bytes for the store under `dir`.
void add_image_store_collector(Metrics& metrics, std::filesystem::path dir);

// kiln_rollouts{state}: rollouts by state (kiln_rollout_machines, from the rollout engine, has
// each unfinished rollout's machines).
void add_rollout_collector(Metrics& metrics, store::Store& store);

// kiln_bmc_machines{power_state}, kiln_bmc_unreachable_machines, kiln_bmc_operations_total.
void add_bmc_collector(Metrics& metrics, store::Store& store, provision::PowerService& power);

}  // namespace kiln::daemon
