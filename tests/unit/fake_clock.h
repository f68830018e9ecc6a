// tests/unit/fake_clock.h — a Clock the test sets by hand (milliseconds since the epoch).
#pragma once

#include <atomic>
#include <cstdint>

#include "core/clock.h"

namespace kiln::testing {

class FakeClock final : public Clock {
 public:
  std::int64_t now_ms() const override { return now.load(); }
  std::atomic<std::int64_t> now{1'700'000'000'000};
};

}  // namespace kiln::testing
