// Events: one long-poll, or --follow (long-poll from the last cursor until interrupted).
#include <algorithm>
#include <thread>

#include "cli/api_commands.h"
#include "cli/render.h"

namespace kiln::cli {

namespace {

using json = nlohmann::json;
using std::chrono::seconds;

// Long-poll wait of `events --follow` when --wait is not given.
constexpr std::int64_t kFollowWaitSeconds = 30;

std::string events_target(const Args& a, std::int64_t since, std::int64_t wait) {
  Query q;
  q.add("since", std::to_string(since));
  if (wait > 0) q.add("wait", std::to_string(wait));
  if (!a.machine.empty()) q.add("machine", a.machine);
  return api_path({"events"}) + q.str();
}

// Prints the events of one reply, one per line: event_line(), or with --json each event's
// JSON object. Returns false (the failure printed) when an event does not decode.
bool print_events(Session& s, const json& body) {
  const json& items = items_of(body, "events");
  if (s.json_mode()) {
    for (const auto& e : items) s.out() << e.dump() << "\n";
    return true;
  }
  auto events = s.decoded_all(items, proto::event_from_json);
  if (!events) return false;
  for (const auto& e : *events) s.out() << event_line(e) << "\n";
  return true;
}

int events_once(Session& s, const Args& a) {
  const std::int64_t wait = a.wait.value_or(0);
  auto r = s.call("GET", events_target(a, a.since, wait), nullptr, seconds(wait));
  if (!r) return s.failure_code();
  if (s.json_mode()) return s.print_raw(*r);
  return print_events(s, r->body) ? kExitOk : s.failure_code();
}

// Transport failures after the first successful poll are retried with backoff (the server may
// be restarting); API errors (e.g. a revoked token) end the command.
int events_follow(Session& s, const Args& a) {
  const std::int64_t wait = a.wait.value_or(kFollowWaitSeconds);
  if (wait < 1) return s.usage("--follow needs a --wait of at least 1 second");
  std::int64_t cursor = a.since;
  bool connected = false;
  int backoff_s = 1;
  while (true) {
    auto r = s.call("GET", events_target(a, cursor, wait), nullptr, seconds(wait));
    if (!r) {
      if (s.failure_code() != kExitUsage || !connected) return s.failure_code();
      s.err() << "kiln: retrying in " << backoff_s << " s\n";
      std::this_thread::sleep_for(seconds(backoff_s));
      backoff_s = std::min(backoff_s * 2, 30);
      continue;
    }
    connected = true;
    backoff_s = 1;
    if (!print_events(s, r->body)) return s.failure_code();
    s.out().flush();
    if (auto next = r->body.find("next"); next != r->body.end() && next->is_number_integer()) {
      cursor = std::max(cursor, next->get<std::int64_t>());
    }
  }
}

}  // namespace

int events(Session& s, const Args& a) {
  if (a.since < 0) return s.usage("--since must be 0 or more");
  if (a.wait && *a.wait < 0) return s.usage("--wait must be 0 or more seconds");
  return a.follow ? events_follow(s, a) : events_once(s, a);
}

}  // namespace kiln::cli
