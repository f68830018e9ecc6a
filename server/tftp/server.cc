#include "tftp/server.h"

#include <netinet/in.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/udp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <cerrno>
#include <cstring>
#include <map>
#include <mutex>
#include <thread>

#include "core/io.h"
#include "core/log_util.h"
#include "tftp/transfer.h"

namespace kiln::tftp {

namespace net = boost::asio;
using udp = net::ip::udp;
using SteadyClock = std::chrono::steady_clock;

namespace {

std::int64_t mono_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             SteadyClock::now().time_since_epoch())
      .count();
}

udp::endpoint to_endpoint(const sockaddr_storage& sa, socklen_t len) {
  udp::endpoint ep;
  const std::size_t n = std::min<std::size_t>(len, ep.capacity());
  std::memcpy(ep.data(), &sa, n);
  ep.resize(n);
  return ep;
}

std::string text(const udp::endpoint& ep) {
  return ep.address().to_string() + ":" + std::to_string(ep.port());
}

constexpr std::size_t kAckBufSize = 1024;  // ACKs are 4 bytes, ERRORs short; more is not TFTP
constexpr int kDrainBatch = 64;

}  // namespace

class Session;

struct Server::State : std::enable_shared_from_this<Server::State> {
  State(ServerOptions o, const boot::Artifacts& a, Metrics& m, std::shared_ptr<spdlog::logger> l)
      : opts(std::move(o)), artifacts(a), metrics(m), log(std::move(l)) {}

  // One single-threaded io_context per TFTP thread (owned by Server); the listener lives on the
  // first, transfers are spread over all. A transfer's handlers all run on its context's one
  // thread, so a session needs no locking.
  std::vector<net::io_context*> ctxs;
  std::atomic<unsigned> next_ctx{0};
  net::io_context& ioc() { return *ctxs[0]; }
  ServerOptions opts;
  const boot::Artifacts& artifacts;
  Metrics& metrics;
  std::shared_ptr<spdlog::logger> log;
  std::unique_ptr<udp::socket> listener;
  net::ip::address listen_address;  // unspecified: each request's local address is read from
                                    // IP_PKTINFO, and its transfer answers from that address
  std::uint16_t bound_port = 0;
  std::vector<std::uint8_t> rbuf = std::vector<std::uint8_t>(kMaxPacket + 1);
  // Converted netascii files held by live transfers, bounded by 4 x netascii_max_bytes.
  std::atomic<std::uint64_t> netascii_bytes{0};

  std::mutex mu;  // guards everything below
  std::map<net::ip::address, int> per_client;
  std::map<udp::endpoint, std::weak_ptr<Session>> sessions;
  int active = 0;
  bool stopping = false;
  std::function<void()> on_drained;
  std::unique_ptr<net::steady_timer> grace_timer;

  // Refusals and malformed packets are logged at most 20 times a second (a flood must not
  // flood the log); every one is counted.
  LogBudget log_budget;
  bool may_log() { return log_budget.allow(); }

  void wait_listener();
  void drain_listener();
  void handle_request(std::span<const std::uint8_t> bytes, const udp::endpoint& peer,
                      const net::ip::address& local);
  void send_error(const net::ip::address& local, const udp::endpoint& peer, ErrorCode code,
                  std::string_view msg);
  void refuse(const net::ip::address& local, const udp::endpoint& peer, ErrorCode code,
              std::string_view msg, std::string_view reason, std::string_view file);
  void drop(std::string_view reason, const udp::endpoint& peer, std::string_view detail);
  void release(const udp::endpoint& peer, const Session* who);
};

// One read transfer: its socket (the server's TID), timer, state machine and data source.
// Every handler runs on the one thread of the session's io_context.
class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(std::shared_ptr<Server::State> st, udp::socket&& sock, udp::endpoint peer,
          boot::Artifact artifact, std::shared_ptr<const std::string> netascii,
          const Negotiated& neg, TransferConfig cfg, std::string name, Mode mode)
      : st_(std::move(st)),
        sock_(std::move(sock)),
        timer_(sock_.get_executor()),
        peer_(std::move(peer)),
        artifact_(std::move(artifact)),
        netascii_(std::move(netascii)),
        transfer_(cfg),
        blksize_(cfg.blksize),
        window_(cfg.window),
        name_(std::move(name)),
        mode_(mode) {
    // Read ahead: one pread serves many blocks (two windows, 64 KiB at least, never more than
    // the file). Allocated on the first DATA, not here: a request that is never answered
    // (spoofed, or a client that gave up) costs no buffer.
    if (!artifact_.generated() && !netascii_) {
      cache_size_ = static_cast<std::size_t>(std::min<std::uint64_t>(
          std::min<std::size_t>(
              std::max<std::size_t>(64 << 10, 2 * static_cast<std::size_t>(window_) * blksize_),
              std::size_t{8} << 20),
          std::max<std::uint64_t>(artifact_.size, 1)));
    }
    if (!neg.oack.empty()) encode_oack(oack_, neg.oack);
    started_ms_ = mono_ms();
  }

  ~Session() {
    if (netascii_) st_->netascii_bytes -= netascii_->size();
  }

  void start() {
    net::post(sock_.get_executor(), [self = shared_from_this()] {
      self->transfer_.start(mono_ms(), self->sends_);
      self->send_pending();
      self->after_event();
    });
  }

  // The request that started this transfer (to tell a retransmitted RRQ from a new one).
  std::string request_bytes;
  bool heard_from_peer() const { return heard_.load(); }

  void abort(std::string reason) {
    net::post(sock_.get_executor(),
              [self = shared_from_this(), reason = std::move(reason)]() mutable {
                if (self->transfer_.finished()) return;
                self->transfer_.abort(std::move(reason));
                self->finish();
              });
  }

 private:
  void on_readable() {
    const int fd = sock_.native_handle();
    for (int i = 0; i < kDrainBatch && !transfer_.finished(); ++i) {
      sockaddr_storage from{};
      socklen_t len = sizeof from;
      const ssize_t n = retry_eintr([&] {
        return ::recvfrom(fd, rbuf_, sizeof rbuf_, MSG_DONTWAIT | MSG_TRUNC,
                          reinterpret_cast<sockaddr*>(&from), &len);
      });
      if (n < 0) break;  // EAGAIN: drained; ECONNREFUSED (ICMP) and the like: the timer decides
      const udp::endpoint src = to_endpoint(from, len);
      if (src != peer_) {
        // RFC 1350: a packet from another TID gets an ERROR and does not disturb the transfer.
        // Never in answer to an ERROR or to junk, and only a few per transfer: two servers (or
        // a spoofed echo port) must not be able to bounce ERRORs at each other forever.
        const bool is_error = n >= 2 && rbuf_[0] == 0 && rbuf_[1] == 5;
        if (n >= 4 && !is_error && unknown_tid_replies_ < 8) {
          ++unknown_tid_replies_;
          std::vector<std::uint8_t> err;
          encode_error(err, ErrorCode::kUnknownTid, "unknown transfer ID");
          ::sendto(fd, err.data(), err.size(), MSG_DONTWAIT, src.data(), src.size());
        }
        st_->drop("unknown_tid", src, name_);
        continue;
      }
      heard_ = true;
      if (static_cast<std::size_t>(n) > sizeof rbuf_) {
        st_->drop("oversized", src, name_);
        continue;
      }
      auto pkt = parse(std::span<const std::uint8_t>(rbuf_, static_cast<std::size_t>(n)));
      if (!pkt) {
        st_->drop("malformed", src, pkt.error().message);
        continue;
      }
      if (pkt->op == Opcode::kAck) {
        transfer_.on_ack(pkt->block, mono_ms(), sends_);
        // Progress: answer now. Anything still queued (a duplicate) wakes the next wait, as
        // re-arming the wait re-checks readiness; in lock-step this saves a recvfrom per block.
        if (!sends_.empty()) break;
      } else if (pkt->op == Opcode::kError) {
        client_error_ = true;
        transfer_.abort("client sent error " + std::to_string(static_cast<int>(pkt->error)) + ": " +
                        log_escape(pkt->message));
      } else {
        st_->drop("unexpected", src, opcode_name(pkt->op));
      }
    }
    send_pending();
    after_event();
  }

  void on_timer() {
    if (transfer_.finished()) return;
    const std::int64_t now = mono_ms();
    if (now >= transfer_.deadline() && !heard_ && ++unheard_timeouts_ > kUnheardRetries) {
      // Nothing ever came back (a spoofed request, or a client that went away): give the slot
      // back early instead of resending to a silent address for the full retry budget.
      transfer_.abort("no answer from the client");
      return finish();
    }
    if (now >= transfer_.deadline()) {
      transfer_.on_timeout(now, sends_);
      send_pending();
    }
    after_event();
  }

  // After any event: finish, or keep waiting (re-arming the timer only when the deadline moved
  // earlier than the pending expiry; a later deadline is caught when the timer fires).
  void after_event() {
    if (transfer_.finished()) return finish();
    const std::int64_t d = transfer_.deadline();
    if (armed_ < 0 || d < armed_) {
      armed_ = d;
      timer_.expires_at(SteadyClock::time_point(std::chrono::milliseconds(d)));
      timer_.async_wait([self = shared_from_this()](const boost::system::error_code& ec) {
        if (ec) return;
        self->armed_ = -1;
        self->on_timer();
      });
    }
    if (!reading_) {
      reading_ = true;
      wait_read_loop();
    }
  }

  void wait_read_loop() {
    sock_.async_wait(udp::socket::wait_read,
                     [self = shared_from_this()](const boost::system::error_code& ec) {
                       if (ec || self->transfer_.finished()) return;
                       self->on_readable();
                       if (!self->transfer_.finished()) self->wait_read_loop();
                     });
  }

  // Points `out` at the payload of `block`: into generated or converted content, or into the
  // read-ahead cache (refilled from the file when the block is outside it). False on a read
  // error or a file that shrank.
  bool payload(std::uint64_t block, std::size_t len, const std::uint8_t*& out) {
    const std::uint64_t off = transfer_.offset_of(block);
    if (netascii_ || artifact_.generated()) {
      const std::string& src = netascii_ ? *netascii_ : *artifact_.content;
      if (off + len > src.size()) return false;
      out = reinterpret_cast<const std::uint8_t*>(src.data()) + off;
      return true;
    }
    if (!cache_) cache_ = std::make_unique_for_overwrite<std::uint8_t[]>(cache_size_);
    if (len == 0) {
      out = cache_.get();
      return true;
    }
    if (off < cache_off_ || off + len > cache_off_ + cache_len_) {
      const std::size_t want =
          static_cast<std::size_t>(std::min<std::uint64_t>(cache_size_, artifact_.size - off));
      const auto got = pread_full(artifact_.file.fd.get(), cache_.get(), want, off);
      const std::size_t done = got ? *got : 0;
      cache_off_ = off;
      cache_len_ = done;
      if (done < len) return false;
    }
    out = cache_.get() + (off - cache_off_);
    return true;
  }

  void send_pending() {
    const int fd = sock_.native_handle();
    for (const std::uint64_t block : sends_) {
      std::uint8_t header[4] = {0, 3, 0, 0};
      iovec iov[2];
      int iovcnt = 1;
      if (block == 0) {
        iov[0] = {oack_.data(), oack_.size()};
      } else {
        const std::size_t len = transfer_.length_of(block);
        const std::uint8_t* data = nullptr;
        if (!payload(block, len, data)) {
          transfer_.abort("read error: the file changed or could not be read");
          server_error_ = "file read error";
          break;
        }
        header[2] = static_cast<std::uint8_t>(Transfer::wire(block) >> 8);
        header[3] = static_cast<std::uint8_t>(Transfer::wire(block) & 0xff);
        iov[0] = {header, 4};
        iov[1] = {const_cast<std::uint8_t*>(data), len};
        iovcnt = 2;
        bytes_sent_ += len;
      }
      msghdr m{};
      m.msg_name = const_cast<sockaddr*>(peer_.data());
      m.msg_namelen = static_cast<socklen_t>(peer_.size());
      m.msg_iov = iov;
      m.msg_iovlen = static_cast<std::size_t>(iovcnt);
      const ssize_t r = retry_eintr([&] { return ::sendmsg(fd, &m, MSG_DONTWAIT); });
      if (r < 0) {
        // A full socket buffer is a lost packet: the timer retransmits it. Anything else
        // (no route, interface gone) is logged once and left to the timer as well.
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != ENOBUFS && !send_error_logged_) {
          send_error_logged_ = true;
          st_->log->warn("event=tftp.send_failed client={} file=\"{}\" err=\"{}\"", text(peer_),
                         log_escape(name_), std::strerror(errno));
        }
        break;
      }
    }
    sends_.clear();
  }

  void finish() {
    if (finished_) return;
    finished_ = true;
    const bool ok = transfer_.state() == Transfer::State::kDone;
    if (!ok && !client_error_) {
      std::vector<std::uint8_t> err;
      encode_error(err, ErrorCode::kUndefined,
                   server_error_.empty() ? transfer_.failure() : server_error_);
      ::sendto(sock_.native_handle(), err.data(), err.size(), MSG_DONTWAIT, peer_.data(),
               peer_.size());
    }
    const double ms = static_cast<double>(mono_ms() - started_ms_);
    const std::uint64_t size = netascii_ ? netascii_->size() : artifact_.size;
    if (ok) {
      st_->log->info(
          "event=tftp.transfer_done client={} file=\"{}\" mode={} bytes={} blksize={} "
          "window={} ms={:.0f} mbps={:.1f} retransmits={} rewinds={} dup_acks={}",
          text(peer_), log_escape(name_), mode_ == Mode::kOctet ? "octet" : "netascii", size,
          blksize_, window_, ms, ms > 0 ? static_cast<double>(size) / ms / 1000.0 : 0.0,
          transfer_.retransmits(), transfer_.rewinds(), transfer_.duplicate_acks());
    } else {
      st_->log->warn(
          "event=tftp.transfer_failed client={} file=\"{}\" acked_blocks={} of={} ms={:.0f} "
          "reason=\"{}\"",
          text(peer_), log_escape(name_), transfer_.acked(), transfer_.total_blocks(), ms,
          transfer_.failure());
    }
    st_->metrics.add("kiln_tftp_transfers_total", {{"result", ok ? "ok" : "failed"}});
    st_->metrics.add("kiln_tftp_bytes_total", {}, static_cast<double>(bytes_sent_));
    st_->metrics.add("kiln_tftp_retransmits_total", {},
                     static_cast<double>(transfer_.retransmits()));
    boost::system::error_code ec;
    timer_.cancel();
    sock_.close(ec);
    st_->release(peer_, this);
  }

  std::shared_ptr<Server::State> st_;
  udp::socket sock_;
  net::steady_timer timer_;
  udp::endpoint peer_;
  boot::Artifact artifact_;
  std::shared_ptr<const std::string> netascii_;
  Transfer transfer_;
  std::size_t blksize_;
  std::uint16_t window_;
  std::string name_;
  Mode mode_;
  std::unique_ptr<std::uint8_t[]> cache_;
  std::size_t cache_size_ = 0;
  std::uint64_t cache_off_ = 0;
  std::size_t cache_len_ = 0;
  std::vector<std::uint8_t> oack_;
  Transfer::Sends sends_;
  std::uint8_t rbuf_[kAckBufSize];
  std::int64_t armed_ = -1;
  std::int64_t started_ms_ = 0;
  std::uint64_t bytes_sent_ = 0;
  bool reading_ = false;
  bool finished_ = false;
  int unknown_tid_replies_ = 0;
  int unheard_timeouts_ = 0;
  static constexpr int kUnheardRetries = 2;
  std::atomic<bool> heard_{false};  // anything arrived from the peer (read by the listener)
  bool client_error_ = false;
  bool send_error_logged_ = false;
  std::string server_error_;
};

void Server::State::drop(std::string_view reason, const udp::endpoint& peer,
                         std::string_view detail) {
  metrics.add("kiln_tftp_packets_dropped_total", {{"reason", std::string(reason)}});
  if (may_log()) {
    log->info("event=tftp.packet_dropped reason={} peer={} detail=\"{}\"", reason, text(peer),
              log_escape(detail));
  }
}

void Server::State::send_error(const net::ip::address& local, const udp::endpoint& peer,
                               ErrorCode code, std::string_view msg) {
  // From a fresh port, as a transfer would answer: clients take the first reply's port as the
  // server's TID.
  boost::system::error_code ec;
  udp::socket s(ioc());
  s.open(peer.protocol(), ec);
  if (!ec) s.bind(udp::endpoint(local, 0), ec);
  if (ec) return;
  std::vector<std::uint8_t> err;
  encode_error(err, code, msg);
  s.send_to(net::buffer(err), peer, 0, ec);
}

void Server::State::refuse(const net::ip::address& local, const udp::endpoint& peer, ErrorCode code,
                           std::string_view msg, std::string_view reason, std::string_view file) {
  send_error(local, peer, code, msg);
  metrics.add("kiln_tftp_requests_refused_total", {{"reason", std::string(reason)}});
  if (may_log()) {
    log->warn("event=tftp.request_refused reason={} client={} file=\"{}\"", reason, text(peer),
              log_escape(file));
  }
}

void Server::State::release(const udp::endpoint& peer, const Session* who) {
  std::function<void()> drained;
  {
    std::lock_guard lock(mu);
    if (auto it = sessions.find(peer); it != sessions.end()) {
      auto cur = it->second.lock();
      if (!cur || cur.get() == who) sessions.erase(it);
    }
    if (auto it = per_client.find(peer.address()); it != per_client.end() && --it->second <= 0) {
      per_client.erase(it);
    }
    --active;
    metrics.set("kiln_tftp_active_transfers", {}, active);
    if (stopping && active == 0 && on_drained) {
      drained = std::move(on_drained);
      on_drained = nullptr;
      if (grace_timer)
        net::post(ioc(), [this, self = shared_from_this()] { grace_timer->cancel(); });
    }
  }
  if (drained) drained();
}

void Server::State::wait_listener() {
  listener->async_wait(udp::socket::wait_read,
                       [self = shared_from_this()](const boost::system::error_code& ec) {
                         if (ec) return;
                         self->drain_listener();
                         self->wait_listener();
                       });
}

void Server::State::drain_listener() {
  const int fd = listener->native_handle();
  for (int i = 0; i < kDrainBatch; ++i) {
    sockaddr_storage from{};
    alignas(cmsghdr) char control[256];
    iovec iov{rbuf.data(), rbuf.size()};
    msghdr m{};
    m.msg_name = &from;
    m.msg_namelen = sizeof from;
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    m.msg_control = control;
    m.msg_controllen = sizeof control;
    const ssize_t n = retry_eintr([&] { return ::recvmsg(fd, &m, MSG_DONTWAIT); });
    if (n < 0) return;
    const udp::endpoint peer = to_endpoint(from, m.msg_namelen);
    if ((m.msg_flags & MSG_TRUNC) || static_cast<std::size_t>(n) > kMaxPacket) {
      drop("oversized", peer, "");
      continue;
    }
    net::ip::address local = listen_address;
    if (local.is_unspecified()) {
      for (cmsghdr* c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
        if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO) {
          in_pktinfo pi;
          std::memcpy(&pi, CMSG_DATA(c), sizeof pi);
          net::ip::address_v4::bytes_type b;
          std::memcpy(b.data(), &pi.ipi_spec_dst, 4);
          local = net::ip::address_v4(b);
        } else if (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_PKTINFO) {
          in6_pktinfo pi;
          std::memcpy(&pi, CMSG_DATA(c), sizeof pi);
          net::ip::address_v6::bytes_type b;
          std::memcpy(b.data(), &pi.ipi6_addr, 16);
          local = net::ip::address_v6(b, pi.ipi6_ifindex);
        }
      }
    }
    // A broadcast or multicast request cannot be answered from that address.
    if ((local.is_v4() &&
         (local.to_v4() == net::ip::address_v4::broadcast() || local.to_v4().is_multicast())) ||
        (local.is_v6() && (local.to_v6().is_multicast() ||
                           (local.to_v6().is_v4_mapped() &&
                            net::ip::make_address_v4(net::ip::v4_mapped, local.to_v6()) ==
                                net::ip::address_v4::broadcast())))) {
      local = listen_address.is_v4() ? net::ip::address(net::ip::address_v4::any())
                                     : net::ip::address(net::ip::address_v6::any());
    }
    handle_request(std::span<const std::uint8_t>(rbuf.data(), static_cast<std::size_t>(n)), peer,
                   local);
  }
}

void Server::State::handle_request(std::span<const std::uint8_t> bytes, const udp::endpoint& peer,
                                   const net::ip::address& local) {
  if (peer.port() == 0) return drop("source_port_zero", peer, "");
  const bool is_request = bytes.size() >= 2 && bytes[0] == 0 && (bytes[1] == 1 || bytes[1] == 2);
  if (is_request && bytes.size() > opts.limits.max_request_bytes) {
    // Not parsed at all: its cost stays one comparison whatever it holds.
    return refuse(local, peer, ErrorCode::kIllegalOperation,
                  "request larger than " + std::to_string(opts.limits.max_request_bytes) + " bytes",
                  "request_too_large", "");
  }
  auto pkt = parse(bytes);
  if (!pkt && is_request && pkt.error().code == Errc::kTooLarge) {
    return refuse(local, peer, ErrorCode::kOptionRefused, pkt.error().message, "too_many_options",
                  "");
  }
  if (!pkt) return drop("malformed", peer, pkt.error().message);
  if (pkt->op == Opcode::kWrq) {
    return refuse(local, peer, ErrorCode::kAccessViolation, "write requests are not accepted",
                  "write_request", pkt->request.filename);
  }
  if (pkt->op != Opcode::kRrq) return drop("unexpected", peer, opcode_name(pkt->op));
  const Request& req = pkt->request;

  {
    std::lock_guard lock(mu);
    if (stopping) {
      return refuse(local, peer, ErrorCode::kUndefined, "server shutting down", "stopping",
                    req.filename);
    }
    if (auto it = sessions.find(peer); it != sessions.end()) {
      if (auto old = it->second.lock()) {
        const std::string bytes_now(bytes.begin(), bytes.end());
        if (!old->heard_from_peer() && old->request_bytes == bytes_now) {
          // The client retransmitted its request before our first reply arrived: the
          // transfer already running for it retransmits on its own timer.
          return drop("duplicate_request", peer, req.filename);
        }
        // A new request from the same port (a restarted client, a re-request after ERROR 8):
        // the old transfer is over.
        old->abort("superseded by a new request from the same client port");
      }
    }
    if (active >= opts.max_transfers) {
      return refuse(local, peer, ErrorCode::kUndefined, "server busy, try again later",
                    "max_transfers", req.filename);
    }
    auto it = per_client.find(peer.address());
    if (it != per_client.end() && it->second >= opts.max_per_client) {
      return refuse(local, peer, ErrorCode::kUndefined, "too many transfers from this client",
                    "max_per_client", req.filename);
    }
  }

  auto artifact = artifacts.resolve(req.filename, {"tftp", peer.address().to_string()});
  if (!artifact) {
    switch (artifact.error().code) {
      case Errc::kInvalid:
        return refuse(local, peer, ErrorCode::kAccessViolation, "access violation", "path_refused",
                      req.filename);
      case Errc::kNotFound:
        return refuse(local, peer, ErrorCode::kFileNotFound, "file not found", "not_found",
                      req.filename);
      default:
        if (may_log()) {
          log->error("event=tftp.open_failed file=\"{}\" err=\"{}\"", log_escape(req.filename),
                     artifact.error().message);
        }
        return refuse(local, peer, ErrorCode::kUndefined, "cannot open file now", "unavailable",
                      req.filename);
    }
  }

  std::shared_ptr<const std::string> netascii;
  std::uint64_t size = artifact->size;
  if (req.mode == Mode::kNetascii) {
    if (netascii_bytes.load() + artifact->size * 2 > opts.netascii_max_bytes * 4) {
      return refuse(local, peer, ErrorCode::kUndefined, "server busy, try again later",
                    "netascii_budget", req.filename);
    }
    if (artifact->size > opts.netascii_max_bytes) {
      return refuse(local, peer, ErrorCode::kUndefined,
                    "file too large for netascii mode; use octet", "netascii_too_large",
                    req.filename);
    }
    std::string raw;
    if (artifact->generated()) {
      raw = *artifact->content;
    } else {
      raw.resize(artifact->size);
      const auto got = pread_full(artifact->file.fd.get(), raw.data(), raw.size(), 0);
      if (!got || *got != raw.size()) {
        return refuse(local, peer, ErrorCode::kUndefined, "read error", "read_error", req.filename);
      }
    }
    netascii = std::make_shared<const std::string>(to_netascii(raw));
    size = netascii->size();
    netascii_bytes += size;
  }

  const Negotiated neg = negotiate(req.options, size, opts.limits);
  TransferConfig cfg;
  cfg.size = size;
  cfg.blksize = neg.blksize;
  cfg.window = neg.window;
  cfg.oack = !neg.oack.empty();
  cfg.client_timeout_ms = neg.timeout_ms;
  cfg.initial_rto_ms = opts.initial_rto_ms;
  cfg.min_rto_ms = opts.min_rto_ms;
  cfg.max_rto_ms = opts.max_rto_ms;
  cfg.max_retries = opts.max_retries;

  net::io_context& ctx = *ctxs[next_ctx.fetch_add(1) % ctxs.size()];
  udp::socket sock(ctx);
  boost::system::error_code ec;
  sock.open(peer.protocol(), ec);
  if (!ec) sock.bind(udp::endpoint(local, 0), ec);
  if (ec) {
    if (may_log()) {
      log->error("event=tftp.socket_failed local={} err=\"{}\"", local.to_string(), ec.message());
    }
    return refuse(local, peer, ErrorCode::kUndefined, "server cannot open a transfer socket",
                  "socket_failed", req.filename);
  }
  // Windows of large blocks leave in bursts: room for a whole window in the send buffer.
  const int sndbuf = static_cast<int>(std::min<std::size_t>(
      std::size_t{4} << 20, static_cast<std::size_t>(neg.window) * (neg.blksize + 64) * 2));
  ::setsockopt(sock.native_handle(), SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);

  const std::string name = artifact->name;
  auto session =
      std::make_shared<Session>(shared_from_this(), std::move(sock), peer, std::move(*artifact),
                                std::move(netascii), neg, cfg, name, req.mode);
  session->request_bytes.assign(bytes.begin(), bytes.end());
  {
    std::lock_guard lock(mu);
    sessions[peer] = session;
    ++per_client[peer.address()];
    ++active;
    metrics.set("kiln_tftp_active_transfers", {}, active);
  }
  log->debug(
      "event=tftp.transfer_started client={} file=\"{}\" size={} blksize={} window={} "
      "oack={}",
      text(peer), log_escape(name), size, neg.blksize, neg.window, cfg.oack);
  session->start();
}

Server::Server(ServerOptions options, const boot::Artifacts& artifacts, Metrics& metrics,
               std::shared_ptr<spdlog::logger> log)
    : state_(std::make_shared<State>(std::move(options), artifacts, metrics, std::move(log))) {
  int n = state_->opts.threads;
  if (n <= 0) n = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  for (int i = 0; i < n; ++i) {
    contexts_.push_back(std::make_unique<net::io_context>(1));
    state_->ctxs.push_back(contexts_.back().get());
  }
  metrics.describe("kiln_tftp_transfers_total", Metrics::Type::kCounter,
                   "TFTP read transfers ended, by result.");
  metrics.describe("kiln_tftp_bytes_total", Metrics::Type::kCounter,
                   "TFTP DATA payload bytes sent, retransmissions included.");
  metrics.describe("kiln_tftp_retransmits_total", Metrics::Type::kCounter,
                   "TFTP packets sent again after a timeout.");
  metrics.describe("kiln_tftp_requests_refused_total", Metrics::Type::kCounter,
                   "TFTP requests answered with an ERROR, by reason.");
  metrics.describe("kiln_tftp_packets_dropped_total", Metrics::Type::kCounter,
                   "TFTP packets ignored (malformed, unexpected, wrong TID), by reason.");
  metrics.describe("kiln_tftp_active_transfers", Metrics::Type::kGauge,
                   "TFTP transfers in progress.");
}

Server::~Server() {
  for (auto& c : contexts_) c->stop();
  for (auto& t : threads_) t.join();
  // Sockets before their contexts; destroying a context destroys the sessions its pending
  // handlers hold.
  state_->listener.reset();
  state_->grace_timer.reset();
  contexts_.clear();
}

Status Server::start() {
  auto& st = *state_;
  boost::system::error_code ec;
  const auto addr = net::ip::make_address(st.opts.address, ec);
  if (ec) return make_error(Errc::kInvalid, "tftp: bad listen address '" + st.opts.address + "'");
  const udp::endpoint ep(addr, st.opts.port);
  auto sock = std::make_unique<udp::socket>(st.ioc());
  sock->open(ep.protocol(), ec);
  if (!ec) {
    const int on = 1;
    if (addr.is_v4()) {
      ::setsockopt(sock->native_handle(), IPPROTO_IP, IP_PKTINFO, &on, sizeof on);
    } else {
      ::setsockopt(sock->native_handle(), IPPROTO_IPV6, IPV6_RECVPKTINFO, &on, sizeof on);
    }
    // Many machines booting at once send their requests in a burst.
    const int rcvbuf = 4 << 20;
    ::setsockopt(sock->native_handle(), SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    sock->bind(ep, ec);
  }
  if (ec) {
    return make_error(Errc::kUnavailable, "tftp: cannot bind " + st.opts.address + ":" +
                                              std::to_string(st.opts.port) + ": " + ec.message());
  }
  st.bound_port = sock->local_endpoint().port();
  st.listen_address = addr;
  st.listener = std::move(sock);
  st.wait_listener();
  for (auto& c : contexts_) {
    threads_.emplace_back([ctx = c.get(), log = st.log] {
      auto guard = net::make_work_guard(*ctx);
      for (;;) {
        try {
          ctx->run();
          return;
        } catch (const std::exception& e) {
          // One transfer's failure (e.g. out of memory) must not take the daemon down.
          log->error("event=tftp.handler_exception err=\"{}\"", e.what());
        }
      }
    });
  }
  return ok_status();
}

std::uint16_t Server::port() const { return state_->bound_port; }

int Server::active_transfers() const {
  std::lock_guard lock(state_->mu);
  return state_->active;
}

void Server::shutdown(std::chrono::milliseconds grace, std::function<void()> done) {
  auto st = state_;
  net::post(st->ioc(), [st, grace, done = std::move(done)]() mutable {
    boost::system::error_code ec;
    if (st->listener) st->listener->close(ec);
    int active = 0;
    std::lock_guard lock(st->mu);
    st->stopping = true;
    active = st->active;
    if (active == 0) {
      net::post(st->ioc(), std::move(done));
      return;
    }
    st->on_drained = std::move(done);
    st->grace_timer = std::make_unique<net::steady_timer>(st->ioc(), grace);
    st->log->info("event=tftp.draining transfers={} grace_ms={}", active, grace.count());
    // Started under the lock: release() cancels it (posted to this thread) only afterwards.
    st->grace_timer->async_wait([st](const boost::system::error_code& e) {
      if (e) return;
      std::vector<std::shared_ptr<Session>> left;
      {
        std::lock_guard lock(st->mu);
        for (auto& [_, w] : st->sessions) {
          if (auto s = w.lock()) left.push_back(std::move(s));
        }
      }
      for (auto& s : left) s->abort("server shutting down");
    });
  });
}

}  // namespace kiln::tftp
