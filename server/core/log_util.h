// core/log_util.h — helpers for log lines that carry what clients sent: escaping (a client
// cannot forge key=value fields or break a line) and a per-second budget (a flood of bad
// packets is counted in metrics, not written out one line each).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

namespace kiln {

// Printable ASCII of the first `max` bytes; quotes, backslashes and other bytes as \xNN.
std::string log_escape(std::string_view s, std::size_t max = 256);
// A request target as logged (escaped, at most 512 bytes): a credential in its path (cloud-init's
// phone_home URL, .../phone-home/<instance credential>) is replaced by "{token}", whatever
// route or method it came with.
std::string loggable_target(std::string_view target);

// At most `per_second` true answers per wall-clock second. Thread-safe.
class LogBudget {
 public:
  explicit LogBudget(int per_second = 20) : per_second_(per_second) {}
  bool allow() {
    const std::int64_t sec = std::chrono::duration_cast<std::chrono::seconds>(
                                 std::chrono::steady_clock::now().time_since_epoch())
                                 .count();
    if (window_.exchange(sec) != sec) budget_ = per_second_;
    return budget_.fetch_sub(1) > 0;
  }

 private:
  const int per_second_;
  std::atomic<std::int64_t> window_{0};
  std::atomic<int> budget_{0};
};

}  // namespace kiln
