#include "dhcp/ra.h"

#include <arpa/inet.h>
#include <net/if.h>
#include <netinet/icmp6.h>
#include <netinet/in.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>

#include "core/unique_fd.h"

namespace kiln::dhcp {

namespace {

constexpr std::uint8_t kRs = 133, kRa = 134;
constexpr std::uint8_t kOptSourceLla = 1, kOptPrefix = 3;

void put16(std::vector<std::uint8_t>& b, std::uint16_t v) {
  b.push_back(static_cast<std::uint8_t>(v >> 8));
  b.push_back(static_cast<std::uint8_t>(v));
}
void put32(std::vector<std::uint8_t>& b, std::uint32_t v) {
  put16(b, static_cast<std::uint16_t>(v >> 16));
  put16(b, static_cast<std::uint16_t>(v));
}

}  // namespace

Result<RaPrefix> parse_ra_prefix(std::string_view s) {
  auto slash = s.find('/');
  if (slash == std::string_view::npos) {
    return make_error(Errc::kInvalid, "RA prefix '" + std::string(s) + "' needs a /length");
  }
  RaPrefix p;
  const std::string addr(s.substr(0, slash));
  if (::inet_pton(AF_INET6, addr.c_str(), p.prefix.data()) != 1) {
    return make_error(Errc::kInvalid, "RA prefix '" + std::string(s) + "': not an IPv6 address");
  }
  int len = -1;
  try {
    std::size_t used = 0;
    len = std::stoi(std::string(s.substr(slash + 1)), &used);
    if (used != s.size() - slash - 1) len = -1;
  } catch (...) {
  }
  if (len < 1 || len > 128) {
    return make_error(Errc::kInvalid, "RA prefix '" + std::string(s) + "': bad length");
  }
  p.length = static_cast<std::uint8_t>(len);
  // Clear the host bits, as a prefix option must carry only the prefix.
  for (int bit = len; bit < 128; ++bit) p.prefix[bit / 8] &= ~(0x80 >> (bit % 8));
  return p;
}

std::vector<std::uint8_t> encode_router_advertisement(const RaOptions& o,
                                                      const std::array<std::uint8_t, 6>& mac) {
  std::vector<std::uint8_t> b;
  b.reserve(16 + 8 + 32 * o.prefixes.size());
  b.push_back(kRa);
  b.push_back(0);  // code
  put16(b, 0);     // checksum: the kernel computes it for raw ICMPv6 sockets
  b.push_back(0);  // current hop limit: unspecified (leave the hosts' own setting alone)
  b.push_back(0);  // flags: no managed (M) or other (O) configuration: no DHCPv6 to wait for
  put16(b, o.router_lifetime_s);
  put32(b, 0);  // reachable time: unspecified
  put32(b, 0);  // retrans timer: unspecified
  b.push_back(kOptSourceLla);
  b.push_back(1);  // length in units of 8 octets
  b.insert(b.end(), mac.begin(), mac.end());
  for (const auto& p : o.prefixes) {
    b.push_back(kOptPrefix);
    b.push_back(4);
    b.push_back(p.length);
    b.push_back(static_cast<std::uint8_t>((p.on_link ? 0x80 : 0) | (p.autonomous ? 0x40 : 0)));
    put32(b, p.valid_s);
    put32(b, p.preferred_s);
    put32(b, 0);  // reserved
    b.insert(b.end(), p.prefix.begin(), p.prefix.end());
  }
  return b;
}

bool is_router_solicitation(const std::uint8_t* pkt, std::size_t n) {
  // type, code 0, checksum, 4 reserved bytes; then options, each a non-zero multiple of 8.
  if (n < 8 || pkt[0] != kRs || pkt[1] != 0) return false;
  std::size_t at = 8;
  while (at < n) {
    if (n - at < 2 || pkt[at + 1] == 0) return false;
    const std::size_t len = static_cast<std::size_t>(pkt[at + 1]) * 8;
    if (len > n - at) return false;
    at += len;
  }
  return true;
}

struct RaResponder::Impl {
  struct Iface {
    std::string name;
    unsigned index = 0;
    UniqueFd fd;
    std::vector<std::uint8_t> ra;
    std::int64_t window_s = 0;
    int sent_in_window = 0;
  };
  RaOptions options;
  Metrics& metrics;
  std::shared_ptr<spdlog::logger> log;
  std::vector<Iface> ifaces;
  std::atomic<bool> stopping{false};
  std::thread thread;

  Impl(RaOptions o, Metrics& m, std::shared_ptr<spdlog::logger> l)
      : options(std::move(o)), metrics(m), log(std::move(l)) {}

  Status open(Iface& i) {
    i.index = ::if_nametoindex(i.name.c_str());
    if (i.index == 0) {
      return make_error(Errc::kInvalid, "ra: no interface " + i.name);
    }
    i.fd = UniqueFd(::socket(AF_INET6, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, IPPROTO_ICMPV6));
    if (!i.fd)
      return make_error(Errc::kInternal, std::string("ra: socket: ") + std::strerror(errno));
    const int fd = i.fd.get();
    auto fail = [&](const char* what) {
      return make_error(Errc::kInternal,
                        "ra: " + i.name + ": " + what + ": " + std::strerror(errno));
    };
    if (::setsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, i.name.c_str(),
                     static_cast<socklen_t>(i.name.size())) != 0) {
      return fail("SO_BINDTODEVICE");
    }
    icmp6_filter filter;
    ICMP6_FILTER_SETBLOCKALL(&filter);
    ICMP6_FILTER_SETPASS(ND_ROUTER_SOLICIT, &filter);
    if (::setsockopt(fd, IPPROTO_ICMPV6, ICMP6_FILTER, &filter, sizeof filter) != 0) {
      return fail("ICMP6_FILTER");
    }
    const int on = 1, hops = 255, off = 0;
    if (::setsockopt(fd, IPPROTO_IPV6, IPV6_RECVHOPLIMIT, &on, sizeof on) != 0 ||
        ::setsockopt(fd, IPPROTO_IPV6, IPV6_MULTICAST_HOPS, &hops, sizeof hops) != 0 ||
        ::setsockopt(fd, IPPROTO_IPV6, IPV6_UNICAST_HOPS, &hops, sizeof hops) != 0 ||
        ::setsockopt(fd, IPPROTO_IPV6, IPV6_MULTICAST_LOOP, &off, sizeof off) != 0 ||
        ::setsockopt(fd, IPPROTO_IPV6, IPV6_MULTICAST_IF, &i.index, sizeof i.index) != 0) {
      return fail("socket options");
    }
    ipv6_mreq mreq{};
    ::inet_pton(AF_INET6, "ff02::2", &mreq.ipv6mr_multiaddr);
    mreq.ipv6mr_interface = i.index;
    if (::setsockopt(fd, IPPROTO_IPV6, IPV6_JOIN_GROUP, &mreq, sizeof mreq) != 0) {
      return fail("join ff02::2");
    }
    ifreq ifr{};
    std::strncpy(ifr.ifr_name, i.name.c_str(), IFNAMSIZ - 1);
    if (::ioctl(fd, SIOCGIFHWADDR, &ifr) != 0) return fail("SIOCGIFHWADDR");
    std::array<std::uint8_t, 6> mac{};
    std::memcpy(mac.data(), ifr.ifr_hwaddr.sa_data, 6);
    i.ra = encode_router_advertisement(options, mac);
    return ok_status();
  }

  void send(Iface& i, const in6_addr& to, const char* why) {
    const auto now = std::chrono::duration_cast<std::chrono::seconds>(
                         std::chrono::steady_clock::now().time_since_epoch())
                         .count();
    if (now != i.window_s) {
      i.window_s = now;
      i.sent_in_window = 0;
    }
    if (i.sent_in_window >= options.max_per_second) {
      metrics.add("kiln_ra_dropped_total", {{"interface", i.name}});
      return;
    }
    ++i.sent_in_window;
    sockaddr_in6 dst{};
    dst.sin6_family = AF_INET6;
    dst.sin6_addr = to;
    dst.sin6_scope_id = i.index;
    if (::sendto(i.fd.get(), i.ra.data(), i.ra.size(), 0, reinterpret_cast<sockaddr*>(&dst),
                 sizeof dst) < 0) {
      // E.g. the interface's link-local address is still tentative right after it came up.
      log->debug("event=ra.send_failed interface={} why={} err=\"{}\"", i.name, why,
                 std::strerror(errno));
      return;
    }
    metrics.add("kiln_ra_sent_total", {{"interface", i.name}, {"why", why}});
  }

  void receive(Iface& i) {
    for (int budget = 0; budget < 64; ++budget) {
      std::uint8_t buf[1500];
      alignas(cmsghdr) char control[256];
      sockaddr_in6 from{};
      iovec iov{buf, sizeof buf};
      msghdr msg{};
      msg.msg_name = &from;
      msg.msg_namelen = sizeof from;
      msg.msg_iov = &iov;
      msg.msg_iovlen = 1;
      msg.msg_control = control;
      msg.msg_controllen = sizeof control;
      const ssize_t n = ::recvmsg(i.fd.get(), &msg, 0);
      if (n < 0) return;  // EAGAIN: drained
      int hop_limit = -1;
      for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_HOPLIMIT) {
          std::memcpy(&hop_limit, CMSG_DATA(c), sizeof hop_limit);
        }
      }
      if (hop_limit != 255 || !is_router_solicitation(buf, static_cast<std::size_t>(n))) {
        metrics.add("kiln_ra_ignored_total", {{"interface", i.name}});
        continue;
      }
      // Unicast only to a link-local source (the reply then leaves from our link-local
      // address, as hosts require of an RA); anything else, :: included, gets all-nodes.
      in6_addr to = from.sin6_addr;
      if (!IN6_IS_ADDR_LINKLOCAL(&to)) ::inet_pton(AF_INET6, "ff02::1", &to);
      send(i, to, "solicited");
    }
  }

  void run() {
    std::vector<pollfd> fds;
    for (auto& i : ifaces) fds.push_back({i.fd.get(), POLLIN, 0});
    while (!stopping.load()) {
      const int n = ::poll(fds.data(), fds.size(), 250);
      if (n <= 0) continue;
      for (std::size_t k = 0; k < fds.size(); ++k) {
        if (fds[k].revents & POLLIN) {
          receive(ifaces[k]);
        } else if (fds[k].revents & (POLLERR | POLLNVAL)) {
          // E.g. the interface went away: stop polling it rather than spin.
          log->error("event=ra.socket_error interface={}", ifaces[k].name);
          fds[k].fd = -1;
        }
      }
    }
  }
};

RaResponder::RaResponder(RaOptions options, Metrics& metrics, std::shared_ptr<spdlog::logger> log)
    : impl_(std::make_unique<Impl>(std::move(options), metrics, std::move(log))) {
  metrics.describe("kiln_ra_sent_total", Metrics::Type::kCounter,
                   "IPv6 router advertisements sent, by interface and why");
  metrics.describe("kiln_ra_ignored_total", Metrics::Type::kCounter,
                   "ICMPv6 messages ignored (not a valid on-link router solicitation)");
  metrics.describe("kiln_ra_dropped_total", Metrics::Type::kCounter,
                   "router solicitations not answered (rate limit)");
}

RaResponder::~RaResponder() { stop(); }

Status RaResponder::start() {
  auto& d = *impl_;
  for (const auto& name : d.options.interfaces) {
    Impl::Iface i;
    i.name = name;
    if (auto st = d.open(i); !st) return st;
    d.ifaces.push_back(std::move(i));
  }
  in6_addr all_nodes{};
  ::inet_pton(AF_INET6, "ff02::1", &all_nodes);
  for (auto& i : d.ifaces) d.send(i, all_nodes, "startup");
  d.log->info("event=ra.started interfaces={} router_lifetime_s={} prefixes={}", d.ifaces.size(),
              d.options.router_lifetime_s, d.options.prefixes.size());
  d.thread = std::thread([&d] { d.run(); });
  return ok_status();
}

void RaResponder::stop() {
  if (!impl_ || !impl_->thread.joinable()) return;
  impl_->stopping = true;
  impl_->thread.join();
}

}  // namespace kiln::dhcp
