// udp_probe — sends one hand-made datagram and prints what comes back, for tests of wire-level
// behaviour that real clients never exercise (malformed packets, write requests, strangers).
//
//   udp_probe [--wait-ms MS] [--replies N] [--stray HEX] [--ack] PORT HEX
//
// Sends the bytes HEX (hex digits) from an ephemeral port to 127.0.0.1:PORT, then prints each
// reply received within --wait-ms (default 1000) as "<source port> <hex>", up to --replies
// (default 1). --stray HEX: after the first reply, sends HEX to the reply's source port from
// a second socket and prints that socket's reply prefixed "stray". --ack: answers every DATA
// reply with its ACK (a minimal TFTP reader) and prints "received <bytes>" at the end.
// Exit status 0 whether or not replies came: the test decides what it expected.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "core/hex.h"
#include "core/unique_fd.h"

namespace {

// The bytes that the hex argument `h` spells; exits 2 if it is not hex.
std::string from_hex(const std::string& h) {
  auto bytes = kiln::hex_decode(h);
  if (!bytes) {
    std::fprintf(stderr, "udp_probe: '%s' is not an even number of hex digits\n", h.c_str());
    std::exit(2);
  }
  return *bytes;
}

std::string to_hex(const unsigned char* p, ssize_t n) {
  return kiln::hex_encode(
      std::string_view(reinterpret_cast<const char*>(p), static_cast<std::size_t>(n)));
}

kiln::UniqueFd open_socket() {
  kiln::UniqueFd fd(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a);
  return fd;
}

// One reply within wait_ms, or -1.
ssize_t receive(int fd, int wait_ms, std::vector<unsigned char>& buf, sockaddr_in& from) {
  pollfd p{fd, POLLIN, 0};
  if (::poll(&p, 1, wait_ms) <= 0) return -1;
  socklen_t len = sizeof from;
  return ::recvfrom(fd, buf.data(), buf.size(), 0, reinterpret_cast<sockaddr*>(&from), &len);
}

}  // namespace

int main(int argc, char** argv) {
  int wait_ms = 1000, replies = 1;
  bool ack = false;
  std::string stray;
  std::vector<std::string> pos;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--wait-ms" && i + 1 < argc)
      wait_ms = std::atoi(argv[++i]);
    else if (a == "--replies" && i + 1 < argc)
      replies = std::atoi(argv[++i]);
    else if (a == "--stray" && i + 1 < argc)
      stray = argv[++i];
    else if (a == "--ack")
      ack = true;
    else
      pos.push_back(a);
  }
  if (pos.size() != 2) {
    std::fprintf(stderr,
                 "usage: udp_probe [--wait-ms MS] [--replies N] [--stray HEX] [--ack] PORT HEX\n");
    return 2;
  }
  const kiln::UniqueFd sock = open_socket();
  const int fd = sock.get();
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  to.sin_port = htons(static_cast<std::uint16_t>(std::atoi(pos[0].c_str())));
  const auto msg = from_hex(pos[1]);
  ::sendto(fd, msg.data(), msg.size(), 0, reinterpret_cast<sockaddr*>(&to), sizeof to);
  std::vector<unsigned char> buf(70000);
  unsigned long received = 0;
  for (int r = 0; ack || r < replies; ++r) {
    sockaddr_in from{};
    const ssize_t n = receive(fd, wait_ms, buf, from);
    if (n < 0) break;
    if (!ack) std::printf("%u %s\n", ntohs(from.sin_port), to_hex(buf.data(), n).c_str());
    if (r == 0 && !stray.empty()) {
      const kiln::UniqueFd fd2 = open_socket();
      const auto s = from_hex(stray);
      ::sendto(fd2.get(), s.data(), s.size(), 0, reinterpret_cast<sockaddr*>(&from), sizeof from);
      sockaddr_in f2{};
      std::vector<unsigned char> b2(70000);
      const ssize_t m = receive(fd2.get(), wait_ms, b2, f2);
      if (m >= 0) std::printf("stray %u %s\n", ntohs(f2.sin_port), to_hex(b2.data(), m).c_str());
    }
    if (ack && n >= 4 && buf[1] == 3) {
      received += static_cast<unsigned long>(n - 4);
      unsigned char a[4] = {0, 4, buf[2], buf[3]};
      ::sendto(fd, a, 4, 0, reinterpret_cast<sockaddr*>(&from), sizeof from);
      if (n - 4 < 512) break;  // the final block (default blksize)
    }
  }
  if (ack) std::printf("received %lu\n", received);
  std::fflush(stdout);
  return 0;
}
