// SourceHealth: which chunk source each request goes to while mirrors fail and come back.
#include "agent/sources.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>

namespace kiln::agent {
namespace {

using namespace std::chrono_literals;
using Clock = SourceHealth::Clock;

// A clock the test moves by hand, and the lines the health object logs.
struct Fixture {
  Clock::time_point t = Clock::time_point(1h);
  std::vector<std::string> lines;
  SourceHealth make(std::vector<std::string> names, std::chrono::milliseconds cooldown = 10s) {
    return SourceHealth(
        std::move(names), cooldown, [this](const std::string& l) { lines.push_back(l); },
        [this] { return t; });
  }
};

TEST(SourceHealth, PrefersTheFirstSourceWhileItAnswers) {
  Fixture f;
  auto h = f.make({"http://mirror", "http://kilnd"});
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(h.pick(), 0u);
    h.succeeded(0);
  }
  EXPECT_TRUE(f.lines.empty());
}

TEST(SourceHealth, AFailedMirrorIsSkippedUntilItsCooldownEnds) {
  Fixture f;
  auto h = f.make({"http://mirror", "http://kilnd"});
  EXPECT_EQ(h.pick(), 0u);
  h.failed(0, "connection refused");
  ASSERT_EQ(f.lines.size(), 1u);
  EXPECT_NE(f.lines[0].find("http://mirror failed (connection refused)"), std::string::npos)
      << f.lines[0];
  EXPECT_NE(f.lines[0].find("chunks go to http://kilnd"), std::string::npos) << f.lines[0];
  EXPECT_FALSE(h.up(0));
  // Every chunk in the cool-down goes straight to kilnd: none pays the mirror first.
  for (int i = 0; i < 100; ++i) {
    f.t += 50ms;
    EXPECT_EQ(h.pick(), 1u) << i;
    h.succeeded(1);
  }
  f.t += 5s;  // 10 s since the failure
  EXPECT_EQ(h.pick(), 0u) << "one probe after the cool-down";
  EXPECT_EQ(h.pick(), 1u) << "only one request probes at a time";
  h.succeeded(0);
  EXPECT_TRUE(h.up(0));
  EXPECT_EQ(h.pick(), 0u);
  EXPECT_EQ(f.lines.back(), "chunk source http://mirror answers again");
}

TEST(SourceHealth, RepeatedFailuresDoubleTheCooldownUpTo16x) {
  Fixture f;
  auto h = f.make({"http://mirror", "http://kilnd"}, 1s);
  const std::chrono::milliseconds expected[] = {1s, 2s, 4s, 8s, 16s, 16s};
  for (auto want : expected) {
    ASSERT_EQ(h.pick(), 0u);
    h.failed(0, "timeout");
    f.t += want - 1ms;
    EXPECT_EQ(h.pick(), 1u) << want.count();
    f.t += 1ms;
  }
  EXPECT_NE(f.lines.back().find("skipped for 16000 ms"), std::string::npos) << f.lines.back();
  // A success resets it.
  ASSERT_EQ(h.pick(), 0u);
  h.succeeded(0);
  h.failed(0, "timeout");
  EXPECT_NE(f.lines.back().find("skipped for 1000 ms"), std::string::npos) << f.lines.back();
}

TEST(SourceHealth, FailuresOfRequestsInFlightCountOnce) {
  Fixture f;
  auto h = f.make({"http://mirror", "http://kilnd"});
  // Four workers had requests out to the mirror when it died.
  for (int i = 0; i < 4; ++i) h.failed(0, "connection reset");
  EXPECT_EQ(f.lines.size(), 1u);
  f.t += 10s;
  EXPECT_EQ(h.pick(), 0u) << "the cool-down did not grow";
}

TEST(SourceHealth, AProbeThatNeverReportsIsHandedOutAgain) {
  Fixture f;
  auto h = f.make({"http://mirror", "http://kilnd"});
  h.failed(0, "refused");
  f.t += 10s;
  EXPECT_EQ(h.pick(), 0u);
  EXPECT_EQ(h.pick(), 1u);
  f.t += 10s;
  EXPECT_EQ(h.pick(), 0u);
}

TEST(SourceHealth, MirrorsAreTriedInOrder) {
  Fixture f;
  auto h = f.make({"http://a", "http://b", "http://kilnd"});
  h.failed(0, "refused");
  EXPECT_EQ(h.pick(), 1u);
  h.failed(1, "HTTP 404");
  EXPECT_NE(f.lines.back().find("chunks go to http://kilnd"), std::string::npos);
  EXPECT_EQ(h.pick(), 2u);
  f.t += 10s;
  EXPECT_EQ(h.pick(), 0u);
  EXPECT_EQ(h.pick(), 1u) << "b's cool-down is over too: its own probe";
  EXPECT_EQ(h.pick(), 2u);
}

TEST(SourceHealth, WhenEverySourceIsDownTheFirstBackIsUsed) {
  Fixture f;
  auto h = f.make({"http://mirror", "http://kilnd"});
  h.failed(0, "refused");
  f.t += 1s;
  h.failed(1, "refused");
  EXPECT_EQ(h.pick(), 0u);
  EXPECT_EQ(h.pick(), 0u);
  // A single source (no mirrors) is always used, and its failures are the caller's to log.
  Fixture g;
  auto one = g.make({"http://kilnd"});
  one.failed(0, "refused");
  EXPECT_EQ(one.pick(), 0u);
  EXPECT_TRUE(g.lines.empty());
}

TEST(SourceHealth, SharedByWorkers) {
  SourceHealth h({"http://mirror", "http://kilnd"}, 1h);
  std::atomic<int> to_mirror{0};
  std::vector<std::thread> pool;
  for (int w = 0; w < 8; ++w) {
    pool.emplace_back([&] {
      for (int i = 0; i < 1000; ++i) {
        const auto s = h.pick();
        if (s == 0) {
          ++to_mirror;
          h.failed(0, "refused");
        } else {
          h.succeeded(s);
        }
      }
    });
  }
  for (auto& t : pool) t.join();
  // Only requests that picked it before the first failure reached the dead mirror.
  EXPECT_LE(to_mirror.load(), 8);
  EXPECT_FALSE(h.up(0));
}

}  // namespace
}  // namespace kiln::agent

namespace kiln::agent {
namespace {

TEST(MergeMirrors, OwnFirstThenThePlansWithoutDuplicates) {
  std::vector<std::string> dropped;
  EXPECT_EQ(
      merge_mirrors({"http://a:8080"}, {"http://b:8080/", "http://a:8080/", "http://c"}, dropped),
      (std::vector<std::string>{"http://a:8080", "http://b:8080/", "http://c"}));
  EXPECT_TRUE(dropped.empty());
  EXPECT_EQ(merge_mirrors({}, {"http://b"}, dropped), (std::vector<std::string>{"http://b"}));
  EXPECT_TRUE(merge_mirrors({}, {}, dropped).empty());
}

TEST(MergeMirrors, APlanEntryThatIsNoUrlIsDroppedAndNamed) {
  std::vector<std::string> dropped;
  EXPECT_EQ(merge_mirrors({}, {"ftp://x", "http://b", ""}, dropped),
            (std::vector<std::string>{"http://b"}));
  EXPECT_EQ(dropped, (std::vector<std::string>{"ftp://x", ""}));
}

}  // namespace
}  // namespace kiln::agent
