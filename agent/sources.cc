#include "agent/sources.h"

#include <algorithm>
#include <set>
#include <stdexcept>
#include <utility>

#include "agent/http.h"

namespace kiln::agent {

std::vector<std::string> merge_mirrors(const std::vector<std::string>& own,
                                       const std::vector<std::string>& plan,
                                       std::vector<std::string>& dropped) {
  std::vector<std::string> out;
  std::set<std::string> seen;
  auto add = [&](const std::string& m, bool from_plan) {
    auto u = parse_agent_url(m);
    if (!u && from_plan) {
      dropped.push_back(m);
      return;
    }
    // The agent's own entries are passed on as given: deploy() reports one that does not parse.
    if (seen.insert(u ? u->url : m).second) out.push_back(m);
  };
  for (const auto& m : own) add(m, false);
  for (const auto& m : plan) add(m, true);
  return out;
}

SourceHealth::SourceHealth(std::vector<std::string> names, std::chrono::milliseconds cooldown,
                           Notify notify, Now now)
    : cooldown_(std::max(cooldown, std::chrono::milliseconds(1))),
      notify_(std::move(notify)),
      now_(std::move(now)) {
  if (names.empty()) throw std::invalid_argument("SourceHealth needs at least one source");
  for (auto& n : names) sources_.push_back(Source{.name = std::move(n)});
}

std::chrono::milliseconds SourceHealth::cooldown_for(int failures) const {
  return cooldown_ * (1 << std::min(failures - 1, 4));
}

std::size_t SourceHealth::pick() {
  std::lock_guard lock(mu_);
  const auto t = now_();
  for (std::size_t i = 0; i < sources_.size(); ++i) {
    auto& s = sources_[i];
    if (s.failures == 0) return i;
    if (t >= s.until && (!s.probing || t >= s.probe_end)) {
      s.probing = true;
      s.probe_end = t + cooldown_;
      return i;
    }
  }
  // Everything is down: the source that comes back first.
  std::size_t best = 0;
  for (std::size_t i = 1; i < sources_.size(); ++i) {
    if (sources_[i].until < sources_[best].until) best = i;
  }
  return best;
}

void SourceHealth::succeeded(std::size_t i) {
  std::string message;
  {
    std::lock_guard lock(mu_);
    auto& s = sources_.at(i);
    if (s.failures > 0) message = "chunk source " + s.name + " answers again";
    s.failures = 0;
    s.probing = false;
  }
  if (!message.empty() && notify_) notify_(message);
}

void SourceHealth::failed(std::size_t i, const std::string& why) {
  std::string message;
  {
    std::lock_guard lock(mu_);
    const auto t = now_();
    auto& s = sources_.at(i);
    // A request that was in flight when the source went down: already counted.
    if (s.failures > 0 && t < s.until) return;
    ++s.failures;
    s.probing = false;
    const auto wait = cooldown_for(s.failures);
    s.until = t + wait;
    if (sources_.size() == 1) return;  // nowhere else to go: the caller's retries say it
    std::string next = "whichever source comes back first";
    for (std::size_t j = 0; j < sources_.size(); ++j) {
      if (j != i && sources_[j].failures == 0) {
        next = sources_[j].name;
        break;
      }
    }
    message = "chunk source " + s.name + " failed (" + why + "): skipped for " +
              std::to_string(wait.count()) + " ms, chunks go to " + next;
  }
  if (notify_) notify_(message);
}

bool SourceHealth::up(std::size_t i) const {
  std::lock_guard lock(mu_);
  return sources_.at(i).failures == 0;
}

}  // namespace kiln::agent
