// provision/boot_service.h — renders `/boot/<mac>.ipxe` (HTTP) and `boot/<mac>.ipxe` (TFTP): the
// one place where the boot policy (boot/script.h) meets kiln's state. Registered as a generator
// on the shared boot::Artifacts resolver, so both protocols serve the same script.
//
// Per request: a MAC holding a bound lease is served only at its leased address; the MAC's
// machine is looked up (an unknown MAC is registered as `discovered` when discovery is on, up
// to max_discovered and at most discovery_per_minute new ones a minute; under discovery
// "approve" it then waits for an operator); a failed machine may get a bounded automatic retry
// deployment; a deploying machine gets its deployment's boot ticket in its script (the same
// on every fetch: it opens one agent session, bound at first use, see api/agent.cc). A script
// fetch is not an agent boot: boots are counted when an agent opens its session. Each
// rendered script is logged with the machine, its state and the script chosen.
//
// It reaches machines, deployments and leases only through the interfaces of provision/ports.h.
#pragma once

#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "boot/artifacts.h"
#include "boot/script.h"
#include "core/clock.h"
#include "core/metrics.h"
#include "provision/ports.h"

namespace spdlog {
class logger;
}

namespace kiln::provision {

struct BootOptions {
  // Base URL the machines reach kilnd's HTTP at (scripts, kernel, API), e.g.
  // "http://10.99.0.1:8080". Empty: derived from http.listen (unless it is a wildcard).
  std::string server_url;
  std::string kernel = "kiln/vmlinuz";     // agent kernel, a boot artifact name (/files/...)
  std::string initrd = "kiln/initrd.img";  // agent initramfs, a boot artifact name
  std::string cmdline =
      "console=tty0 console=ttyS0,115200";  // extra kernel args; the last console= is /dev/console
  std::string disk = "largest";  // default target disk hint; a machine's kiln.disk label wins
  std::string after = "reboot";  // what the agent does after a deployment: reboot | kexec
  std::string after_discover = "reboot";  // ... after discovery: reboot | poweroff
  boot::LocalBoot local_bios = boot::LocalBoot::kSanboot;
  boot::LocalBoot local_efi = boot::LocalBoot::kExit;
  int poll_s = 5;                // wait/failed scripts ask again this often
  int retry_s = 10;              // a script whose agent download failed asks again after this
  int retries = 2;               // automatic retries of a failed deployment (0: none)
  bool discover_unknown = true;  // register unknown MACs as discovered and boot discovery
  int max_discovered = 10'000;   // stop registering unknown MACs past this many discovered
  // "open": a registered machine boots into discovery at once; "approve": it waits (the wait
  // script) until an operator approves it (POST /api/v1/machines/{id}/approve).
  std::string discovery = "open";
  // New machines registered per minute at most (a token bucket of this size, refilled
  // continuously); past it unknown MACs get no script until the bucket refills. 0: no limit.
  int discovery_per_minute = 60;
  // ... and at most this many from one requester address, so one host cannot take the whole
  // budget (over HTTP the address is real; over UDP/TFTP it can be forged). 0: no limit.
  int discovery_per_minute_per_address = 10;
  std::string scripts_dir;  // optional overrides of ipxe-scripts/*.ipxe
  // A MAC holding a bound lease from kilnd's DHCP gets its script only at (one of) its leased
  // addresses: nobody else on the network can fetch its agent token or act in its name. A MAC
  // without a lease (proxy mode, another DHCP server, a relay kilnd does not lease for) is
  // served to any address.
  bool bind_to_lease = true;
  // Fail closed: a MAC without a bound lease from kilnd gets no script at all (and its agent no
  // session). For authoritative DHCP only; proxy mode grants no leases.
  bool require_lease = false;
  std::chrono::milliseconds token_ttl{6 * 3600 * 1000};  // a boot ticket's lifetime
};

class BootService {
 public:
  // `machines`, `deployments`, `leases`, `metrics` and `clock` must outlive the service.
  // Thread-safe: generate() may be called from any number of threads at once.
  BootService(BootOptions options, MachineDirectory& machines, DeploymentLedger& deployments,
              LeaseBook& leases, Metrics& metrics, const Clock& clock,
              std::shared_ptr<spdlog::logger> log);
  // Loads template overrides; checks the options. Call once before serving.
  Status init();
  // Sets the base URL once the HTTP listener's address is known (when not configured).
  void set_server_url(std::string url);
  // The other kilnd instances an agent may fall back to (cluster.peers): the scripts hand the
  // agent kiln.server=<base URL>,<each of them>, so it has them before its first API call.
  // Plain http ones are left out when the base URL is https (the agent refuses them).
  void set_fallback_servers(std::vector<std::string> urls);
  // The artifacts generator for the "boot/" prefix: `rel` is "<mac>.ipxe" (any MAC form
  // normalize_mac accepts, e.g. iPXE's ${net0/mac:hexhyp}).
  Result<std::string> generate(std::string_view rel, const boot::Requester& who);

 private:
  // The steps of one request, in order.
  Result<std::string> render_for(const std::string& mac, const boot::Requester& who);
  boot::Templates::Vars base_vars(const std::string& mac, const std::string& server) const;
  // kNotFound when `mac` holds a bound lease at another address than the requester's.
  Status check_lease(const std::string& mac, const boot::Requester& who);
  // The machine owning `mac`, registered now (second: true) when unknown and discovery allows.
  Result<std::pair<proto::Machine, bool>> identify(const std::string& mac,
                                                   const boot::Requester& who);
  // One token from the discovery buckets (the requester address's and the global one); false
  // when either is empty (then neither is spent). Returns which one was empty in `which`.
  bool take_discovery_token(const std::string& address, const char*& which);
  // A failed machine without an active deployment: starts (or joins) a bounded retry and
  // updates `machine` and `st`, or sets the script's reason. Returns a note for the log line.
  std::string retry(proto::Machine& machine, boot::MachineBootState& st,
                    boot::Templates::Vars& vars);
  // The script's own variables (token, image, disk, local boot commands, ...).
  Status fill_script_vars(boot::Script script, const proto::Machine& machine,
                          boot::Templates::Vars& vars);

  std::string server_url() const;

  BootOptions options_;
  mutable std::mutex url_mu_;  // options_.server_url may be set after serving started
  std::vector<std::string> fallback_servers_;  // guarded by url_mu_
  std::string agent_servers(const std::string& server) const;
  MachineDirectory& machines_;
  DeploymentLedger& deployments_;
  LeaseBook& leases_;
  Metrics& metrics_;
  const Clock& clock_;
  std::shared_ptr<spdlog::logger> log_;
  boot::Templates templates_ = boot::Templates::embedded();
  struct Bucket {
    double tokens = -1;  // left (-1: full, not yet used)
    std::int64_t at_ms = 0;
  };
  std::mutex bucket_mu_;
  Bucket bucket_;                                        // all requesters
  std::unordered_map<std::string, Bucket> per_address_;  // bounded: cleared past 4096 entries
};

}  // namespace kiln::provision
