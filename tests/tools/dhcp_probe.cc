// dhcp_probe — a PXE ROM's first step, for checking proxyDHCP: broadcasts one DHCPDISCOVER
// (option 60 vendor class, 93 architecture, 97 UUID, broadcast flag) on an interface and
// prints every reply that arrives within --wait-ms, one line each:
//   from=<ip> type=<n> yiaddr=<ip> siaddr=<ip> file=<name> vendor_class=<60> opt43=<hex>
// Written independently of kiln's codec, so it checks kilnd rather than agreeing with it.
// Run it inside the test's network namespace (it binds 0.0.0.0:68 on --iface).
//   dhcp_probe --iface IF [--vendor-class S] [--arch N] [--wait-ms MS] [--mac aa:bb:..]
//              [--user-class S] [--opt175 HEX]
// --user-class sends option 77 (iPXE sends "iPXE"); --opt175 sends option 175 with these bytes
// (iPXE's encapsulated feature list, e.g. 140101 = HTTPS version 1).
#include <arpa/inet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  std::string iface, vc = "PXEClient:Arch:00000:UNDI:002001", mac_s = "52:54:00:aa:bb:01";
  std::string user_class, opt175_hex;
  int arch = 0, wait_ms = 2000;
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
    else if (a == "--user-class")
      user_class = v;
    else if (a == "--opt175")
      opt175_hex = v;
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
  any.sin_port = htons(68);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&any), sizeof any) != 0) {
    std::perror("dhcp_probe: bind :68");
    return 1;
  }
  std::vector<unsigned char> p(240, 0);
  p[0] = 1, p[1] = 1, p[2] = 6;
  p[4] = 0x12, p[5] = 0x34, p[6] = 0x56, p[7] = 0x78;
  p[10] = 0x80;  // broadcast
  for (int i = 0; i < 6; ++i) p[28 + i] = static_cast<unsigned char>(m[i]);
  p[236] = 99, p[237] = 130, p[238] = 83, p[239] = 99;
  auto opt = [&](int code, std::vector<unsigned char> d) {
    p.push_back(static_cast<unsigned char>(code));
    p.push_back(static_cast<unsigned char>(d.size()));
    p.insert(p.end(), d.begin(), d.end());
  };
  opt(53, {1});
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
  sockaddr_in bc{};
  bc.sin_family = AF_INET;
  bc.sin_port = htons(67);
  bc.sin_addr.s_addr = htonl(INADDR_BROADCAST);
  if (::sendto(fd, p.data(), p.size(), 0, reinterpret_cast<sockaddr*>(&bc), sizeof bc) < 0) {
    std::perror("dhcp_probe: sendto");
    return 1;
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
    if (n < 240 || b[0] != 2 || std::memcmp(&b[4], &p[4], 4) != 0) continue;  // not our reply
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
    std::printf("from=%s type=%d yiaddr=%s siaddr=%s file=%s vendor_class=%s opt43=%s\n",
                inet_ntoa(from.sin_addr), type, ip(16).c_str(), ip(20).c_str(), file.c_str(),
                vclass.c_str(), o43.c_str());
    std::fflush(stdout);
  }
  return 0;
}
