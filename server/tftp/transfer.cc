#include "tftp/transfer.h"

#include <algorithm>
#include <cmath>

namespace kiln::tftp {

Transfer::Transfer(const TransferConfig& cfg) : cfg_(cfg) {
  if (cfg_.blksize == 0) cfg_.blksize = 512;
  if (cfg_.window == 0) cfg_.window = 1;
  total_blocks_ = cfg_.size / cfg_.blksize + 1;
  if (cfg_.client_timeout_ms) {
    cfg_.max_rto_ms =
        std::min(cfg_.max_rto_ms, std::max<std::uint32_t>(*cfg_.client_timeout_ms, 1));
  }
  cfg_.min_rto_ms = std::min(cfg_.min_rto_ms, cfg_.max_rto_ms);
  rto_ms_ = std::clamp(cfg_.initial_rto_ms, cfg_.min_rto_ms, cfg_.max_rto_ms);
  backoff_rto_ms_ = rto_ms_;
}

std::size_t Transfer::length_of(std::uint64_t block) const {
  const std::uint64_t off = offset_of(block);
  if (off >= cfg_.size) return 0;
  return static_cast<std::size_t>(std::min<std::uint64_t>(cfg_.blksize, cfg_.size - off));
}

void Transfer::arm(std::int64_t now_ms) { deadline_ = now_ms + backoff_rto_ms_; }

void Transfer::start(std::int64_t now_ms, Sends& out) {
  window_sent_at_ = now_ms;
  window_retransmitted_ = false;
  if (cfg_.oack) {
    state_ = State::kAwaitOackAck;
    out.push_back(0);
    arm(now_ms);
    return;
  }
  state_ = State::kSending;
  send_window(1, now_ms, out);
}

void Transfer::send_window(std::uint64_t from, std::int64_t now_ms, Sends& out) {
  const std::uint64_t to = std::min<std::uint64_t>(from + cfg_.window - 1, total_blocks_);
  for (std::uint64_t b = from; b <= to; ++b) out.push_back(b);
  sent_hi_ = std::max(sent_hi_, to);
  arm(now_ms);
}

void Transfer::sample_rtt(std::int64_t rtt_ms) {
  const double r = static_cast<double>(std::max<std::int64_t>(rtt_ms, 0));
  if (srtt_ < 0) {
    srtt_ = r;
    rttvar_ = r / 2;
  } else {
    rttvar_ = 0.75 * rttvar_ + 0.25 * std::fabs(srtt_ - r);
    srtt_ = 0.875 * srtt_ + 0.125 * r;
  }
  const double rto = srtt_ + std::max(1.0, 4 * rttvar_);
  rto_ms_ = static_cast<std::uint32_t>(std::clamp(
      std::ceil(rto), static_cast<double>(cfg_.min_rto_ms), static_cast<double>(cfg_.max_rto_ms)));
}

void Transfer::on_ack(std::uint16_t wire_block, std::int64_t now_ms, Sends& out) {
  if (state_ == State::kAwaitOackAck) {
    if (wire_block != 0) {
      ++duplicate_acks_;  // nothing but ACK 0 acknowledges an OACK
      return;
    }
    if (!window_retransmitted_) sample_rtt(now_ms - window_sent_at_);
    state_ = State::kSending;
    retries_ = 0;
    backoff_rto_ms_ = rto_ms_;
    window_sent_at_ = now_ms;
    window_retransmitted_ = false;
    send_window(1, now_ms, out);
    return;
  }
  if (state_ != State::kSending) return;
  // The absolute block this ACK names: the one at or below sent_hi_ with these low 16 bits.
  const std::uint16_t back = static_cast<std::uint16_t>(wire(sent_hi_) - wire_block);
  if (back > sent_hi_ || sent_hi_ - back <= acked_) {
    ++duplicate_acks_;  // stale or duplicate: only the timer retransmits
    return;
  }
  const std::uint64_t block = sent_hi_ - back;
  if (!window_retransmitted_) sample_rtt(now_ms - window_sent_at_);
  acked_ = block;
  retries_ = 0;
  backoff_rto_ms_ = rto_ms_;
  if (acked_ == total_blocks_) {
    state_ = State::kDone;
    return;
  }
  if (acked_ < sent_hi_) ++rewinds_;  // the receiver reported a gap: go back to it
  window_sent_at_ = now_ms;
  window_retransmitted_ = false;
  send_window(acked_ + 1, now_ms, out);
}

void Transfer::on_timeout(std::int64_t now_ms, Sends& out) {
  if (finished() || now_ms < deadline_) return;
  if (retries_ >= cfg_.max_retries) {
    state_ = State::kFailed;
    failure_ =
        sent_hi_ == total_blocks_ && acked_ + 1 == total_blocks_
            ? "timeout: the final block was sent but never acknowledged"
            : "timeout: no acknowledgement after " + std::to_string(retries_) + " retransmissions";
    return;
  }
  ++retries_;
  window_retransmitted_ = true;
  backoff_rto_ms_ = static_cast<std::uint32_t>(
      std::min<std::uint64_t>(std::uint64_t{backoff_rto_ms_} * 2, cfg_.max_rto_ms));
  const std::size_t before = out.size();
  if (state_ == State::kAwaitOackAck) {
    out.push_back(0);
    arm(now_ms);
  } else {
    // Resend the whole outstanding window (go-back-N from the first unacknowledged block).
    send_window(acked_ + 1, now_ms, out);
  }
  retransmits_ += out.size() - before;
}

void Transfer::abort(std::string reason) {
  if (finished()) return;
  state_ = State::kFailed;
  failure_ = std::move(reason);
}

}  // namespace kiln::tftp
