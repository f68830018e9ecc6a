// udp_relay — a UDP relay for tests and benchmarks that adds delay, loss and duplication
// between a client and a TFTP (or any request/response UDP) server, in user space (for kernels
// without sch_netem).
//
//   udp_relay --upstream PORT [--listen PORT] [--port-file FILE] [--delay-ms MS]
//             [--loss P] [--duplicate P] [--down-only] [--drop-up N,N,...] [--seed N]
//             [--lifetime-s S]
//
// Listens on 127.0.0.1:PORT (0: ephemeral, written to --port-file). Each client address gets
// its own upstream socket; the first datagram goes to 127.0.0.1:UPSTREAM, later ones to
// wherever the server last answered from (a TFTP server answers from a new port, its TID).
// Replies reach the client from the relay's listening port, which clients accept as the
// server's TID. Every datagram, either way, is delayed by --delay-ms (so the round trip gains
// twice that), dropped with probability --loss and sent twice with probability --duplicate
// (seeded: runs are reproducible); with --down-only, only server-to-client datagrams are
// dropped or duplicated (the client's requests and ACKs always arrive). --drop-up drops exactly
// the client-to-server datagrams with these ordinals, counted over all clients from 1 (the
// request is 1; after an OACK, 2 is ACK 0 and 3 is ACK 1): a lost ACK at a known place, with
// no randomness. Prints "forwarded=N dropped=N duplicated=N" at exit. Bounded: exits after
// --lifetime-s seconds (default 600) or on SIGTERM/SIGINT.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "core/unique_fd.h"

namespace {

volatile std::sig_atomic_t stop = 0;
void on_signal(int) { stop = 1; }

using Clock = std::chrono::steady_clock;

struct Session {
  kiln::UniqueFd fd;     // upstream socket for this client
  sockaddr_in client{};  // where replies go
  sockaddr_in server{};  // where the client's datagrams go (updated by replies)
};

struct Pending {
  int fd;
  sockaddr_in to;
  std::vector<char> bytes;
  Session* toward_server;  // non-null: resolve `to` at send time (the server's current TID)
};

std::string key(const sockaddr_in& a) {
  return std::to_string(a.sin_addr.s_addr) + ":" + std::to_string(a.sin_port);
}

}  // namespace

int main(int argc, char** argv) {
  int listen_port = 0, upstream = 0, delay_ms = 0, lifetime_s = 600;
  double loss = 0, duplicate = 0;
  bool down_only = false;
  std::set<unsigned long> drop_up;  // ordinals of client-to-server datagrams to drop
  unsigned seed = 1;
  std::string port_file;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "udp_relay: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--listen")
      listen_port = std::stoi(next());
    else if (a == "--upstream")
      upstream = std::stoi(next());
    else if (a == "--port-file")
      port_file = next();
    else if (a == "--delay-ms")
      delay_ms = std::stoi(next());
    else if (a == "--loss")
      loss = std::stod(next());
    else if (a == "--duplicate")
      duplicate = std::stod(next());
    else if (a == "--down-only")
      down_only = true;
    else if (a == "--drop-up") {
      std::stringstream list(next());
      for (std::string n; std::getline(list, n, ',');) drop_up.insert(std::stoul(n));
    } else if (a == "--seed")
      seed = static_cast<unsigned>(std::stoul(next()));
    else if (a == "--lifetime-s")
      lifetime_s = std::stoi(next());
    else {
      std::fprintf(stderr, "udp_relay: unknown argument %s\n", a.c_str());
      return 2;
    }
  }
  if (upstream <= 0) {
    std::fprintf(stderr, "udp_relay: --upstream PORT is required\n");
    return 2;
  }
  std::signal(SIGTERM, on_signal);
  std::signal(SIGINT, on_signal);

  auto make_socket = [](int port) {
    kiln::UniqueFd fd(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    const int buf = 8 << 20;
    ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVBUF, &buf, sizeof buf);
    ::setsockopt(fd.get(), SOL_SOCKET, SO_SNDBUF, &buf, sizeof buf);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(static_cast<std::uint16_t>(port));
    if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      std::perror("udp_relay: bind");
      std::exit(1);
    }
    return fd;
  };
  const kiln::UniqueFd listener = make_socket(listen_port);
  const int lfd = listener.get();
  sockaddr_in bound{};
  socklen_t blen = sizeof bound;
  ::getsockname(lfd, reinterpret_cast<sockaddr*>(&bound), &blen);
  if (!port_file.empty()) {
    std::ofstream(port_file + ".tmp") << ntohs(bound.sin_port) << "\n";
    std::rename((port_file + ".tmp").c_str(), port_file.c_str());
  }

  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> uni(0.0, 1.0);
  std::map<std::string, Session> sessions;
  std::multimap<Clock::time_point, Pending> queue;  // FIFO within equal due times
  unsigned long forwarded = 0, dropped = 0, duplicated = 0, up = 0;
  const auto deadline = Clock::now() + std::chrono::seconds(lifetime_s);
  std::vector<char> buf(70000);

  auto schedule = [&](int fd, const sockaddr_in& to, const char* p, std::size_t n, Session* srv) {
    if (srv != nullptr && drop_up.count(++up) != 0) {  // srv set: client to server
      ++dropped;
      return;
    }
    const bool impaired = !(down_only && srv != nullptr);
    if (impaired && uni(rng) < loss) {
      ++dropped;
      return;
    }
    const int copies = impaired && uni(rng) < duplicate ? 2 : 1;
    if (copies == 2) ++duplicated;
    for (int c = 0; c < copies; ++c) {
      queue.emplace(Clock::now() + std::chrono::milliseconds(delay_ms),
                    Pending{fd, to, std::vector<char>(p, p + n), srv});
    }
  };

  while (!stop && Clock::now() < deadline) {
    const auto now = Clock::now();
    while (!queue.empty() && queue.begin()->first <= now) {
      auto& p = queue.begin()->second;
      const sockaddr_in to = p.toward_server ? p.toward_server->server : p.to;
      ::sendto(p.fd, p.bytes.data(), p.bytes.size(), 0, reinterpret_cast<const sockaddr*>(&to),
               sizeof to);
      ++forwarded;
      queue.erase(queue.begin());
    }
    std::vector<pollfd> fds{{lfd, POLLIN, 0}};
    std::vector<Session*> owners{nullptr};
    for (auto& [_, s] : sessions) {
      fds.push_back({s.fd.get(), POLLIN, 0});
      owners.push_back(&s);
    }
    int timeout = 100;
    if (!queue.empty()) {
      const auto wait =
          std::chrono::duration_cast<std::chrono::microseconds>(queue.begin()->first - Clock::now())
              .count();
      timeout = wait <= 0 ? 0 : static_cast<int>((wait + 999) / 1000);
    }
    if (::poll(fds.data(), fds.size(), timeout) <= 0) continue;
    for (std::size_t i = 0; i < fds.size(); ++i) {
      if (!(fds[i].revents & POLLIN)) continue;
      for (;;) {
        sockaddr_in from{};
        socklen_t flen = sizeof from;
        const ssize_t n = ::recvfrom(fds[i].fd, buf.data(), buf.size(), 0,
                                     reinterpret_cast<sockaddr*>(&from), &flen);
        if (n < 0) break;
        if (owners[i] == nullptr) {
          auto [it, fresh] = sessions.try_emplace(key(from));
          Session& s = it->second;
          if (fresh) {
            s.fd = make_socket(0);
            s.client = from;
            s.server.sin_family = AF_INET;
            s.server.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            s.server.sin_port = htons(static_cast<std::uint16_t>(upstream));
          }
          schedule(s.fd.get(), s.server, buf.data(), static_cast<std::size_t>(n), &s);
        } else {
          Session& s = *owners[i];
          s.server = from;
          schedule(lfd, s.client, buf.data(), static_cast<std::size_t>(n), nullptr);
        }
      }
    }
  }
  std::fprintf(stderr, "udp_relay: forwarded=%lu dropped=%lu duplicated=%lu sessions=%zu\n",
               forwarded, dropped, duplicated, sessions.size());
  return 0;
}
