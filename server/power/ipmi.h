// power/ipmi.h — the IPMI driver: Debian's `ipmitool -I lanplus`, as Ironic and MAAS drive it.
//
// Every operation runs ipmitool once per command (power status/on/off/cycle/soft, chassis
// bootdev pxe [options=efiboot], chassis bootparam get 5), with no shell, in its own process
// group, killed (the whole group) when it outlives its deadline, and its output parsed strictly:
// anything but the documented line is an error that quotes it.
//
// The password never appears on a command line (`ps`) or in the child's environment: ipmitool
// reads it with `-f /dev/fd/3` from a pipe that kilnd fills before the exec and closes (the
// secret is consumed once, never written to disk, and no temporary file can be left behind
// by a crash; `-E` would put it in /proc/<pid>/environ for the child's whole life). Output is
// scrubbed of the password anyway before it is quoted in an error.
//
// The process runner is behind CommandRunner so tests can script ipmitool. Not thread-safe
// (see driver.h); ProcessRunner itself may be shared between threads.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "core/result.h"
#include "power/driver.h"

namespace kiln::power {

struct CommandSpec {
  std::vector<std::string> argv;  // argv[0]: the absolute path executed (no PATH search)
  std::string fd3_data;           // when not empty: what the child reads on fd 3 (a pipe)
  std::chrono::milliseconds timeout{30'000};  // then SIGKILL to the child's process group
  std::size_t output_cap = 64 << 10;          // bytes kept of stdout and of stderr each
};

struct CommandResult {
  int exit_code = -1;      // the exit status; -1 when a signal ended the child
  int signal = 0;          // the signal that ended it, 0 when it exited
  bool timed_out = false;  // killed at the deadline
  bool truncated = false;  // stdout or stderr exceeded output_cap (the rest was read and dropped)
  std::string out;
  std::string err;
};

// Runs one command to completion. Errors (not a CommandResult) only when it cannot be started:
// kUnavailable naming the program (e.g. ipmitool is not installed).
class CommandRunner {
 public:
  virtual ~CommandRunner() = default;
  virtual Result<CommandResult> run(const CommandSpec& spec) = 0;
};

// The real runner: posix_spawn (no shell, an empty signal mask, default dispositions, stdin
// /dev/null, no descriptor but 0-2 and the fd 3 pipe, environment PATH and LC_ALL=C only, its
// own process group), stdout/stderr read through pipes up to the cap (the rest drained and
// dropped), the group killed with SIGKILL at the deadline, the child always reaped.
// Thread-safe.
std::unique_ptr<CommandRunner> process_runner();

struct IpmiOptions {
  std::string ipmitool = "/usr/bin/ipmitool";
  std::chrono::milliseconds poll_interval{1000};  // between power status reads after on/off
  int poll_attempts = 30;
};

class IpmiDriver final : public Driver {
 public:
  // `config` must have passed make_driver's checks (host, port, lengths).
  IpmiDriver(BmcConfig config, std::string host, std::uint16_t port,
             std::unique_ptr<CommandRunner> runner, IpmiOptions options = {});

  Result<PowerState> status() override;
  Result<std::vector<Step>> power(PowerAction action) override;
  Result<std::vector<Step>> boot_once_network(BootMode mode) override;

  // The argv ipmitool is run with for `command` (for tests and the event log: no secret in it).
  std::vector<std::string> argv(const std::vector<std::string>& command) const;

 private:
  Result<CommandResult> run(const std::string& step, const std::vector<std::string>& command,
                            Step* record);
  Result<PowerState> read_power(Step* record);
  Result<Step> control(const std::string& verb, const std::string& expect);
  Result<Step> wait_for(PowerState want);
  std::string scrub(std::string text) const;
  std::string who() const;

  BmcConfig config_;
  std::string host_;
  std::uint16_t port_;
  std::unique_ptr<CommandRunner> runner_;
  IpmiOptions options_;
};

// "host", "host:port", "[v6]:port" or a bare IPv6 address; the port defaults to 623. kInvalid
// for an empty host or one that could be taken for an option (leading '-', spaces).
Result<std::pair<std::string, std::uint16_t>> parse_ipmi_address(const std::string& address);

}  // namespace kiln::power
