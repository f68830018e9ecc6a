// tests/tools/fleet_sim.h — the fleet simulator's pure parts: its options, machine sets
// ("0-9,17"), the MAC and name of machine i, and what an iPXE script from kilnd asks a machine
// to do. No I/O here; fleet_sim.cc is the program (simulated Redfish BMCs, boot paths, the
// control endpoint). See tests/tools/README-fleet.md.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.h"

namespace kiln::fleet {

// Machine indexes from "0-9,17" (ranges inclusive; every index < `machines`). kInvalid names
// the bad part.
Result<std::vector<bool>> parse_machine_set(std::string_view text, int machines);

// "SET:N" -> the set and N (N optional when `default_n` >= 0; must be >= 1).
struct SetWithCount {
  std::vector<bool> set;
  int n = 0;
};
Result<SetWithCount> parse_set_with_count(std::string_view text, int machines, int default_n);

// Machine i's identity: a locally administered MAC 02:4b:53:00:HH:LL (index < 65536), the
// name sim-NNNN, the rack label rNN (i % racks).
std::string machine_mac(int index);
std::string machine_name(int index);
std::string machine_rack(int index, int racks);

// What a script from /boot/<mac>.ipxe asks for, read the way the templates in ipxe-scripts/
// are written (a scripts_dir override that keeps kiln.mode= and the chain/sleep loop reads
// the same).
struct BootScript {
  enum Kind { kDeploy, kDiscover, kLocalBoot, kWait, kUnknown } kind = kUnknown;
  std::string server;   // kiln.server=
  std::string ticket;   // kiln.ticket=
  std::string after;    // kiln.after=
  int sleep_s = 0;      // the wait/failed loop's "sleep N"
  bool failed = false;  // failed.ipxe (a wait loop that says "failed")
};
BootScript parse_boot_script(std::string_view text);
const char* to_string(BootScript::Kind k);

struct Options {
  int machines = 10;
  std::string kilnd;  // kilnd's base URL (scripts, and registration)
  bool register_machines = false;
  std::string token;  // admin API token for --register
  int racks = 10;
  std::string listen_host = "127.0.0.1";
  int bmc_base_port = 0;  // 0: each BMC on an ephemeral port
  std::string bmc_user = "admin";
  std::string bmc_password = "fleet-sim-pw";
  int control_port = 0;
  std::string ready_file;
  int workers = 32;
  int io_threads = 2;
  int boot_delay_ms = 300;
  int deploy_time_ms = 0;
  int max_seconds = 600;
  int verbose_machines = 20;          // per-step log lines for machines below this index
  std::set<std::string> never_boots;  // "version" or "image:version"
  std::vector<bool> bmc_timeout;
  std::vector<bool> die_mid_write;
  int die_mid_write_times = 1;
  std::vector<bool> slow;
  int slow_kbps = 0;
};

}  // namespace kiln::fleet
