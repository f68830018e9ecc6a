// dhcp/ra.h — a minimal IPv6 router-advertisement responder for the provisioning network.
//
// iPXE (and many firmware network stacks) waits for an IPv6 router advertisement after every
// DHCPv4 exchange: on a segment where none ever comes, "Configuring (net0 ...)" takes ~13 s
// longer, on every iPXE start (two or three per deployment). kilnd answers each router
// solicitation on the configured interfaces with an RA saying "I am not a default router"
// (router lifetime 0 by default, no M/O flags), optionally carrying prefixes, and sends one
// unsolicited RA when it starts. It never routes anything.
//
// Only RS messages that arrive with hop limit 255 (from the link itself, RFC 4861 6.1.1)
// are answered, at most `max_per_second` per interface; a solicitation from a link-local
// address is answered by unicast, any other (:: included) to all-nodes (ff02::1).
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/metrics.h"
#include "core/result.h"

namespace spdlog {
class logger;
}

namespace kiln::dhcp {

struct RaPrefix {
  std::array<std::uint8_t, 16> prefix{};
  std::uint8_t length = 64;
  bool on_link = true;
  bool autonomous = false;  // SLAAC: off by default, the lab needs no IPv6 addresses
  std::uint32_t valid_s = 3600;
  std::uint32_t preferred_s = 1800;
};
// Parses "fd99:0:0:99::/64".
Result<RaPrefix> parse_ra_prefix(std::string_view s);

struct RaOptions {
  std::vector<std::string> interfaces;  // empty: the responder is off
  std::uint16_t router_lifetime_s = 0;  // 0: not a default router
  std::vector<RaPrefix> prefixes;
  int max_per_second = 20;  // per interface
};

// Encodes a router advertisement (ICMPv6 type 134; the checksum is left 0: the kernel fills it
// in for raw ICMPv6 sockets) with a source link-layer address option and the prefixes.
std::vector<std::uint8_t> encode_router_advertisement(const RaOptions& o,
                                                      const std::array<std::uint8_t, 6>& mac);
// True when `pkt` (an ICMPv6 message, no IPv6 header) is a well-formed router solicitation.
bool is_router_solicitation(const std::uint8_t* pkt, std::size_t n);

class RaResponder {
 public:
  RaResponder(RaOptions options, Metrics& metrics, std::shared_ptr<spdlog::logger> log);
  ~RaResponder();
  RaResponder(const RaResponder&) = delete;
  RaResponder& operator=(const RaResponder&) = delete;
  // Opens one raw ICMPv6 socket per interface (bound to it), joins all-routers, sends one
  // unsolicited RA, starts the thread.
  Status start();
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace kiln::dhcp
