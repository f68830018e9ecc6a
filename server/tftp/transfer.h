// tftp/transfer.h — the sending side of one read transfer as a pure state machine. It decides
// which blocks to (re)send and when to give up; the server turns its decisions into datagrams.
// Time is passed in (monotonic milliseconds), so retransmission, duplicate ACKs, windows, block
// number rollover and timeouts are tested without sleeping or sockets.
//
// Rules it implements:
// - RFC 1350 lock-step (window 1) and RFC 7440 windows: up to `window` blocks are in flight;
//   an ACK of block n acknowledges everything up to n and the next window starts at n+1, so an
//   ACK inside the window (the receiver saw a gap) rewinds to the block after it (go-back-N).
// - Sorcerer's apprentice (RFC 1123 4.2.3.1): a duplicate or stale ACK never triggers a send;
//   only the timer retransmits.
// - The final block is the first one shorter than blksize; a size that is a multiple of
//   blksize ends with an empty block. The transfer is done when the final block is ACKed.
// - Block numbers are 16 bits on the wire and roll over from 65535 to 0; internally blocks are
//   64-bit, so any file size works.
// - Retransmission timeout: adaptive (RFC 6298 smoothed RTT, measured only on windows that were
//   not retransmitted), within [min_rto, max_rto], doubling on each consecutive timeout. The
//   client's RFC 2349 `timeout` lowers max_rto to it: the server never waits longer than the
//   client asked (nor than its own max_rto), and retransmits sooner when the measured round
//   trip says a packet was lost (a lossy link must not cost the client's whole timeout per lost
//   packet; a duplicate DATA is harmless). After `max_retries` consecutive timeouts the
//   transfer fails.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace kiln::tftp {

struct TransferConfig {
  std::uint64_t size = 0;  // bytes to send
  std::size_t blksize = 512;
  std::uint16_t window = 1;
  bool oack = false;  // an OACK goes first and must be ACKed with block 0
  std::optional<std::uint32_t> client_timeout_ms;  // RFC 2349 timeout: lowers max_rto to it
  std::uint32_t initial_rto_ms = 1000;
  std::uint32_t min_rto_ms = 200;
  std::uint32_t max_rto_ms = 5000;
  int max_retries = 5;
};

class Transfer {
 public:
  enum class State { kAwaitOackAck, kSending, kDone, kFailed };
  // A decision to send: block 0 is the OACK, blocks >= 1 are DATA.
  using Sends = std::vector<std::uint64_t>;

  explicit Transfer(const TransferConfig& cfg);

  // The first packet(s): the OACK, or the first window of DATA.
  void start(std::int64_t now_ms, Sends& out);
  // An ACK with this 16-bit block number arrived.
  void on_ack(std::uint16_t wire_block, std::int64_t now_ms, Sends& out);
  // Called when now_ms >= deadline(): retransmits or fails.
  void on_timeout(std::int64_t now_ms, Sends& out);
  // The client ended the transfer with an ERROR packet, or the server aborts it.
  void abort(std::string reason);

  State state() const { return state_; }
  bool finished() const { return state_ == State::kDone || state_ == State::kFailed; }
  const std::string& failure() const { return failure_; }
  // Monotonic time at which on_timeout must be called (it may move earlier when the RTO
  // estimate shrinks: a lazy timer must re-arm when deadline() drops below its expiry).
  std::int64_t deadline() const { return deadline_; }

  // Block geometry.
  std::uint64_t total_blocks() const { return total_blocks_; }
  std::uint64_t offset_of(std::uint64_t block) const { return (block - 1) * cfg_.blksize; }
  std::size_t length_of(std::uint64_t block) const;
  static std::uint16_t wire(std::uint64_t block) { return static_cast<std::uint16_t>(block); }

  // Statistics.
  std::uint64_t acked() const { return acked_; }
  std::uint64_t retransmits() const { return retransmits_; }
  std::uint64_t duplicate_acks() const { return duplicate_acks_; }
  std::uint64_t rewinds() const { return rewinds_; }
  std::uint32_t rto_ms() const { return rto_ms_; }

 private:
  void send_window(std::uint64_t from, std::int64_t now_ms, Sends& out);
  void sample_rtt(std::int64_t rtt_ms);
  void arm(std::int64_t now_ms);

  TransferConfig cfg_;
  State state_ = State::kAwaitOackAck;
  std::string failure_;
  std::uint64_t total_blocks_ = 1;
  std::uint64_t acked_ = 0;    // highest block acknowledged
  std::uint64_t sent_hi_ = 0;  // highest block sent
  std::int64_t deadline_ = 0;
  std::int64_t window_sent_at_ = 0;
  bool window_retransmitted_ = false;
  int retries_ = 0;  // consecutive timeouts without progress
  std::uint32_t rto_ms_;
  std::uint32_t backoff_rto_ms_;
  double srtt_ = -1;
  double rttvar_ = 0;
  std::uint64_t retransmits_ = 0;
  std::uint64_t duplicate_acks_ = 0;
  std::uint64_t rewinds_ = 0;
};

}  // namespace kiln::tftp
