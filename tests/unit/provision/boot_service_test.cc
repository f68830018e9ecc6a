#include "provision/boot_service.h"

#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <map>
#include <sstream>
#include <stdexcept>

namespace kiln::provision {
namespace {

using proto::MachineState;

constexpr std::string_view kMac = "52:54:00:12:34:56";
constexpr std::string_view kRel = "52-54-00-12-34-56.ipxe";  // iPXE's ${net0/mac:hexhyp}
constexpr std::string_view kServer = "http://10.99.0.1:8080";

// --- in-memory fakes of provision/ports.h ----------------------------------------------------

class FakeMachines final : public MachineDirectory {
 public:
  std::map<std::int64_t, proto::Machine> by_id;
  Result<proto::Machine> find_by_mac(const std::string& mac) override {
    for (const auto& [id, m] : by_id) {
      if (std::ranges::count(m.macs, mac)) return m;
    }
    return make_error(Errc::kNotFound, "no machine with MAC " + mac);
  }
  Result<std::pair<proto::Machine, bool>> discover(const std::string& mac, const std::string& who,
                                                   bool approved) override {
    if (auto m = find_by_mac(mac)) return std::pair{*m, false};
    proto::Machine& m = add(mac, MachineState::kDiscovered);
    m.approved = approved;
    return std::pair{m, true};
  }
  Result<proto::Machine> get(std::int64_t id) override {
    if (auto it = by_id.find(id); it != by_id.end()) return it->second;
    return make_error(Errc::kNotFound, "no machine " + std::to_string(id));
  }
  std::int64_t count_discovered() override {
    return std::ranges::count_if(
        by_id, [](auto& e) { return e.second.state == MachineState::kDiscovered; });
  }
  proto::Machine& add(std::string mac, MachineState state) {
    const std::int64_t id = static_cast<std::int64_t>(by_id.size()) + 1;
    proto::Machine& m = by_id[id];
    m.id = id;
    m.macs = {std::move(mac)};
    m.state = state;
    return m;
  }
};

// Deployments of one machine's version; failures count a streak as the store's retry rule does.
class FakeLedger final : public DeploymentLedger {
 public:
  explicit FakeLedger(FakeMachines& machines) : machines_(machines) {}
  std::map<std::int64_t, proto::Deployment> by_id;
  std::vector<std::pair<std::int64_t, std::int64_t>> minted;  // deployment, expires_at_ms
  std::map<std::int64_t, std::string> tickets;                // what the store keeps
  std::vector<int> retry_max_attempts;  // what each retry_failed call was allowed
  int failed_in_a_row = 0;
  bool lose_retry_race = false;  // another request starts the retry first

  Result<proto::Deployment> get(std::int64_t id) override {
    if (auto it = by_id.find(id); it != by_id.end()) return it->second;
    return make_error(Errc::kNotFound, "deployment " + std::to_string(id) + " not found");
  }
  // Like the store: one ticket per deployment, the same on every call.
  Result<std::string> agent_ticket(std::int64_t id, std::int64_t expires_at_ms) override {
    if (auto it = tickets.find(id); it != tickets.end()) return it->second;
    minted.emplace_back(id, expires_at_ms);
    return tickets[id] = "kilnticket_" + std::to_string(minted.size());
  }
  Result<proto::Deployment> retry_failed(std::int64_t machine_id, int max_attempts,
                                         const std::string& who) override {
    retry_max_attempts.push_back(max_attempts);
    if (failed_in_a_row >= max_attempts) {
      return make_error(Errc::kConflict, std::to_string(failed_in_a_row) +
                                             " deployments of this version failed in a row");
    }
    const proto::Deployment d = start(machine_id, "ubuntu", "24.04");
    if (lose_retry_race) return make_error(Errc::kConflict, "a deployment is in progress");
    return d;
  }
  // An active deployment of `image:version` for `machine_id`, which becomes `deploying`.
  proto::Deployment& start(std::int64_t machine_id, std::string image, std::string version) {
    const std::int64_t id = static_cast<std::int64_t>(by_id.size()) + 100;
    proto::Deployment& d = by_id[id];
    d.id = id;
    d.machine_id = machine_id;
    d.to_version = {7, std::move(image), std::move(version)};
    proto::Machine& m = machines_.by_id.at(machine_id);
    m.state = MachineState::kDeploying;
    m.active_deployment_id = id;
    return d;
  }

 private:
  FakeMachines& machines_;
};

class FakeLeases final : public LeaseBook {
 public:
  std::map<std::string, std::vector<std::string>> bound;
  bool fail = false;  // the storage behind it is broken
  std::vector<std::string> bound_addresses(const std::string& mac) override {
    if (fail) throw std::runtime_error("disk I/O error");
    return bound[mac];
  }
};

class FixedClock final : public Clock {
 public:
  std::int64_t now_ms() const override { return 1'700'000'000'000; }
};

// One boot service over the fakes; options may be changed until the first boot().
struct Rig {
  FakeMachines machines;
  FakeLedger ledger{machines};
  FakeLeases leases;
  Metrics metrics;
  FixedClock clock;
  std::ostringstream log_text;
  BootOptions options;
  std::string server_url{kServer};
  std::unique_ptr<BootService> service;

  Result<std::string> boot(std::string_view peer = "10.99.0.150", std::string_view rel = kRel) {
    if (!service) {
      auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(log_text);
      auto log = std::make_shared<spdlog::logger>("boot_service_test", sink);
      log->set_pattern("%v");
      service = std::make_unique<BootService>(options, machines, ledger, leases, metrics, clock,
                                              std::move(log));
      if (auto st = service->init(); !st) throw std::runtime_error(st.error().message);
      service->set_server_url(server_url);
    }
    return service->generate(rel, boot::Requester{"http", std::string(peer)});
  }
  proto::Machine& machine(MachineState state) { return machines.add(std::string(kMac), state); }
  double scripts(std::string_view script) const {
    return metrics.value("kiln_boot_scripts_total", {{"script", std::string(script)}});
  }
};

bool has(const Result<std::string>& r, std::string_view text) {
  return r && r->find(text) != std::string::npos;
}

std::string describe(const Result<std::string>& r) {
  return r ? *r : "error " + std::string(errc_name(r.error().code)) + ": " + r.error().message;
}

// --- tables ---------------------------------------------------------------------------------

TEST(BootService, UnknownMacTable) {
  struct Row {
    const char* name;
    bool discover_unknown;
    int already_discovered;  // other machines in state discovered
    int max_discovered;
    bool want_script;  // else kNotFound
  } rows[] = {
      {"discovery on", true, 0, 10, true},    {"below the cap", true, 1, 2, true},
      {"at the cap", true, 2, 2, false},      {"cap of zero", true, 0, 0, false},
      {"discovery off", false, 0, 10, false},
  };
  for (const auto& r : rows) {
    Rig rig;
    rig.options.discover_unknown = r.discover_unknown;
    rig.options.max_discovered = r.max_discovered;
    for (int i = 0; i < r.already_discovered; ++i) {
      rig.machines.add("52:54:00:00:00:0" + std::to_string(i), MachineState::kDiscovered);
    }
    auto out = rig.boot();
    if (r.want_script) {
      EXPECT_TRUE(has(out, "kiln.mode=discover")) << r.name << ": " << describe(out);
      EXPECT_TRUE(rig.machines.find_by_mac(std::string(kMac))) << r.name;
      EXPECT_NE(rig.log_text.str().find("discovered=new"), std::string::npos) << r.name;
      EXPECT_EQ(rig.scripts("discover"), 1) << r.name;
    } else {
      ASSERT_FALSE(out) << r.name;
      EXPECT_EQ(out.error().code, Errc::kNotFound) << r.name;
      EXPECT_FALSE(rig.machines.find_by_mac(std::string(kMac))) << r.name << ": not registered";
      EXPECT_EQ(rig.scripts("discover"), 0) << r.name;
    }
  }
}

TEST(BootService, CapAppliesToUnknownMacsOnly) {
  Rig rig;
  rig.options.max_discovered = 1;
  rig.machine(MachineState::kDiscovered);  // itself: the one discovered machine
  auto out = rig.boot();
  EXPECT_TRUE(has(out, "kiln.mode=discover")) << describe(out);
  EXPECT_EQ(rig.log_text.str().find("discovered=new"), std::string::npos);
}

TEST(BootService, LeaseBindingTable) {
  struct Row {
    const char* name;
    bool bind_to_lease;
    std::vector<std::string> leased;
    const char* peer;
    bool served;
  } rows[] = {
      {"at its lease", true, {"10.99.0.150"}, "10.99.0.150", true},
      {"another address", true, {"10.99.0.150"}, "10.99.0.151", false},
      {"IPv4-mapped peer at its lease", true, {"10.99.0.150"}, "::ffff:10.99.0.150", true},
      {"IPv4-mapped peer elsewhere", true, {"10.99.0.150"}, "::ffff:10.99.0.151", false},
      {"IPv6 peer", true, {"10.99.0.150"}, "fe80::1", false},
      {"at its second lease", true, {"10.99.0.150", "10.99.1.150"}, "10.99.1.150", true},
      {"no lease: anywhere", true, {}, "192.0.2.7", true},
      {"binding off", false, {"10.99.0.150"}, "10.99.0.151", true},
  };
  for (const auto& r : rows) {
    Rig rig;
    rig.options.bind_to_lease = r.bind_to_lease;
    rig.machine(MachineState::kReady);
    rig.leases.bound[std::string(kMac)] = r.leased;
    auto out = rig.boot(r.peer);
    const double refused =
        rig.metrics.value("kiln_boot_scripts_refused_total", {{"reason", "not-lease-address"}});
    if (r.served) {
      EXPECT_TRUE(has(out, "waiting for an assignment")) << r.name << ": " << describe(out);
      EXPECT_EQ(refused, 0) << r.name;
    } else {
      ASSERT_FALSE(out) << r.name;
      EXPECT_EQ(out.error().code, Errc::kNotFound) << r.name;
      EXPECT_EQ(refused, 1) << r.name;
      EXPECT_NE(rig.log_text.str().find("event=boot.script_refused mac=52:54:00:12:34:56 peer=" +
                                        std::string(r.peer) + " proto=http leased=10.99.0.150"),
                std::string::npos)
          << r.name << ": " << rig.log_text.str();
    }
  }
}

TEST(BootService, LeaseRefusalComesBeforeDiscovery) {
  Rig rig;
  rig.leases.bound[std::string(kMac)] = {"10.99.0.150"};
  EXPECT_FALSE(rig.boot("10.99.0.151"));
  EXPECT_TRUE(rig.machines.by_id.empty());
}

TEST(BootService, AutomaticRetryTable) {
  struct Row {
    int retries;
    int failed_in_a_row;
    bool want_deploy;  // else the failed script
  } rows[] = {
      {2, 1, true}, {2, 2, true}, {2, 3, false}, {0, 1, false}, {1, 1, true}, {1, 2, false},
  };
  for (const auto& r : rows) {
    Rig rig;
    rig.options.retries = r.retries;
    proto::Machine& m = rig.machine(MachineState::kFailed);
    m.state_reason = "deployment 99 failed: bad disk";
    rig.ledger.failed_in_a_row = r.failed_in_a_row;
    auto out = rig.boot();
    const std::string row =
        "retries=" + std::to_string(r.retries) + " failed=" + std::to_string(r.failed_in_a_row);
    EXPECT_EQ(rig.ledger.retry_max_attempts, std::vector<int>{r.retries + 1}) << row;
    if (r.want_deploy) {
      EXPECT_TRUE(has(out, "kiln.mode=deploy")) << row << ": " << describe(out);
      EXPECT_EQ(rig.ledger.minted.size(), 1u) << row;
      EXPECT_NE(rig.log_text.str().find("retry_deployment=100"), std::string::npos) << row;
    } else {
      EXPECT_TRUE(has(out, "echo kiln: 52:54:00:12:34:56 failed: deployment 99 failed: bad disk (" +
                               std::to_string(r.failed_in_a_row) +
                               " deployments of this version failed in a row)"))
          << row << ": " << describe(out);
      EXPECT_TRUE(rig.ledger.minted.empty()) << row;
      EXPECT_NE(rig.log_text.str().find("no_retry=\""), std::string::npos) << row;
    }
  }
}

TEST(BootService, JoinsARetryAnotherRequestStarted) {
  Rig rig;
  rig.machine(MachineState::kFailed);
  rig.ledger.failed_in_a_row = 1;
  rig.ledger.lose_retry_race = true;
  auto out = rig.boot();
  EXPECT_TRUE(has(out, "kiln.mode=deploy")) << describe(out);
  EXPECT_TRUE(has(out, "deployment 100:"));
}

// A script fetch is not an agent boot (boots are counted when the agent opens its session):
// fetching the script again neither fails the deployment nor changes its ticket, so nobody who
// can send a TFTP packet can stall a deployment or revoke its running agent's credential.
TEST(BootService, RefetchingTheDeployScriptKeepsTheTicketAndCountsNoBoot) {
  Rig rig;
  rig.ledger.start(rig.machine(MachineState::kReady).id, "ubuntu", "24.04");
  Result<std::string> first = rig.boot();
  ASSERT_TRUE(has(first, " kiln.ticket=kilnticket_1 ")) << describe(first);
  for (int i = 0; i < 20; ++i) {
    auto again = rig.boot(i % 2 ? "10.99.0.150" : "10.99.0.77");
    ASSERT_TRUE(has(again, " kiln.ticket=kilnticket_1 ")) << i << ": " << describe(again);
  }
  EXPECT_EQ(rig.ledger.minted.size(), 1u);
  EXPECT_EQ(rig.scripts("deploy"), 21);
  EXPECT_EQ(rig.machines.by_id.at(1).state, MachineState::kDeploying);
}

TEST(BootService, DiscoveryApprovalTable) {
  struct Row {
    const char* discovery;
    bool registered_approved;  // how a new machine is registered
    const char* want;          // the script's text
  } rows[] = {
      {"open", true, "kiln.mode=discover"},
      {"approve", false, "is awaiting-approval: waiting"},
  };
  for (const auto& r : rows) {
    Rig rig;
    rig.options.discovery = r.discovery;
    auto out = rig.boot();
    EXPECT_TRUE(has(out, r.want)) << r.discovery << ": " << describe(out);
    auto m = rig.machines.find_by_mac(std::string(kMac));
    ASSERT_TRUE(m) << r.discovery;
    EXPECT_EQ(m->approved, r.registered_approved) << r.discovery;
    // Still waiting on the next fetch (no discovery agent, no inventory) until approved.
    out = rig.boot();
    EXPECT_TRUE(has(out, r.want)) << r.discovery << ": " << describe(out);
  }
  Rig rig;
  rig.options.discovery = "approve";
  (void)rig.boot();
  rig.machines.by_id.at(1).approved = true;  // the operator approved it
  EXPECT_TRUE(has(rig.boot(), "kiln.mode=discover"));
}

TEST(BootService, DiscoveryRateLimit) {
  Rig rig;
  rig.options.discovery_per_minute = 3;
  int served = 0;
  for (int i = 0; i < 10; ++i) {
    char rel[32];
    std::snprintf(rel, sizeof rel, "52-54-00-00-01-%02x.ipxe", i);
    if (has(rig.boot("10.99.0.150", rel), "kiln.mode=discover")) ++served;
  }
  // The clock stands still: exactly the bucket's worth is registered, the rest refused.
  EXPECT_EQ(served, 3);
  EXPECT_EQ(rig.machines.by_id.size(), 3u);
  EXPECT_EQ(rig.metrics.value("kiln_boot_scripts_refused_total", {{"reason", "discovery-rate"}}),
            7);
  // A known machine is never limited.
  EXPECT_TRUE(has(rig.boot("10.99.0.150", "52-54-00-00-01-00.ipxe"), "kiln.mode=discover"));
}

TEST(BootService, DiscoveryRateLimitPerAddress) {
  Rig rig;
  rig.options.discovery_per_minute = 60;
  rig.options.discovery_per_minute_per_address = 2;
  auto boot_new = [&](const char* peer, int i) {
    char rel[32];
    std::snprintf(rel, sizeof rel, "52-54-00-00-02-%02x.ipxe", i);
    return has(rig.boot(peer, rel), "kiln.mode=discover");
  };
  int a = 0, b = 0;
  for (int i = 0; i < 5; ++i) a += boot_new("10.99.0.150", i) ? 1 : 0;
  for (int i = 5; i < 10; ++i) b += boot_new("::ffff:10.99.0.151", i) ? 1 : 0;
  // One host takes its share only; another still registers its own.
  EXPECT_EQ(a, 2);
  EXPECT_EQ(b, 2);
  EXPECT_EQ(rig.machines.by_id.size(), 4u);
  EXPECT_EQ(
      rig.metrics.value("kiln_boot_scripts_refused_total", {{"reason", "discovery-rate-address"}}),
      6);
}

TEST(BootService, TicketOnlyForTheDeployScriptTable) {
  struct Row {
    MachineState state;
    bool active;  // an active deployment
    const char* script;
  } rows[] = {
      {MachineState::kDiscovered, false, "discover"}, {MachineState::kReady, false, "wait"},
      {MachineState::kDeploying, true, "deploy"},     {MachineState::kDeploying, false, "wait"},
      {MachineState::kDeployed, false, "localboot"},  {MachineState::kDeployed, true, "deploy"},
      {MachineState::kFailed, false, "failed"},
  };
  for (const auto& r : rows) {
    Rig rig;
    rig.options.retries = 0;
    rig.options.token_ttl = std::chrono::minutes(10);
    auto& m = rig.machine(r.state);
    m.current_version = proto::VersionRef{7, "debian", "12"};
    rig.ledger.failed_in_a_row = 1;
    if (r.active) rig.ledger.start(m.id, "ubuntu", "24.04");
    m.state = r.state;
    auto out = rig.boot();
    const std::string row =
        std::string(proto::to_string(r.state)) + " active=" + (r.active ? "yes" : "no");
    ASSERT_TRUE(out) << row << ": " << out.error().message;
    EXPECT_EQ(rig.scripts(r.script), 1) << row;
    if (std::string_view(r.script) == "deploy") {
      ASSERT_EQ(rig.ledger.minted.size(), 1u) << row;
      EXPECT_EQ(rig.ledger.minted[0],
                (std::pair<std::int64_t, std::int64_t>{100, rig.clock.now_ms() + 600'000}))
          << row;
      EXPECT_TRUE(has(out, " kiln.ticket=kilnticket_1 ")) << row;
    } else {
      EXPECT_TRUE(rig.ledger.minted.empty()) << row;
      EXPECT_FALSE(has(out, "kiln.ticket=")) << row;
    }
  }
}

TEST(BootService, LocalBootCommandsPerFirmwareTable) {
  using boot::LocalBoot;
  struct Row {
    LocalBoot bios, efi;
    const char* want;
  } rows[] = {
      {LocalBoot::kSanboot, LocalBoot::kExit,
       "iseq ${platform} efi && goto efi ||\nsanboot --no-describe --drive 0x80 || exit 1\n"
       "goto end\n:efi\nexit 1\n"},
      {LocalBoot::kExit, LocalBoot::kExit, "||\nexit 1\ngoto end\n:efi\nexit 1\n"},
      {LocalBoot::kExit, LocalBoot::kSanboot,
       "||\nexit 1\ngoto end\n:efi\nsanboot --no-describe --drive 0x80 || exit 1\n"},
  };
  for (const auto& r : rows) {
    Rig rig;
    rig.options.local_bios = r.bios;
    rig.options.local_efi = r.efi;
    auto& m = rig.machine(MachineState::kDeployed);
    m.current_version = proto::VersionRef{7, "ubuntu", "24.04"};
    auto out = rig.boot();
    EXPECT_TRUE(has(out, r.want)) << describe(out);
    EXPECT_TRUE(has(out, "is deployed with ubuntu:24.04: booting from the local disk"));
  }
}

TEST(BootService, DeployScriptVariables) {
  struct Row {
    std::optional<std::string> disk_label;
    const char* want_disk;
  } rows[] = {{std::nullopt, "largest"}, {"/dev/nvme1n1", "/dev/nvme1n1"}};
  for (const auto& r : rows) {
    Rig rig;
    rig.server_url = "http://kiln.test:8081";
    rig.options.kernel = "agent/vmlinuz";
    rig.options.initrd = "agent/v2/initrd.img";
    rig.options.cmdline = "console=ttyS1";
    rig.options.after = "kexec";
    auto& m = rig.machine(MachineState::kReady);
    if (r.disk_label) m.labels["kiln.disk"] = *r.disk_label;
    rig.ledger.start(m.id, "ubuntu", "24.04");
    auto out = rig.boot();
    const std::string disk = r.want_disk;
    EXPECT_TRUE(has(out,
                    "echo kiln: 52:54:00:12:34:56 deployment 100: writing ubuntu:24.04 to "
                    "disk " +
                        disk + "\n"))
        << describe(out);
    EXPECT_TRUE(has(out,
                    "kernel http://kiln.test:8081/files/agent/vmlinuz initrd=initrd.img "
                    "console=ttyS1 kiln.mode=deploy kiln.server=http://kiln.test:8081 "
                    "kiln.mac=52:54:00:12:34:56 kiln.ticket=kilnticket_1 kiln.disk=" +
                        disk + " kiln.after=kexec || goto failed\n"))
        << describe(out);
    EXPECT_TRUE(has(out, "initrd http://kiln.test:8081/files/agent/v2/initrd.img || goto failed"));
    EXPECT_TRUE(has(out,
                    "sleep 10\nchain --replace --autofree "
                    "http://kiln.test:8081/boot/52-54-00-12-34-56.ipxe || goto failed"));
  }
}

TEST(BootService, DiscoverAndWaitVariables) {
  Rig rig;
  rig.options.after_discover = "poweroff";
  rig.options.poll_s = 7;
  auto discover = rig.boot();
  EXPECT_TRUE(has(discover,
                  "kiln.mode=discover kiln.server=http://10.99.0.1:8080 "
                  "kiln.mac=52:54:00:12:34:56 kiln.after=poweroff || goto failed"))
      << describe(discover);
  rig.machines.by_id.at(1).state = MachineState::kReady;
  auto wait = rig.boot();
  EXPECT_TRUE(has(wait,
                  "echo kiln: 52:54:00:12:34:56 is ready: waiting for an assignment "
                  "(asking every 7 s)\n:poll\nsleep 7\n"))
      << describe(wait);
}

TEST(BootService, NamesAndMacForms) {
  Rig rig;
  rig.machine(MachineState::kReady);
  for (std::string_view rel : {"52-54-00-12-34-56.ipxe", "525400123456.ipxe",
                               "52:54:00:12:34:56.ipxe", "52-54-00-12-34-56.IPXE"}) {
    auto out = rig.boot("10.99.0.150", rel);
    if (rel.ends_with(".IPXE")) {
      ASSERT_FALSE(out) << rel;
      EXPECT_EQ(out.error().code, Errc::kNotFound) << rel;
    } else {
      EXPECT_TRUE(has(out, "kiln: 52:54:00:12:34:56 is ready")) << rel << ": " << describe(out);
    }
  }
  for (std::string_view rel : {".ipxe", "ipxe", "52-54-00-12-34.ipxe", "zz-54-00-12-34-56.ipxe"}) {
    auto out = rig.boot("10.99.0.150", rel);
    ASSERT_FALSE(out) << rel;
    EXPECT_EQ(out.error().code, Errc::kNotFound) << rel;
  }
}

TEST(BootService, UnsetServerUrlIsUnavailable) {
  Rig rig;
  rig.server_url.clear();
  auto out = rig.boot();
  ASSERT_FALSE(out);
  EXPECT_EQ(out.error().code, Errc::kUnavailable);
  EXPECT_NE(rig.log_text.str().find("event=boot.script_failed mac=52:54:00:12:34:56"),
            std::string::npos);
}

TEST(BootService, StorageFailureIsUnavailable) {
  Rig rig;
  rig.leases.fail = true;
  auto out = rig.boot();
  ASSERT_FALSE(out);
  EXPECT_EQ(out.error().code, Errc::kUnavailable);
  EXPECT_EQ(out.error().message, "store: disk I/O error");
  EXPECT_NE(rig.log_text.str().find("err=\"store: disk I/O error\""), std::string::npos);
}

TEST(BootService, InitChecksOptions) {
  struct Row {
    void (*set)(BootOptions&);
    bool ok;
  } rows[] = {
      {[](BootOptions&) {}, true},
      {[](BootOptions& o) { o.after = "poweroff"; }, false},
      {[](BootOptions& o) { o.after_discover = "kexec"; }, false},
      {[](BootOptions& o) { o.poll_s = 0; }, false},
      {[](BootOptions& o) { o.retry_s = 0; }, false},
      {[](BootOptions& o) { o.retries = -1; }, false},
      {[](BootOptions& o) { o.retries = 0; }, true},
  };
  for (std::size_t i = 0; i < std::size(rows); ++i) {
    Rig rig;
    rows[i].set(rig.options);
    BootService s(rig.options, rig.machines, rig.ledger, rig.leases, rig.metrics, rig.clock,
                  spdlog::default_logger());
    EXPECT_EQ(static_cast<bool>(s.init()), rows[i].ok) << "row " << i;
  }
}

}  // namespace
}  // namespace kiln::provision
