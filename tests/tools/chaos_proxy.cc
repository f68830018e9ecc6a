// chaos_proxy — an HTTP/1.1 forwarding proxy for tests that damages chunk responses on purpose.
//
//   chaos_proxy --listen PORT --upstream PORT [--port-file FILE] MODE...
//
// Listens on 127.0.0.1:PORT (0: ephemeral, written to --port-file) and forwards every request to
// 127.0.0.1:UPSTREAM, one upstream connection per client connection (keep-alive preserved).
// Requests and responses are framed by Content-Length (all kilnd and kiln-agent send). Only
// responses to GET /v1/chunks/... are damaged, by these modes (each takes a count N: the first
// N chunk responses are damaged, the rest pass untouched):
//   --flip N        flip one bit in the middle of the body
//   --status500 N   answer 500 without asking upstream
//   --truncate N    send the header and half the body, then close
//   --bad-length N  announce 100 bytes more than the body has, send the body, then close
//   --stall-ms MS   with --stall N: send the header, then nothing for MS, then close
//   --delay-ms MS   delay every chunk response by MS (to make a deploy slow enough to interrupt)
// One mode damages the manifest instead (GET /api/v1/agent/manifest):
//   --bad-signature N  replace the Kiln-Signature header's value of the first N manifest
//                      responses with 128 characters that are not hex (the right length)
// Prints one line per damaged response to stderr. Bounded: it exits after --lifetime-s seconds
// (default 600) if the test has not stopped it (by PID) before.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>

#include "core/hex.h"
#include "core/io.h"
#include "core/unique_fd.h"

namespace {

int upstream_port = 0;
std::atomic<int> flip{0}, status500{0}, truncate_n{0}, bad_length{0}, stall{0}, bad_signature{0};
int stall_ms = 5000, delay_ms = 0;

bool send_all(int fd, const char* p, std::size_t n) {
  while (n > 0) {
    const ssize_t w = kiln::retry_eintr([&] { return ::send(fd, p, n, MSG_NOSIGNAL); });
    if (w <= 0) return false;
    p += w;
    n -= static_cast<std::size_t>(w);
  }
  return true;
}

// Reads one message (header + Content-Length body) from fd, using and refilling `buf`.
bool read_message(int fd, std::string& buf, std::string& head, std::string& body) {
  std::size_t end;
  while ((end = buf.find("\r\n\r\n")) == std::string::npos) {
    char tmp[65536];
    ssize_t r = ::recv(fd, tmp, sizeof tmp, 0);
    if (r <= 0) return false;
    buf.append(tmp, static_cast<std::size_t>(r));
  }
  head = buf.substr(0, end + 4);
  buf.erase(0, end + 4);
  std::size_t len = 0;
  const std::string lower = kiln::ascii_lower(head);
  if (auto p = lower.find("\r\ncontent-length:"); p != std::string::npos) {
    len = std::strtoull(lower.c_str() + p + 17, nullptr, 10);
  }
  while (buf.size() < len) {
    char tmp[65536];
    ssize_t r = ::recv(fd, tmp, sizeof tmp, 0);
    if (r <= 0) return false;
    buf.append(tmp, static_cast<std::size_t>(r));
  }
  body = buf.substr(0, len);
  buf.erase(0, len);
  return true;
}

// Replaces the value of header `name` (lower case, without the colon) in `head`; false if the
// header is absent.
bool rewrite_header(std::string& head, const std::string& name, const std::string& value) {
  std::string lower = head;
  for (auto& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  const auto p = lower.find("\r\n" + name + ":");
  if (p == std::string::npos) return false;
  const auto from = p + 2 + name.size() + 1;
  const auto e = head.find("\r\n", from);
  head = head.substr(0, from) + " " + value + head.substr(e);
  return true;
}

bool take(std::atomic<int>& n) {
  int v = n.load();
  while (v > 0) {
    if (n.compare_exchange_weak(v, v - 1)) return true;
  }
  return false;
}

void serve(kiln::UniqueFd client_fd) {
  const int client = client_fd.get();
  const kiln::UniqueFd up_fd(::socket(AF_INET, SOCK_STREAM, 0));
  const int up = up_fd.get();
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<std::uint16_t>(upstream_port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(up, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) return;
  std::string cbuf, ubuf, head, body, rhead, rbody;
  while (read_message(client, cbuf, head, body)) {
    const bool chunk = head.rfind("GET /v1/chunks/", 0) == 0;
    const bool manifest = head.rfind("GET /api/v1/agent/manifest ", 0) == 0;
    if (chunk && take(status500)) {
      std::fprintf(stderr, "chaos_proxy: 500 for %s\n", head.substr(0, head.find('\r')).c_str());
      static const char k500[] =
          "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 5\r\nConnection: "
          "keep-alive\r\n\r\nchaos";
      if (!send_all(client, k500, sizeof k500 - 1)) break;
      continue;
    }
    if (!send_all(up, head.data(), head.size()) || !send_all(up, body.data(), body.size())) break;
    if (!read_message(up, ubuf, rhead, rbody)) break;
    if (chunk && delay_ms) std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
    if (manifest && take(bad_signature)) {
      if (rewrite_header(rhead, "kiln-signature", std::string(128, 'z'))) {
        std::fprintf(stderr, "chaos_proxy: non-hex Kiln-Signature for %s\n",
                     head.substr(0, head.find('\r')).c_str());
      }
    }
    if (chunk && !rbody.empty() && take(flip)) {
      rbody[rbody.size() / 2] ^= 0x10;
      std::fprintf(stderr, "chaos_proxy: flipped a bit in %s\n",
                   head.substr(0, head.find('\r')).c_str());
    } else if (chunk && !rbody.empty() && take(truncate_n)) {
      std::fprintf(stderr, "chaos_proxy: truncated %s\n", head.substr(0, head.find('\r')).c_str());
      send_all(client, rhead.data(), rhead.size());
      send_all(client, rbody.data(), rbody.size() / 2);
      break;
    } else if (chunk && take(bad_length)) {
      std::fprintf(stderr, "chaos_proxy: wrong Content-Length for %s\n",
                   head.substr(0, head.find('\r')).c_str());
      const std::string lower = kiln::ascii_lower(rhead);
      auto p = lower.find("\r\ncontent-length:");
      auto e = rhead.find("\r\n", p + 2);
      rhead = rhead.substr(0, p) + "\r\nContent-Length: " + std::to_string(rbody.size() + 100) +
              rhead.substr(e);
      send_all(client, rhead.data(), rhead.size());
      send_all(client, rbody.data(), rbody.size());
      break;
    } else if (chunk && take(stall)) {
      std::fprintf(stderr, "chaos_proxy: stalling %s\n", head.substr(0, head.find('\r')).c_str());
      send_all(client, rhead.data(), rhead.size());
      std::this_thread::sleep_for(std::chrono::milliseconds(stall_ms));
      break;
    }
    if (!send_all(client, rhead.data(), rhead.size()) ||
        !send_all(client, rbody.data(), rbody.size()))
      break;
  }
}

}  // namespace

int main(int argc, char** argv) {
  int listen_port = 0, lifetime_s = 600;
  std::string port_file;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i];
    const int v = std::atoi(argv[i + 1]);
    if (k == "--listen")
      listen_port = v;
    else if (k == "--upstream")
      upstream_port = v;
    else if (k == "--port-file")
      port_file = argv[i + 1];
    else if (k == "--flip")
      flip = v;
    else if (k == "--status500")
      status500 = v;
    else if (k == "--truncate")
      truncate_n = v;
    else if (k == "--bad-length")
      bad_length = v;
    else if (k == "--stall")
      stall = v;
    else if (k == "--stall-ms")
      stall_ms = v;
    else if (k == "--bad-signature")
      bad_signature = v;
    else if (k == "--delay-ms")
      delay_ms = v;
    else if (k == "--lifetime-s")
      lifetime_s = v;
    else {
      std::fprintf(stderr, "chaos_proxy: unknown option %s\n", k.c_str());
      return 2;
    }
  }
  if (!upstream_port) {
    std::fprintf(stderr, "chaos_proxy: --upstream PORT is required\n");
    return 2;
  }
  int s = ::socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  ::setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<std::uint16_t>(listen_port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(s, 64) != 0) {
    std::perror("chaos_proxy: bind");
    return 1;
  }
  socklen_t len = sizeof a;
  ::getsockname(s, reinterpret_cast<sockaddr*>(&a), &len);
  if (!port_file.empty()) {
    std::ofstream(port_file + ".tmp") << ntohs(a.sin_port) << "\n";
    std::rename((port_file + ".tmp").c_str(), port_file.c_str());
  }
  std::thread([lifetime_s] {
    std::this_thread::sleep_for(std::chrono::seconds(lifetime_s));
    std::_Exit(0);
  }).detach();
  for (;;) {
    int c = ::accept(s, nullptr, nullptr);
    if (c < 0) continue;
    ::setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    std::thread(serve, kiln::UniqueFd(c)).detach();
  }
}
