// tftp/server.h — kilnd's TFTP server: read requests only, served from boot::Artifacts (the
// resolver HTTP's /files/ uses too). Each transfer has its own UDP socket (its TID) bound to
// the address the request arrived on, and a tftp::Transfer state machine. TFTP runs on its own
// threads, each with a single-threaded io_context (a lock-step transfer is one datagram in, one
// out: it must not pay for cross-thread hand-offs). Limits: total transfers and transfers per
// client address.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "boot/artifacts.h"
#include "core/metrics.h"
#include "core/result.h"
#include "tftp/packet.h"

namespace boost::asio {
class io_context;
}
namespace spdlog {
class logger;
}

namespace kiln::tftp {

struct ServerOptions {
  std::string address = "127.0.0.1";  // IPv4 or IPv6; 0.0.0.0 / :: answer on every address
  std::uint16_t port = 69;            // 0: ephemeral (tests); see Server::port()
  int threads = 0;                    // 0: one per core
  int max_transfers = 512;
  int max_per_client = 16;  // concurrent transfers per client IP address
  Limits limits;            // largest blksize and windowsize granted
  std::uint32_t initial_rto_ms = 1000;
  std::uint32_t min_rto_ms = 200;
  std::uint32_t max_rto_ms = 5000;
  int max_retries = 5;
  std::uint64_t netascii_max_bytes = 16 << 20;  // netascii is converted in memory
};

class Server {
 public:
  Server(ServerOptions options, const boot::Artifacts& artifacts, Metrics& metrics,
         std::shared_ptr<spdlog::logger> log);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  Status start();
  std::uint16_t port() const;
  int active_transfers() const;
  // Stops taking requests. Transfers in flight may finish for `grace`; the rest are aborted
  // with an ERROR packet. `done` runs (on a TFTP thread) once none is left. The threads stop
  // when the Server is destroyed.
  void shutdown(std::chrono::milliseconds grace, std::function<void()> done);

  struct State;

 private:
  std::vector<std::unique_ptr<boost::asio::io_context>> contexts_;
  std::vector<std::thread> threads_;
  std::shared_ptr<State> state_;
};

}  // namespace kiln::tftp
