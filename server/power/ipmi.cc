#include "power/ipmi.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <thread>

#include "core/hex.h"
#include "core/io.h"
#include "core/unique_fd.h"
#include "core/url.h"

namespace kiln::power {
namespace {

using Clock = std::chrono::steady_clock;

std::chrono::milliseconds since(Clock::time_point start) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start);
}

// A close-on-exec copy of `fd` numbered 10 or above (so a dup2 onto 0-3 in the child never
// meets the same number, whose close-on-exec flag dup2 would leave set).
UniqueFd high_fd(int fd) {
  UniqueFd old(fd);
  return UniqueFd(::fcntl(fd, F_DUPFD_CLOEXEC, 10));
}

struct Pipe {
  UniqueFd read, write;
};
Result<Pipe> make_pipe() {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) {
    return make_error(Errc::kInternal, std::string("pipe: ") + std::strerror(errno));
  }
  Pipe p{high_fd(fds[0]), high_fd(fds[1])};
  if (!p.read || !p.write) {
    return make_error(Errc::kInternal, std::string("fcntl: ") + std::strerror(errno));
  }
  return p;
}

class ProcessRunner final : public CommandRunner {
 public:
  Result<CommandResult> run(const CommandSpec& spec) override {
    if (spec.argv.empty() || spec.argv[0].empty() || spec.argv[0][0] != '/') {
      return make_error(Errc::kInternal, "a command must name its program by absolute path");
    }
    auto out = make_pipe();
    if (!out) return out.error();
    auto err = make_pipe();
    if (!err) return err.error();
    std::optional<Pipe> secret;
    if (!spec.fd3_data.empty()) {
      auto p = make_pipe();
      if (!p) return p.error();
      if (spec.fd3_data.size() > 4096) {
        return make_error(Errc::kInternal, "fd 3 data larger than a pipe's atomic write");
      }
      // Fits in the pipe's buffer: written now, closed, read by the child at its pace.
      if (auto st = write_full(p->write.get(), spec.fd3_data); !st) return st.error();
      p->write.reset();
      secret = std::move(*p);
    }

    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, out->write.get(), 1);
    posix_spawn_file_actions_adddup2(&fa, err->write.get(), 2);
    if (secret) posix_spawn_file_actions_adddup2(&fa, secret->read.get(), 3);
    // Nothing else: descriptors kilnd inherited without close-on-exec (from its own parent, a
    // library) must not reach ipmitool.
    posix_spawn_file_actions_addclosefrom_np(&fa, secret ? 4 : 3);
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    sigset_t none, defaults;
    sigemptyset(&none);
    sigemptyset(&defaults);
    for (int s : {SIGPIPE, SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGCHLD, SIGALRM, SIGUSR1, SIGUSR2}) {
      sigaddset(&defaults, s);
    }
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &defaults);
    posix_spawnattr_setpgroup(&attr, 0);
    posix_spawnattr_setflags(
        &attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    std::vector<char*> argv;
    for (const auto& a : spec.argv) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    static const char* kEnv[] = {"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C", nullptr};
    pid_t pid = -1;
    const int rc = ::posix_spawn(&pid, spec.argv[0].c_str(), &fa, &attr, argv.data(),
                                 const_cast<char* const*>(kEnv));
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    out->write.reset();
    err->write.reset();
    secret.reset();
    if (rc != 0) {
      return make_error(Errc::kUnavailable,
                        "cannot run " + spec.argv[0] + ": " + std::strerror(rc));
    }

    CommandResult result;
    const auto deadline = Clock::now() + spec.timeout;
    struct Sink {
      UniqueFd* fd;
      std::string* text;
    };
    Sink sinks[2] = {{&out->read, &result.out}, {&err->read, &result.err}};
    char buf[16 << 10];
    while (out->read || err->read) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      if (left.count() <= 0) {
        result.timed_out = true;
        break;
      }
      pollfd pfds[2];
      int n = 0;
      Sink* which[2];
      for (auto& s : sinks) {
        if (*s.fd) {
          pfds[n] = pollfd{s.fd->get(), POLLIN, 0};
          which[n++] = &s;
        }
      }
      const int pr = ::poll(pfds, n, static_cast<int>(std::min<long long>(left.count(), 1000)));
      if (pr < 0 && errno != EINTR) break;
      for (int i = 0; i < n && pr > 0; ++i) {
        if (!(pfds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
        const ssize_t got = retry_eintr([&] { return ::read(pfds[i].fd, buf, sizeof buf); });
        if (got <= 0) {
          which[i]->fd->reset();
          continue;
        }
        const std::size_t room =
            spec.output_cap > which[i]->text->size() ? spec.output_cap - which[i]->text->size() : 0;
        which[i]->text->append(buf, std::min<std::size_t>(room, static_cast<std::size_t>(got)));
        if (static_cast<std::size_t>(got) > room) result.truncated = true;
      }
    }
    int status = 0;
    if (!result.timed_out) {
      // Both pipes closed; the child normally exits at once. Wait (bounded by the deadline).
      for (;;) {
        const pid_t w = ::waitpid(pid, &status, WNOHANG);
        if (w == pid) break;
        if (w < 0 && errno != EINTR) {
          // ECHILD: someone else reaped it (SIGCHLD ignored?): its status is unknown.
          return make_error(Errc::kInternal,
                            "waiting for " + spec.argv[0] + ": " + std::strerror(errno));
        }
        if (Clock::now() >= deadline) {
          result.timed_out = true;
          break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
    }
    if (result.timed_out) {
      ::kill(-pid, SIGKILL);  // the whole group: ipmitool and anything it started
      retry_eintr([&] { return ::waitpid(pid, &status, 0); });
    }
    if (WIFEXITED(status) && !result.timed_out) {
      result.exit_code = WEXITSTATUS(status);
    } else if (WIFSIGNALED(status)) {
      result.signal = WTERMSIG(status);
    }
    return result;
  }
};

std::string trim(std::string_view s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' '))
    s.remove_suffix(1);
  while (!s.empty() && (s.front() == '\n' || s.front() == '\r' || s.front() == ' '))
    s.remove_prefix(1);
  return std::string(s);
}

// The lines of `text` joined by "; ", control characters dropped, capped at about `max`.
std::string quote(std::string_view text, std::size_t max = 200) {
  std::string out;
  bool newline = false;
  for (char c : trim(text)) {
    if (out.size() >= max) {
      out += "...";
      break;
    }
    if (c == '\n') {
      newline = true;
      continue;
    }
    if (static_cast<unsigned char>(c) < 0x20) continue;
    if (newline && !out.empty()) out += "; ";
    newline = false;
    out.push_back(c);
  }
  return out.empty() ? "(no output)" : out;
}

std::string join(const std::vector<std::string>& words) {
  std::string out;
  for (const auto& w : words) out += (out.empty() ? "" : " ") + w;
  return out;
}

bool contains_ci(std::string_view hay, std::string_view needle) {
  return ascii_lower(hay).find(ascii_lower(needle)) != std::string::npos;
}

}  // namespace

std::unique_ptr<CommandRunner> process_runner() { return std::make_unique<ProcessRunner>(); }

Result<std::pair<std::string, std::uint16_t>> parse_ipmi_address(const std::string& address) {
  std::string host = address;
  std::uint16_t port = 623;
  const auto colons = std::count(address.begin(), address.end(), ':');
  if (!address.empty() && (address.front() == '[' || colons == 1)) {
    auto hp = parse_host_port(address);
    if (!hp)
      return make_error(Errc::kInvalid, "IPMI address '" + address + "': " + hp.error().message);
    host = hp->host;
    port = hp->port;
    if (port == 0) return make_error(Errc::kInvalid, "IPMI address '" + address + "': port 0");
  }
  if (host.empty() || host.front() == '-' || std::any_of(host.begin(), host.end(), [](char c) {
        return static_cast<unsigned char>(c) <= 0x20 || c == '/';
      })) {
    return make_error(Errc::kInvalid, "IPMI address '" + address + "' is not a host name or IP");
  }
  return std::pair(host, port);
}

IpmiDriver::IpmiDriver(BmcConfig config, std::string host, std::uint16_t port,
                       std::unique_ptr<CommandRunner> runner, IpmiOptions options)
    : config_(std::move(config)),
      host_(std::move(host)),
      port_(port),
      runner_(std::move(runner)),
      options_(std::move(options)) {}

std::string IpmiDriver::who() const {
  return "BMC " + host_ + ":" + std::to_string(port_) + " (ipmi)";
}

std::string IpmiDriver::scrub(std::string text) const {
  const std::string& pw = config_.password;
  if (pw.empty()) return text;
  for (auto pos = text.find(pw); pos != std::string::npos; pos = text.find(pw, pos + 3)) {
    text.replace(pos, pw.size(), "***");
  }
  return text;
}

std::vector<std::string> IpmiDriver::argv(const std::vector<std::string>& command) const {
  const auto secs = std::max<long long>(1, (config_.timeout.count() + 999) / 1000);
  std::vector<std::string> a = {options_.ipmitool,
                                "-I",
                                "lanplus",
                                "-H",
                                host_,
                                "-p",
                                std::to_string(port_),
                                "-U",
                                config_.username,
                                "-f",
                                "/dev/fd/3",  // the password, from a pipe (see ipmi.h)
                                "-N",
                                std::to_string(secs),
                                "-R",
                                std::to_string(std::max(1, config_.retries + 1))};
  a.insert(a.end(), command.begin(), command.end());
  return a;
}

Result<CommandResult> IpmiDriver::run(const std::string& step,
                                      const std::vector<std::string>& command, Step* record) {
  const auto start = Clock::now();
  CommandSpec spec;
  spec.argv = argv(command);
  spec.fd3_data = config_.password;
  // ipmitool's own timeout (-N per try, -R tries) usually ends it first; a session setup is a
  // few round trips, hence the margin before the hard kill.
  spec.timeout = config_.timeout * (3 * std::max(1, config_.retries + 1)) + std::chrono::seconds(2);
  auto r = runner_->run(spec);
  if (record) *record = Step{step, join(command), since(start), 1};
  const std::string what = who() + ": " + step + " (ipmitool " + join(command) + ")";
  if (!r) return make_error(r.error().code, scrub(what + ": " + r.error().message));
  if (r->timed_out) {
    return make_error(
        Errc::kUnavailable,
        what + ": no answer within " +
            std::to_string(std::chrono::duration_cast<std::chrono::seconds>(spec.timeout).count()) +
            " s (ipmitool killed)");
  }
  if (r->exit_code != 0) {
    const std::string err = r->err.empty() ? r->out : r->err;
    Errc code = Errc::kInternal;
    if (contains_ci(err, "unauthorized name") || contains_ci(err, "HMAC is invalid") ||
        contains_ci(err, "invalid user name") || contains_ci(err, "insufficient privilege") ||
        contains_ci(err, "unauthorized role")) {
      code = Errc::kUnauthorized;
    } else if (contains_ci(err, "Unable to establish") || contains_ci(err, "timeout") ||
               contains_ci(err, "No response") || contains_ci(err, "connection refused")) {
      code = Errc::kUnavailable;
    } else if (contains_ci(err, "Invalid command") || contains_ci(err, "not supported") ||
               contains_ci(err, "Invalid data field")) {
      code = Errc::kInvalid;
    }
    std::string exit = r->signal ? "killed by signal " + std::to_string(r->signal)
                                 : "exit " + std::to_string(r->exit_code);
    return make_error(code, scrub(what + " failed (" + exit + "): " + quote(err)));
  }
  return r;
}

Result<PowerState> IpmiDriver::read_power(Step* record) {
  auto r = run("ipmi.power_status", {"power", "status"}, record);
  if (!r) return r.error();
  const std::string line = trim(r->out);
  if (line == "Chassis Power is on") return PowerState::kOn;
  if (line == "Chassis Power is off") return PowerState::kOff;
  return make_error(Errc::kInternal, scrub(who() +
                                           ": ipmi.power_status: unexpected answer from "
                                           "ipmitool power status: " +
                                           quote(r->out)));
}

Result<PowerState> IpmiDriver::status() { return read_power(nullptr); }

Result<Step> IpmiDriver::control(const std::string& verb, const std::string& expect) {
  Step step;
  auto r = run("ipmi.power_" + verb, {"power", verb}, &step);
  if (!r) return r.error();
  const std::string line = trim(r->out);
  if (line != "Chassis Power Control: " + expect) {
    return make_error(Errc::kInternal, scrub(who() + ": ipmi.power_" + verb +
                                             ": unexpected answer from ipmitool power " + verb +
                                             ": " + quote(r->out)));
  }
  return step;
}

Result<Step> IpmiDriver::wait_for(PowerState want) {
  const auto start = Clock::now();
  PowerState last = PowerState::kUnknown;
  const int reads = std::max(1, options_.poll_attempts);
  for (int i = 1; i <= reads; ++i) {
    auto s = read_power(nullptr);
    if (!s) return s.error();
    last = *s;
    if (last == want) {
      return Step{"ipmi.wait_power", std::string("power ") + power_state_name(want), since(start),
                  i};
    }
    if (i < reads) std::this_thread::sleep_for(options_.poll_interval);
  }
  return make_error(Errc::kConflict, who() +
                                         ": the BMC accepted the power command and the "
                                         "chassis still reads " +
                                         power_state_name(last) + " after " +
                                         std::to_string(reads) + " reads");
}

Result<std::vector<Step>> IpmiDriver::power(PowerAction action) {
  std::vector<Step> steps(1);
  auto state = read_power(&steps[0]);
  if (!state) return state.error();
  steps[0].detail = std::string("power ") + power_state_name(*state);
  auto add = [&](Result<Step> s) -> Status {
    if (!s) return s.error();
    steps.push_back(*s);
    return ok_status();
  };
  Status st = ok_status();
  const bool on = *state == PowerState::kOn;
  switch (action) {
    case PowerAction::kOn:
      if (on) {
        steps.push_back(Step{"ipmi.power", "already on", {}, 1});
      } else if (st = add(control("on", "Up/On")); st) {
        st = add(wait_for(PowerState::kOn));
      }
      break;
    case PowerAction::kOff:
      if (!on) {
        steps.push_back(Step{"ipmi.power", "already off", {}, 1});
      } else if (st = add(control("off", "Down/Off")); st) {
        st = add(wait_for(PowerState::kOff));
      }
      break;
    case PowerAction::kSoftOff:
      if (!on) {
        steps.push_back(Step{"ipmi.power", "already off", {}, 1});
      } else {
        st = add(control("soft", "Soft"));  // the OS takes its time: no wait
      }
      break;
    case PowerAction::kCycle:
      // `chassis power cycle` on a machine that is off is an error on many BMCs: power on.
      if (!on) {
        if (st = add(control("on", "Up/On")); st) st = add(wait_for(PowerState::kOn));
      } else if (st = add(control("cycle", "Cycle")); st) {
        st = add(wait_for(PowerState::kOn));
      }
      break;
  }
  if (!st) return st.error();
  return steps;
}

Result<std::vector<Step>> IpmiDriver::boot_once_network(BootMode mode) {
  std::vector<Step> steps(2);
  std::vector<std::string> set = {"chassis", "bootdev", "pxe"};
  if (mode == BootMode::kUefi) set.push_back("options=efiboot");
  auto r = run("ipmi.chassis_bootdev", set, &steps[0]);
  if (!r) return r.error();
  if (trim(r->out) != "Set Boot Device to pxe") {
    return make_error(Errc::kInternal, scrub(who() +
                                             ": ipmi.chassis_bootdev: unexpected answer "
                                             "from ipmitool " +
                                             join(set) + ": " + quote(r->out)));
  }
  // Read the boot flags back (IPMI boot options parameter 5): byte 1 bit 7 valid, bit 6
  // persistent, bit 5 EFI; byte 2 bits 5-2 the device (0001b: PXE).
  auto g = run("ipmi.verify_bootdev", {"chassis", "bootparam", "get", "5"}, &steps[1]);
  if (!g) return g.error();
  std::optional<std::string> data;
  std::size_t pos = 0;
  const std::string& o = g->out;
  while (pos < o.size()) {
    auto eol = o.find('\n', pos);
    if (eol == std::string::npos) eol = o.size();
    const std::string line = trim(std::string_view(o).substr(pos, eol - pos));
    constexpr std::string_view kData = "Boot parameter data:";
    if (line.starts_with(kData))
      data = hex_decode(trim(std::string_view(line).substr(kData.size())));
    pos = eol + 1;
  }
  if (!data || data->size() < 2) {
    return make_error(Errc::kInternal, scrub(who() +
                                             ": ipmi.verify_bootdev: ipmitool chassis "
                                             "bootparam get 5 printed no boot flags: " +
                                             quote(g->out)));
  }
  const auto b0 = static_cast<std::uint8_t>((*data)[0]);
  const auto b1 = static_cast<std::uint8_t>((*data)[1]);
  const bool valid = b0 & 0x80, persistent = b0 & 0x40, efi = b0 & 0x20;
  const bool pxe = ((b1 >> 2) & 0x0f) == 0x01;
  const bool want_efi = mode == BootMode::kUefi;
  if (!valid || persistent || !pxe || efi != want_efi) {
    return make_error(Errc::kConflict,
                      who() +
                          ": the BMC accepted the boot device and did not apply it (boot "
                          "flags " +
                          hex_encode(*data) + ": " + (valid ? "valid" : "not valid") + ", " +
                          (persistent ? "persistent" : "next boot only") + ", " +
                          (efi ? "EFI" : "legacy") + ", device " + (pxe ? "PXE" : "not PXE") +
                          "; wanted valid, next boot only, " + (want_efi ? "EFI" : "legacy") +
                          ", PXE)");
  }
  steps[1].detail =
      "boot flags " + hex_encode(*data) + " (PXE, next boot only" + (efi ? ", EFI)" : ", legacy)");
  return steps;
}

}  // namespace kiln::power
