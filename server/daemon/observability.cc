#include "daemon/observability.h"

#include <algorithm>
#include <chrono>
#include <map>
#include <set>
#include <string>
#include <system_error>
#include <thread>

#include "images/chunk_store.h"
#include "provision/power_service.h"
#include "store/store.h"

namespace kiln::daemon {
namespace {

// Seconds to hours: an agent starts in seconds to minutes, imaging takes minutes, a fleet's
// slowest deployments (queued BMCs, retried deadlines) hours.
const std::vector<double> kStageBuckets = {1,   5,    10,   30,   60,    120,   300,  600,
                                           900, 1800, 3600, 7200, 14400, 28800, 86400};

double seconds_between(std::int64_t from_ms, std::int64_t to_ms) {
  return std::max<std::int64_t>(0, to_ms - from_ms) / 1000.0;
}

}  // namespace

DeployStageMetrics::DeployStageMetrics(store::Store& store, Metrics& metrics, const Clock& clock)
    : store_(store), metrics_(metrics), clock_(clock), cursor_(store.last_event_id()) {
  metrics_.describe_histogram(
      kStageHistogram,
      "Deployment stage durations (waiting: assigned to the agent's first report; imaging: to "
      "the image written; booting: to the boot confirmed; total: assigned to booted or ended), "
      "observed when the stage ends, by result (ok, failed, superseded).",
      kStageBuckets);
  metrics_.describe("kiln_deployment_oldest_active_seconds", Metrics::Type::kGauge,
                    "Age of the oldest pending and of the oldest running deployment (0: none).");
  metrics_.add_collector([this] {
    collect();
    std::vector<Metrics::Sample> out;
    const auto now = clock_.now_ms();
    for (const auto& [status, created] : store_.oldest_active_deployments()) {
      out.emplace_back("kiln_deployment_oldest_active_seconds", Labels{{"status", status}},
                       created ? seconds_between(*created, now) : 0.0);
    }
    return out;
  });
}

void DeployStageMetrics::collect() {
  std::lock_guard lock(mu_);
  constexpr int kBatch = 1000;
  auto observe = [this](const char* stage, const char* result, std::int64_t from, std::int64_t to) {
    metrics_.observe(kStageHistogram, {{"stage", stage}, {"result", result}},
                     seconds_between(from, to));
  };
  // Every event up to here is committed and visible to the queries below (one writer, ids in
  // commit order): the cursor moves past it even where the last events are no milestones, so
  // a scrape never rescans the power and machine events of earlier scrapes.
  const std::int64_t upto = store_.last_event_id();
  for (;;) {
    const auto batch = store_.deployment_milestones_since(cursor_, kBatch);
    for (const auto& m : batch) {
      cursor_ = m.event_id;
      const bool agent_report = m.type == "deployment.progress" ||
                                m.type == "deployment.succeeded" || m.type == "deployment.failed";
      // The agent's first report sets started_at to its own time; later ones leave it.
      if (agent_report && m.started_at && *m.started_at == m.event_at &&
          started_.insert(m.deployment_id).second) {
        observe("waiting", "ok", m.created_at, *m.started_at);
      }
      if (m.type == "deployment.succeeded") {
        if (m.started_at && m.written_at) observe("imaging", "ok", *m.started_at, *m.written_at);
        started_.erase(m.deployment_id);
      } else if (m.type == "deployment.booted") {
        const std::int64_t at = m.booted_at.value_or(m.event_at);
        if (m.written_at) observe("booting", "ok", *m.written_at, at);
        observe("total", "ok", m.created_at, at);
      } else if (m.type == "deployment.failed" || m.type == "deployment.superseded") {
        const char* result = m.type == "deployment.failed" ? "failed" : "superseded";
        const std::int64_t at = m.finished_at.value_or(m.event_at);
        if (!m.started_at) {
          observe("waiting", result, m.created_at, at);
        } else if (!m.written_at) {
          observe("imaging", result, *m.started_at, at);
        } else {
          observe("booting", result, *m.written_at, at);
        }
        observe("total", result, m.created_at, at);
        started_.erase(m.deployment_id);
      }
    }
    if (batch.size() < static_cast<std::size_t>(kBatch)) break;
  }
  cursor_ = std::max(cursor_, upto);
}

void add_dhcp_pool_collector(Metrics& metrics, store::Store& store, const Clock& clock,
                             std::vector<dhcp::Subnet> subnets) {
  metrics.describe("kiln_dhcp_pool_addresses", Metrics::Type::kGauge,
                   "Addresses in the DHCP pool of each subnet.");
  metrics.describe("kiln_dhcp_pool_leases", Metrics::Type::kGauge,
                   "Pool addresses in use, by lease state (offered and bound: unexpired; "
                   "declined: in quarantine; reserved: a registered machine's address, which "
                   "no other client gets, without a lease now).");
  metrics.describe("kiln_dhcp_pool_free_addresses", Metrics::Type::kGauge,
                   "Pool addresses a new client could get.");
  metrics.add_collector([&store, &clock, subnets = std::move(subnets)] {
    std::vector<Metrics::Sample> out;
    const auto now = clock.now_ms();
    // subnet index -> state -> count
    std::vector<std::map<std::string, std::int64_t>> used(subnets.size());
    auto count = [&](const dhcp::Ipv4& ip, const std::string& state) {
      for (std::size_t i = 0; i < subnets.size(); ++i) {
        if (subnets[i].contains(ip) && subnets[i].in_pool(ip)) {
          ++used[i][state];
          return;
        }
      }
    };
    std::set<std::uint32_t> leased;
    for (const auto& l : store.load_dhcp_leases()) {
      if (l.state == "released" || l.expires_at <= now) continue;
      auto ip = dhcp::parse_ipv4(l.ip);
      if (!ip) continue;
      leased.insert(dhcp::to_u32(*ip));
      count(*ip, l.state);
    }
    // The engine never offers a machine's registered address to another client: without a
    // lease on it, it is still not free.
    std::set<std::uint32_t> reserved;
    for (const auto& [mac, addr] : store.list_machine_macs()) {
      auto ip = addr ? dhcp::parse_ipv4(*addr) : std::nullopt;
      if (!ip || leased.count(dhcp::to_u32(*ip)) || !reserved.insert(dhcp::to_u32(*ip)).second) {
        continue;
      }
      count(*ip, "reserved");
    }
    for (std::size_t i = 0; i < subnets.size(); ++i) {
      const auto& s = subnets[i];
      const std::string name = dhcp::to_string(s.network) + "/" + std::to_string(s.prefix);
      const auto first = dhcp::to_u32(s.pool_first), last = dhcp::to_u32(s.pool_last);
      const std::int64_t size = last >= first ? static_cast<std::int64_t>(last - first) + 1 : 0;
      std::int64_t in_use = 0;
      for (const char* state : {"offered", "bound", "declined", "reserved"}) {
        const auto it = used[i].find(state);
        const std::int64_t n = it == used[i].end() ? 0 : it->second;
        in_use += n;
        out.emplace_back("kiln_dhcp_pool_leases", Labels{{"subnet", name}, {"state", state}},
                         static_cast<double>(n));
      }
      out.emplace_back("kiln_dhcp_pool_addresses", Labels{{"subnet", name}},
                       static_cast<double>(size));
      out.emplace_back("kiln_dhcp_pool_free_addresses", Labels{{"subnet", name}},
                       static_cast<double>(std::max<std::int64_t>(0, size - in_use)));
    }
    return out;
  });
}

void add_image_store_collector(Metrics& metrics, std::filesystem::path dir) {
  metrics.describe("kiln_image_store_chunk_bytes", Metrics::Type::kGauge,
                   "Bytes held by the image store's chunk files (counted at the first scrape, "
                   "then recounted in the background when the count is over 30 s old).");
  metrics.describe("kiln_image_store_filesystem_free_bytes", Metrics::Type::kGauge,
                   "Bytes kilnd may still write on the image store's filesystem (statvfs).");
  metrics.describe("kiln_image_store_filesystem_size_bytes", Metrics::Type::kGauge,
                   "Size of the image store's filesystem (statvfs).");
  struct Cache {
    std::mutex mu;
    std::chrono::steady_clock::time_point at{};
    bool valid = false;
    bool walking = false;
    std::uint64_t bytes = 0;
  };
  auto cache = std::make_shared<Cache>();
  metrics.add_collector([dir = std::move(dir), cache] {
    std::vector<Metrics::Sample> out;
    // Walking every chunk file is the truth but not free (seconds with millions of chunks):
    // the first scrape walks, later ones answer the last count at once and start a walk in
    // the background when it is over 30 s old, so a scrape never waits on a big store.
    std::unique_lock lock(cache->mu);
    const auto now = std::chrono::steady_clock::now();
    if (!cache->valid) {
      cache->bytes = images::chunk_file_bytes(dir);
      cache->at = now;
      cache->valid = true;
    } else if (now - cache->at >= std::chrono::seconds(30) && !cache->walking) {
      cache->walking = true;
      std::thread([cache, dir] {
        const auto n = images::chunk_file_bytes(dir);
        std::lock_guard done(cache->mu);
        cache->bytes = n;
        cache->at = std::chrono::steady_clock::now();
        cache->walking = false;
      }).detach();
    }
    out.emplace_back("kiln_image_store_chunk_bytes", Labels{}, static_cast<double>(cache->bytes));
    lock.unlock();
    if (auto space = images::filesystem_space(dir)) {
      out.emplace_back("kiln_image_store_filesystem_free_bytes", Labels{},
                       static_cast<double>(space->available));
      out.emplace_back("kiln_image_store_filesystem_size_bytes", Labels{},
                       static_cast<double>(space->size));
    }
    return out;
  });
}

void add_rollout_collector(Metrics& metrics, store::Store& store) {
  metrics.describe("kiln_rollouts", Metrics::Type::kGauge, "Rollouts by state.");
  metrics.add_collector([&store] {
    std::vector<Metrics::Sample> out;
    for (const auto& [state, n] : store.count_rollouts_by_state()) {
      out.emplace_back("kiln_rollouts", Labels{{"state", state}}, static_cast<double>(n));
    }
    return out;
  });
}

void add_bmc_collector(Metrics& metrics, store::Store& store, provision::PowerService& power) {
  metrics.describe("kiln_bmc_machines", Metrics::Type::kGauge,
                   "Machines with a BMC by the power state it last reported (unknown: not asked "
                   "since kilnd started, or its last operation failed).");
  metrics.describe("kiln_bmc_unreachable_machines", Metrics::Type::kGauge,
                   "Machines whose BMC's last operation failed.");
  metrics.describe(
      "kiln_bmc_operations_total", Metrics::Type::kCounter,
      "BMC calls (a status read, a power action) kilnd made since it started, by result.");
  metrics.add_collector([&store, &power] {
    std::vector<Metrics::Sample> out;
    const auto stats = power.bmc_stats();
    std::map<std::string, std::int64_t> by_state{{"on", 0}, {"off", 0}, {"unknown", 0}};
    std::int64_t unreachable = 0;
    for (const auto id : store.bmc_machine_ids()) {
      const auto it = stats.machines.find(id);
      if (it == stats.machines.end()) {
        ++by_state["unknown"];
        continue;
      }
      ++by_state[power::power_state_name(it->second.state)];
      if (!it->second.reachable) ++unreachable;
    }
    for (const auto& [state, n] : by_state) {
      out.emplace_back("kiln_bmc_machines", Labels{{"power_state", state}}, static_cast<double>(n));
    }
    out.emplace_back("kiln_bmc_unreachable_machines", Labels{}, static_cast<double>(unreachable));
    out.emplace_back("kiln_bmc_operations_total", Labels{{"result", "ok"}},
                     static_cast<double>(stats.ok));
    out.emplace_back("kiln_bmc_operations_total", Labels{{"result", "failed"}},
                     static_cast<double>(stats.failed));
    return out;
  });
}

}  // namespace kiln::daemon
