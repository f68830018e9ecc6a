// agent/sources.h — which chunk source a request goes to: the ordered sources of one deployment
// (mirrors, then kilnd; agent/http.h chunk_sources) and their health, shared by every worker.
//
// A source that failed a request (refused, reset, timed out, answered other than 200, or sent
// bytes that do not hash to the chunk) cools down: it is skipped, so the chunks after it do not
// each pay its timeout or refusal first, and the next source in order takes its requests. Once
// the cool-down is over, one request at a time probes it again (the others keep going to the
// source after it); a success makes it preferred again, another failure doubles its cool-down
// (up to 16x). Failures of requests already in flight when it went down do not lengthen it.
// When every source is cooling down, the one whose cool-down ends first is used anyway: the
// caller's retry bound and backoff, not this class, decide when a chunk fails.
//
// Thread-safe: every member may be called from any worker.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

namespace kiln::agent {

// The mirrors of a deployment, in order: the agent's own (--mirror, kiln.mirror=: the word of
// whoever booted this machine), then the plan's (kilnd's choice for the machine's network, its
// `mirrors` config); kilnd itself comes after them (chunk_sources). A URL listed twice is kept
// once, first place; a plan entry that is not an http(s) URL is left out and named in `dropped`.
std::vector<std::string> merge_mirrors(const std::vector<std::string>& own,
                                       const std::vector<std::string>& plan,
                                       std::vector<std::string>& dropped);

class SourceHealth {
 public:
  using Clock = std::chrono::steady_clock;
  // Told when a source goes down and when it answers again (one line, for the agent's log).
  using Notify = std::function<void(const std::string&)>;
  using Now = std::function<Clock::time_point()>;

  // `names`: the sources in order of preference (their URLs, used in messages); at least one.
  // `cooldown`: how long a source is skipped after its first failure (>= 1 ms).
  SourceHealth(std::vector<std::string> names, std::chrono::milliseconds cooldown,
               Notify notify = {}, Now now = Clock::now);

  // The index of the source for the next request. A source handed out as a probe is not handed
  // out again until succeeded()/failed() is called for it or one cool-down has passed.
  std::size_t pick();
  // The outcome of a request sent to source `i` (an index pick() returned).
  void succeeded(std::size_t i);
  void failed(std::size_t i, const std::string& why);

  // Whether source `i` is preferred (not cooling down or waiting for a probe's result).
  bool up(std::size_t i) const;
  std::size_t size() const { return sources_.size(); }

 private:
  struct Source {
    std::string name;
    int failures = 0;               // consecutive; 0 = up
    Clock::time_point until{};      // down: skipped before this
    Clock::time_point probe_end{};  // a probe is out until this (or its result)
    bool probing = false;
  };
  std::chrono::milliseconds cooldown_for(int failures) const;

  mutable std::mutex mu_;
  std::vector<Source> sources_;
  std::chrono::milliseconds cooldown_;
  Notify notify_;
  Now now_;
};

}  // namespace kiln::agent
