// dhcp/server.h — kilnd's DHCPv4 server: sockets on the configured interfaces only, the lease
// engine (dhcp/engine.h) on one thread of its own, and leases persisted with group commit
// through its backend (dhcp/backend.h).
//
// Durability: an ACK (and the lease change behind a DECLINE or RELEASE) is sent only after the
// transaction holding its lease has committed. Lease changes queue up while a commit runs and
// the next commit takes all of them: one transaction (one fsync with store.synchronous "full",
// the default) per batch, however many clients are waiting. OFFERs are not persisted: an offer
// is a promise for offer_ttl seconds that a restart may forget, as RFC 2131 allows.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "boot/pxe.h"
#include "core/metrics.h"
#include "core/result.h"
#include "dhcp/backend.h"
#include "dhcp/engine.h"

namespace spdlog {
class logger;
}

namespace kiln::dhcp {

struct ServerOptions {
  bool proxy = false;                   // proxyDHCP: boot information only, no addresses
  std::vector<std::string> interfaces;  // served only on these (SO_BINDTODEVICE); required
  std::uint16_t server_port = 67;
  std::uint16_t client_port = 68;
  std::uint16_t proxy_port = 4011;
  std::string server_address;      // option 54 / siaddr; default: the first interface's IPv4
  std::uint16_t http_port = 8080;  // for the default boot URLs (http://<server_address>:<port>)
  std::vector<Subnet> subnets;     // authoritative mode
  boot::BootPolicy boot;           // http_base defaults from server_address and http_port
  std::uint32_t offer_ttl_s = 60;
  std::uint32_t decline_quarantine_s = 600;
  // Against hostile clients (see dhcp/engine.h): relays' source addresses (dotted quads,
  // checked by the config), known-machines-only, and the new-lease rate limits (0 = none).
  std::vector<std::string> relays;
  bool known_only = false;
  std::uint32_t new_lease_rate = 1200;  // a minute, globally
  std::uint32_t new_lease_burst = 100;
  std::uint32_t new_lease_rate_per_mac = 6;  // a minute per MAC
};

class Server {
 public:
  // `backend` and `metrics` must outlive the server.
  Server(ServerOptions options, Backend& backend, Metrics& metrics,
         std::shared_ptr<spdlog::logger> log);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Opens the sockets and starts the DHCP and lease-writer threads.
  Status start();
  // Stops taking packets, writes pending leases, joins the threads.
  void stop();

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace kiln::dhcp
