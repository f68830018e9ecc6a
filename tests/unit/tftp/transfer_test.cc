#include "tftp/transfer.h"

#include <gtest/gtest.h>

namespace kiln::tftp {
namespace {

using Sends = Transfer::Sends;

TransferConfig lockstep(std::uint64_t size, std::size_t blksize = 512) {
  TransferConfig c;
  c.size = size;
  c.blksize = blksize;
  return c;
}

// Acks `block` at `now` and returns what the transfer sends in answer.
Sends ack(Transfer& t, std::uint64_t block, std::int64_t now) {
  Sends out;
  t.on_ack(Transfer::wire(block), now, out);
  return out;
}

TEST(TftpTransfer, LockStepEndsWithAnEmptyBlockWhenTheSizeIsAMultipleOfBlksize) {
  Transfer t(lockstep(1024));
  EXPECT_EQ(t.total_blocks(), 3u);
  EXPECT_EQ(t.length_of(1), 512u);
  EXPECT_EQ(t.length_of(2), 512u);
  EXPECT_EQ(t.length_of(3), 0u);
  Sends out;
  t.start(0, out);
  EXPECT_EQ(out, Sends({1}));
  EXPECT_EQ(ack(t, 1, 1), Sends({2}));
  EXPECT_EQ(ack(t, 2, 2), Sends({3}));
  EXPECT_EQ(ack(t, 3, 3), Sends());
  EXPECT_EQ(t.state(), Transfer::State::kDone);
}

TEST(TftpTransfer, BlockGeometryAtTheEdges) {
  EXPECT_EQ(Transfer(lockstep(0)).total_blocks(), 1u);  // one empty block
  Transfer one(lockstep(512));                          // exactly one block, then an empty one
  EXPECT_EQ(one.total_blocks(), 2u);
  Transfer partial(lockstep(513));
  EXPECT_EQ(partial.total_blocks(), 2u);
  EXPECT_EQ(partial.length_of(2), 1u);
  EXPECT_EQ(partial.offset_of(2), 512u);
}

TEST(TftpTransfer, ZeroByteFile) {
  Transfer t(lockstep(0));
  Sends out;
  t.start(0, out);
  EXPECT_EQ(out, Sends({1}));
  EXPECT_EQ(t.length_of(1), 0u);
  EXPECT_EQ(ack(t, 1, 1), Sends());
  EXPECT_EQ(t.state(), Transfer::State::kDone);
}

TEST(TftpTransfer, LostDataIsRetransmittedWhenTheTimerFires) {
  Transfer t(lockstep(2000));
  Sends out;
  t.start(0, out);
  ASSERT_EQ(out, Sends({1}));
  out.clear();
  t.on_timeout(t.deadline() - 1, out);  // early call: nothing
  EXPECT_TRUE(out.empty());
  t.on_timeout(t.deadline(), out);
  EXPECT_EQ(out, Sends({1}));
  EXPECT_EQ(t.retransmits(), 1u);
  EXPECT_EQ(ack(t, 1, 1500), Sends({2}));
}

TEST(TftpTransfer, DuplicateAcksNeverTriggerASend_SorcerersApprentice) {
  Transfer t(lockstep(4096));
  Sends out;
  t.start(0, out);
  EXPECT_EQ(ack(t, 1, 1), Sends({2}));
  // The client's ACK 1 was delayed and retransmitted: the second copy must not resend 2.
  EXPECT_EQ(ack(t, 1, 2), Sends());
  EXPECT_EQ(ack(t, 1, 3), Sends());
  EXPECT_EQ(t.duplicate_acks(), 2u);
  EXPECT_EQ(ack(t, 2, 4), Sends({3}));
  // A stale ACK from long ago and an ACK of a block never sent are ignored too.
  EXPECT_EQ(ack(t, 1, 5), Sends());
  Sends future;
  t.on_ack(9, 6, future);
  EXPECT_TRUE(future.empty());
  EXPECT_EQ(t.acked(), 2u);
}

TEST(TftpTransfer, LostAckIsRecoveredByTheTimerAndTheLateAckStillCounts) {
  Transfer t(lockstep(2000));
  Sends out;
  t.start(0, out);
  EXPECT_EQ(ack(t, 1, 10), Sends({2}));
  // ACK 2 lost: the timer resends block 2; the client ACKs the duplicate.
  out.clear();
  t.on_timeout(t.deadline(), out);
  EXPECT_EQ(out, Sends({2}));
  EXPECT_EQ(ack(t, 2, 5000), Sends({3}));
}

TEST(TftpTransfer, OackMustBeAcknowledgedWithBlockZero) {
  TransferConfig c = lockstep(3000, 1468);
  c.oack = true;
  Transfer t(c);
  Sends out;
  t.start(0, out);
  EXPECT_EQ(out, Sends({0}));
  EXPECT_EQ(t.state(), Transfer::State::kAwaitOackAck);
  EXPECT_EQ(ack(t, 1, 1), Sends());  // not an acknowledgement of the OACK
  out.clear();
  t.on_timeout(t.deadline(), out);
  EXPECT_EQ(out, Sends({0}));  // OACK lost: sent again
  EXPECT_EQ(ack(t, 0, 1100), Sends({1}));
  EXPECT_EQ(ack(t, 1, 1101), Sends({2}));
  EXPECT_EQ(ack(t, 2, 1102), Sends({3}));
  EXPECT_EQ(t.length_of(3), 3000u - 2 * 1468u);
  EXPECT_EQ(ack(t, 3, 1103), Sends());
  EXPECT_EQ(t.state(), Transfer::State::kDone);
}

TEST(TftpTransfer, WindowsAreSentWholeAndAGapRewinds) {
  TransferConfig c = lockstep(512 * 10 + 100);  // 11 blocks
  c.window = 4;
  c.oack = true;
  Transfer t(c);
  Sends out;
  t.start(0, out);
  EXPECT_EQ(ack(t, 0, 1), Sends({1, 2, 3, 4}));
  EXPECT_EQ(ack(t, 4, 2), Sends({5, 6, 7, 8}));
  // Block 7 was lost: the receiver ACKs 6, the last in order. Go back to 7.
  EXPECT_EQ(ack(t, 6, 3), Sends({7, 8, 9, 10}));
  EXPECT_EQ(t.rewinds(), 1u);
  // Block 8 of the first window arrives out of order at the client, which ACKs 6 again.
  EXPECT_EQ(ack(t, 6, 4), Sends());
  EXPECT_EQ(ack(t, 10, 5), Sends({11}));
  // The window timer resends everything outstanding.
  out.clear();
  t.on_timeout(t.deadline(), out);
  EXPECT_EQ(out, Sends({11}));
  EXPECT_EQ(ack(t, 11, 9000), Sends());
  EXPECT_EQ(t.state(), Transfer::State::kDone);
}

TEST(TftpTransfer, TimeoutResendsTheWholeOutstandingWindow) {
  TransferConfig c = lockstep(512 * 20);
  c.window = 8;
  Transfer t(c);
  Sends out;
  t.start(0, out);
  EXPECT_EQ(out.size(), 8u);
  EXPECT_EQ(ack(t, 3, 5), Sends({4, 5, 6, 7, 8, 9, 10, 11}));
  out.clear();
  t.on_timeout(t.deadline(), out);
  EXPECT_EQ(out, Sends({4, 5, 6, 7, 8, 9, 10, 11}));
  EXPECT_EQ(t.retransmits(), 8u);
}

TEST(TftpTransfer, BlockNumbersRollOverPast65535) {
  // 70000 blocks of 512 bytes (> 32 MiB): wire numbers wrap from 65535 to 0.
  Transfer t(lockstep(std::uint64_t{70000} * 512));
  ASSERT_EQ(t.total_blocks(), 70001u);
  Sends out;
  t.start(0, out);
  for (std::uint64_t b = 1; b < t.total_blocks(); ++b) {
    Sends next = ack(t, b, static_cast<std::int64_t>(b));
    ASSERT_EQ(next, Sends({b + 1})) << "after ACK of block " << b;
  }
  EXPECT_EQ(Transfer::wire(65536), 0);
  EXPECT_EQ(Transfer::wire(65537), 1);
  EXPECT_EQ(ack(t, t.total_blocks(), 80000), Sends());
  EXPECT_EQ(t.state(), Transfer::State::kDone);
  EXPECT_EQ(t.duplicate_acks(), 0u);
}

TEST(TftpTransfer, RolloverWithAWindowAcrossTheWrap) {
  TransferConfig c = lockstep(std::uint64_t{65540} * 512);
  c.window = 8;
  Transfer t(c);
  Sends out;
  t.start(0, out);
  std::uint64_t acked = 0;
  while (acked + 8 < 65530) {
    acked += 8;
    ASSERT_EQ(ack(t, acked, 1).size(), 8u);
  }
  // Window straddling 65535 -> 0: ACK of wire block 2 is absolute block 65538.
  while (acked < 65530) ASSERT_FALSE(ack(t, ++acked, 2).empty());
  Sends w = ack(t, 65534, 3);  // a gap report inside the window
  EXPECT_EQ(w.front(), 65535u);
  Sends after;
  t.on_ack(2, 4, after);
  EXPECT_EQ(t.acked(), 65538u);
  EXPECT_EQ(after.front(), 65539u);
}

TEST(TftpTransfer, GivesUpAfterMaxRetriesWithBackoff) {
  TransferConfig c = lockstep(2000);
  c.max_retries = 3;
  c.initial_rto_ms = 1000;
  c.max_rto_ms = 3000;
  Transfer t(c);
  Sends out;
  t.start(0, out);
  EXPECT_EQ(t.deadline(), 1000);
  std::vector<std::int64_t> waits;
  std::int64_t now = 0;
  while (!t.finished()) {
    const std::int64_t d = t.deadline();
    waits.push_back(d - now);
    now = d;
    out.clear();
    t.on_timeout(now, out);
  }
  EXPECT_EQ(t.state(), Transfer::State::kFailed);
  EXPECT_EQ(t.retransmits(), 3u);
  EXPECT_EQ(waits, (std::vector<std::int64_t>{1000, 2000, 3000, 3000}));  // doubling, capped
  EXPECT_NE(t.failure().find("timeout"), std::string::npos);
}

TEST(TftpTransfer, ClientTimeoutOptionCapsTheRetransmitInterval) {
  TransferConfig c = lockstep(100000);
  c.client_timeout_ms = 3000;
  c.initial_rto_ms = 1000;
  c.max_rto_ms = 5000;
  c.min_rto_ms = 50;
  c.max_retries = 4;
  Transfer t(c);
  Sends out;
  t.start(0, out);
  EXPECT_EQ(t.deadline(), 1000);  // no later than the client's 3 s, sooner while unmeasured
  t.on_timeout(1000, out);
  EXPECT_EQ(t.deadline(), 3000);  // backoff 2 s
  t.on_timeout(3000, out);
  EXPECT_EQ(t.deadline(), 6000);  // backoff capped at the client's timeout, not max_rto
  // Measured round trips bring it down: a lossy link does not cost 3 s per lost packet.
  std::int64_t now = 6000;
  for (std::uint64_t b = 1; b <= 20; ++b) {
    now += 10;
    ASSERT_FALSE(ack(t, b, now).empty());
  }
  EXPECT_EQ(t.rto_ms(), 50u);
  EXPECT_EQ(t.deadline(), now + 50);
}

TEST(TftpTransfer, AdaptiveTimeoutFollowsTheMeasuredRtt) {
  TransferConfig c = lockstep(100000);
  c.initial_rto_ms = 1000;
  c.min_rto_ms = 50;
  Transfer t(c);
  Sends out;
  t.start(0, out);
  EXPECT_EQ(t.rto_ms(), 1000u);
  std::int64_t now = 0;
  for (std::uint64_t b = 1; b <= 20; ++b) {
    now += 20;  // a 20 ms round trip
    ASSERT_EQ(ack(t, b, now).size(), 1u);
  }
  EXPECT_GE(t.rto_ms(), 20u);
  EXPECT_LE(t.rto_ms(), 60u);
  EXPECT_EQ(t.deadline(), now + t.rto_ms());
  // A long round trip raises it again.
  now += 400;
  ack(t, 21, now);
  EXPECT_GT(t.rto_ms(), 100u);
}

TEST(TftpTransfer, RetransmittedWindowsGiveNoRttSample_Karn) {
  TransferConfig c = lockstep(100000);
  c.initial_rto_ms = 1000;
  c.min_rto_ms = 10;
  Transfer t(c);
  Sends out;
  t.start(0, out);
  t.on_timeout(1000, out);
  ack(t, 1, 1001);  // ambiguous: answers the first or the second copy
  EXPECT_EQ(t.rto_ms(), 1000u);
}

TEST(TftpTransfer, FinalAckLostFailsWithAClearReason) {
  TransferConfig c = lockstep(100);
  c.max_retries = 1;
  Transfer t(c);
  Sends out;
  t.start(0, out);
  t.on_timeout(t.deadline(), out);
  t.on_timeout(t.deadline(), out);
  EXPECT_EQ(t.state(), Transfer::State::kFailed);
  EXPECT_NE(t.failure().find("final block"), std::string::npos);
}

TEST(TftpTransfer, AbortEndsIt) {
  Transfer t(lockstep(100));
  Sends out;
  t.start(0, out);
  t.abort("client sent error 0");
  EXPECT_TRUE(t.finished());
  EXPECT_EQ(t.failure(), "client sent error 0");
  out.clear();
  t.on_ack(1, 5, out);
  EXPECT_TRUE(out.empty());
}

}  // namespace
}  // namespace kiln::tftp
