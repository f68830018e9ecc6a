// dhcp_probe — a PXE ROM's first step, for checking proxyDHCP: broadcasts one DHCPDISCOVER
// (option 60 vendor class, 93 architecture, 97 UUID, broadcast flag) on an interface and
// prints every reply that arrives within --wait-ms, one line each:
//   from=<ip> type=<n> yiaddr=<ip> siaddr=<ip> file=<name> vendor_class=<60> opt43=<hex>
//   mac=<chaddr>
// Written independently of kiln's codec, so it checks kilnd rather than agreeing with it.
// Run it inside the test's network namespace (it binds 0.0.0.0:68 on --iface).
//   dhcp_probe --iface IF [--vendor-class S] [--arch N] [--wait-ms MS] [--mac aa:bb:..]
// It also crafts the packets a hostile client sends (tests/integration/dhcp_security_test.sh):
//   --type discover|request|decline|release|inform   message type (default discover)
//   --ciaddr A --giaddr A --requested A (option 50) --server-id A (option 54)
//   --client-id S (option 61) --bind A (source address) --port N (source port, default 68)
//   --dest A (default 255.255.255.255)
//   --count N: N messages, the MAC's last byte (or, with --client-id, the client id's suffix),
//     the requested address's last byte and the xid counting up; replies to any are printed.
//   --user-class S: option 77 (iPXE sends "iPXE"); --opt175 HEX: option 175 with these bytes
//     (iPXE's encapsulated feature list, e.g. 140101 = HTTPS version 1).
#include <arpa/inet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  std::string iface, vc = "PXEClient:Arch:00000:UNDI:002001", mac_s = "52:54:00:aa:bb:01";
  std::string type_s = "discover", ciaddr_s, giaddr_s, requested_s, server_id_s, client_id,
              bind_s = "0.0.0.0", dest_s = "255.255.255.255";
  int arch = 0, wait_ms = 2000, port = 68, count = 1;
  std::string user_class, opt175_hex;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i], v = argv[i + 1];
    if (a == "--iface")
      iface = v;
    else if (a == "--vendor-class")
      vc = v;
    else if (a == "--arch")
      arch = std::atoi(v.c_str());
    else if (a == "--wait-ms")
      wait_ms = std::atoi(v.c_str());
    else if (a == "--mac")
      mac_s = v;
    else if (a == "--type")
      type_s = v;
    else if (a == "--ciaddr")
      ciaddr_s = v;
    else if (a == "--giaddr")
      giaddr_s = v;
    else if (a == "--requested")
      requested_s = v;
    else if (a == "--server-id")
      server_id_s = v;
    else if (a == "--client-id")
      client_id = v;
    else if (a == "--bind")
      bind_s = v;
    else if (a == "--dest")
      dest_s = v;
    else if (a == "--port")
      port = std::atoi(v.c_str());
    else if (a == "--count")
      count = std::atoi(v.c_str());
    else if (a == "--user-class")
      user_class = v;
    else if (a == "--opt175")
      opt175_hex = v;
    else {
      std::fprintf(stderr, "dhcp_probe: unknown option %s\n", a.c_str());
      return 2;
    }
  }
  const std::vector<std::string> types = {"",    "discover", "offer",   "request", "decline",
                                          "ack", "nak",      "release", "inform"};
  int msg_type = 0;
  for (std::size_t t = 1; t < types.size(); ++t) {
    if (types[t] == type_s) msg_type = static_cast<int>(t);
  }
  auto addr = [](const std::string& s, unsigned char* out) {
    if (s.empty()) return true;
    in_addr a{};
    if (::inet_pton(AF_INET, s.c_str(), &a) != 1) return false;
    std::memcpy(out, &a, 4);
    return true;
  };
  unsigned char ciaddr[4] = {}, giaddr[4] = {}, requested[4] = {}, server_id[4] = {};
  if (msg_type == 0 || count < 1 || count > 250 || !addr(ciaddr_s, ciaddr) ||
      !addr(giaddr_s, giaddr) || !addr(requested_s, requested) || !addr(server_id_s, server_id)) {
    std::fprintf(stderr, "dhcp_probe: bad --type, --count (1..250) or address\n");
    return 2;
  }
  std::vector<unsigned char> opt175;
  for (std::size_t i = 0; i + 1 < opt175_hex.size(); i += 2) {
    opt175.push_back(static_cast<unsigned char>(std::stoul(opt175_hex.substr(i, 2), nullptr, 16)));
  }
  if (iface.empty()) {
    std::fprintf(stderr,
                 "usage: dhcp_probe --iface IF [--vendor-class S] [--arch N] [--wait-ms MS]\n");
    return 2;
  }
  unsigned m[6];
  if (std::sscanf(mac_s.c_str(), "%x:%x:%x:%x:%x:%x", &m[0], &m[1], &m[2], &m[3], &m[4], &m[5]) !=
      6) {
    return 2;
  }
  int fd = ::socket(AF_INET, SOCK_DGRAM, 0);
  const int on = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
  ::setsockopt(fd, SOL_SOCKET, SO_BROADCAST, &on, sizeof on);
  if (::setsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, iface.c_str(), iface.size()) != 0) {
    std::perror("dhcp_probe: SO_BINDTODEVICE");
    return 1;
  }
  sockaddr_in any{};
  any.sin_family = AF_INET;
  any.sin_port = htons(static_cast<std::uint16_t>(port));
  if (::inet_pton(AF_INET, bind_s.c_str(), &any.sin_addr) != 1 ||
      ::bind(fd, reinterpret_cast<sockaddr*>(&any), sizeof any) != 0) {
    std::perror("dhcp_probe: bind");
    return 1;
  }
  std::vector<unsigned char> p;
  for (int n = 0; n < count; ++n) {
    p.assign(240, 0);
    p[0] = 1, p[1] = 1, p[2] = 6;
    p[4] = 0x12, p[5] = 0x34, p[6] = 0x56, p[7] = static_cast<unsigned char>(0x78 + n);
    p[10] = 0x80;  // broadcast
    std::memcpy(&p[12], ciaddr, 4);
    std::memcpy(&p[24], giaddr, 4);
    for (int i = 0; i < 6; ++i) p[28 + i] = static_cast<unsigned char>(m[i]);
    if (client_id.empty()) p[33] = static_cast<unsigned char>(m[5] + n);
    p[236] = 99, p[237] = 130, p[238] = 83, p[239] = 99;
    auto opt = [&](int code, std::vector<unsigned char> d) {
      p.push_back(static_cast<unsigned char>(code));
      p.push_back(static_cast<unsigned char>(d.size()));
      p.insert(p.end(), d.begin(), d.end());
    };
    opt(53, {static_cast<unsigned char>(msg_type)});
    if (!requested_s.empty()) {
      unsigned char want[4] = {requested[0], requested[1], requested[2],
                               static_cast<unsigned char>(requested[3] + n)};
      opt(50, {want, want + 4});
    }
    if (!server_id_s.empty()) opt(54, {server_id, server_id + 4});
    if (!client_id.empty()) {
      const std::string id = count > 1 ? client_id + std::to_string(n) : client_id;
      opt(61, std::vector<unsigned char>(id.begin(), id.end()));
    }
    opt(60, std::vector<unsigned char>(vc.begin(), vc.end()));
    opt(93, {static_cast<unsigned char>(arch >> 8), static_cast<unsigned char>(arch)});
    std::vector<unsigned char> uuid(17, 0x11);
    uuid[0] = 0;
    opt(97, uuid);
    if (!user_class.empty())
      opt(77, std::vector<unsigned char>(user_class.begin(), user_class.end()));
    if (!opt175.empty()) opt(175, opt175);
    opt(55, {1, 3, 43, 60, 66, 67});
    p.push_back(255);
    p.resize(std::max<std::size_t>(p.size(), 300), 0);
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_port = htons(67);
    if (::inet_pton(AF_INET, dest_s.c_str(), &to.sin_addr) != 1) return 2;
    if (::sendto(fd, p.data(), p.size(), 0, reinterpret_cast<sockaddr*>(&to), sizeof to) < 0) {
      std::perror("dhcp_probe: sendto");
      return 1;
    }
  }
  const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(wait_ms);
  std::vector<unsigned char> b(2048);
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                          end - std::chrono::steady_clock::now())
                          .count();
    if (left <= 0) break;
    pollfd pf{fd, POLLIN, 0};
    if (::poll(&pf, 1, static_cast<int>(left)) <= 0) break;
    sockaddr_in from{};
    socklen_t fl = sizeof from;
    const ssize_t n =
        ::recvfrom(fd, b.data(), b.size(), 0, reinterpret_cast<sockaddr*>(&from), &fl);
    if (n < 240 || b[0] != 2 || std::memcmp(&b[4], &p[4], 3) != 0 || b[7] < 0x78 ||
        b[7] >= 0x78 + count) {
      continue;  // not our reply
    }
    auto ip = [&](int at) {
      char s[16];
      std::snprintf(s, sizeof s, "%u.%u.%u.%u", b[at], b[at + 1], b[at + 2], b[at + 3]);
      return std::string(s);
    };
    std::string file(reinterpret_cast<const char*>(&b[108]),
                     strnlen(reinterpret_cast<const char*>(&b[108]), 128));
    int type = 0;
    std::string vclass, o43;
    for (ssize_t i = 240; i + 1 < n && b[i] != 255;) {
      if (b[i] == 0) {
        ++i;
        continue;
      }
      const int code = b[i], len = b[i + 1];
      if (i + 2 + len > n) break;
      const unsigned char* d = &b[i + 2];
      if (code == 53 && len == 1) type = d[0];
      if (code == 60) vclass.assign(reinterpret_cast<const char*>(d), len);
      if (code == 43) {
        for (int k = 0; k < len; ++k) {
          char h[3];
          std::snprintf(h, sizeof h, "%02x", d[k]);
          o43 += h;
        }
      }
      i += 2 + len;
    }
    std::printf(
        "from=%s type=%d yiaddr=%s siaddr=%s file=%s vendor_class=%s opt43=%s "
        "mac=%02x:%02x:%02x:%02x:%02x:%02x\n",
        inet_ntoa(from.sin_addr), type, ip(16).c_str(), ip(20).c_str(), file.c_str(),
        vclass.c_str(), o43.c_str(), b[28], b[29], b[30], b[31], b[32], b[33]);
    std::fflush(stdout);
  }
  return 0;
}
