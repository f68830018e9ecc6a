// The event stream: pages of events after a cursor, long-polled on the EventHub's timers
// (a waiting client costs a timer, never a thread).
#include <spdlog/spdlog.h>

#include "api/routes.h"

namespace kiln::api {
namespace {

namespace bhttp = boost::beast::http;
using Clock = std::chrono::steady_clock;

// One page of events after `since`. `scanned` is an event id up to which every event was
// considered (read before the query, so nothing committed in between is skipped).
json events_page(Services& s, std::int64_t since, int limit, std::optional<std::int64_t> machine_id,
                 std::int64_t* scanned) {
  *scanned = s.store.last_event_id();
  json items = json::array();
  std::int64_t next = since;
  for (const auto& e : s.store.events_since(since, limit, machine_id)) {
    items.push_back(to_json(e));
    next = e.id;
  }
  return {{"events", std::move(items)}, {"next", next}};
}

// Waits for an event after `since` (matching `machine_id`, if set) until `deadline`.
// `seen` is the newest event id already known not to match.
void park(Services& s, std::int64_t since, std::int64_t seen, int limit,
          std::optional<std::int64_t> machine_id, Clock::time_point deadline, Respond respond) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  s.hub.wait(std::max(since, seen), left,
             [&s, since, limit, machine_id, deadline, respond = std::move(respond)]() mutable {
               try {
                 std::int64_t scanned = 0;
                 auto page = events_page(s, since, limit, machine_id, &scanned);
                 const bool over = Clock::now() >= deadline || s.hub.is_shut_down();
                 if (!page["events"].empty() || over) {
                   return respond(json_response(bhttp::status::ok, page));
                 }
                 // A filtered wait woke on an unrelated event: wait on past what was scanned.
                 park(s, since, scanned, limit, machine_id, deadline, std::move(respond));
               } catch (const std::exception& e) {
                 s.log.error("event=api.events_failed err=\"{}\"", e.what());
                 respond(error_response({Errc::kInternal, "internal error"}));
               }
             });
}

std::optional<Response> list(Services& s, Ctx& c) {
  const std::int64_t since = c.q("since") ? parse_int(*c.q("since"), "since") : 0;
  std::int64_t limit = c.q("limit") ? parse_int(*c.q("limit"), "limit") : 100;
  if (limit < 1 || limit > 1000) fail(Errc::kInvalid, "limit must be 1-1000");
  std::optional<std::int64_t> machine_id;
  if (auto m = c.q("machine")) machine_id = s.machine(*m).id;
  std::int64_t wait_s = c.q("wait") ? parse_int(*c.q("wait"), "wait") : 0;
  const auto max_s = std::chrono::duration_cast<std::chrono::seconds>(s.options.max_wait).count();
  if (wait_s < 0 || wait_s > max_s) fail(Errc::kInvalid, "wait must be 0-" + std::to_string(max_s));
  std::int64_t scanned = 0;
  auto page = events_page(s, since, static_cast<int>(limit), machine_id, &scanned);
  if (!page["events"].empty() || wait_s == 0) return json_response(bhttp::status::ok, page);
  // Nothing yet: park the request until an event arrives or the wait is over.
  park(s, since, scanned, static_cast<int>(limit), machine_id,
       Clock::now() + std::chrono::seconds(wait_s), std::move(c.respond));
  return std::nullopt;
}

constexpr RouteSpec kRoutes[] = {
    {bhttp::verb::get, "/api/v1/events", Access::kRead, list},
};

}  // namespace

std::span<const RouteSpec> event_routes() { return kRoutes; }

}  // namespace kiln::api
