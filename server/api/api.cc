#include "api/api.h"

#include <spdlog/spdlog.h>

#include <charconv>

#include "api/image_responses.h"
#include "api/routes.h"
#include "core/hex.h"
#include "core/log_util.h"
#include "core/url.h"
#include "store/sqlite.h"

namespace kiln::api {

namespace bhttp = boost::beast::http;

namespace {

// The method as a metrics label: only methods HTTP defines, so clients cannot mint series.
std::string method_label(bhttp::verb v) {
  return v == bhttp::verb::unknown ? "OTHER" : std::string(bhttp::to_string(v));
}

constexpr std::string_view kUploadRoute = "/api/v1/images/{name}/versions/{version}";

}  // namespace

struct Api::Impl {
  Metrics& metrics;
  ApiOptions options;
  std::shared_ptr<spdlog::logger> log;
  EventHub hub;
  Services services;
  // Long-polls wake for every committed event: the API's own writes, kilnd's background work
  // (power, rollouts, deadlines) and, on PostgreSQL, every other instance's. Last: it ends
  // before the hub it notifies.
  std::unique_ptr<store::Store::Subscription> events;

  Impl(store::Store& s, Metrics& m, const Clock& c, boost::asio::io_context& io, ApiOptions o,
       std::shared_ptr<spdlog::logger> l)
      : metrics(m),
        options(std::move(o)),
        log(std::move(l)),
        hub(io, s.last_event_id()),
        services{s, m, c, options, hub, *log},
        events(s.subscribe_events([this](std::int64_t last_id) { hub.notify(last_id); })) {
    describe_metrics();
  }

  void describe_metrics() {
    metrics.describe("kiln_machines", Metrics::Type::kGauge, "Machines by lifecycle state.");
    metrics.describe("kiln_deployments", Metrics::Type::kGauge, "Deployments by status.");
    metrics.describe("kiln_events_waiters", Metrics::Type::kGauge,
                     "Clients long-polling /api/v1/events.");
    metrics.describe("kiln_build_info", Metrics::Type::kGauge, "kilnd version.");
    metrics.describe("kiln_store_commits_total", Metrics::Type::kCounter,
                     "Database write transactions committed (with at least one change).");
    metrics.set("kiln_build_info", {{"version", options.version}}, 1);
    metrics.add_collector([this] {
      std::vector<Metrics::Sample> out;
      for (const auto& [state, n] : services.store.count_machines_by_state()) {
        out.emplace_back("kiln_machines", Labels{{"state", state}}, static_cast<double>(n));
      }
      for (const auto& [status, n] : services.store.count_deployments_by_status()) {
        out.emplace_back("kiln_deployments", Labels{{"status", status}}, static_cast<double>(n));
      }
      out.emplace_back("kiln_events_waiters", Labels{}, static_cast<double>(hub.waiting()));
      out.emplace_back("kiln_store_commits_total", Labels{},
                       static_cast<double>(store::committed_writes()));
      return out;
    });
  }

  // The header of a request: is it an image upload, and is it refused before its body?
  UploadAdmission admit_upload(const RequestHeader& h) {
    UploadAdmission out;
    if (!services.images || h.method() != bhttp::verb::post) return out;
    const auto type = h[bhttp::field::content_type];
    std::string mime = ascii_lower(type.substr(0, type.find(';')));
    while (!mime.empty() && mime.back() == ' ') mime.pop_back();
    if (mime != "application/octet-stream") return out;
    const std::string target(h.target());
    auto match = route_table().match(h.method(), target.substr(0, target.find('?')));
    if (!match.route || match.route->info.pattern != kUploadRoute) return out;
    out.is_upload = true;
    Ctx ctx;
    ctx.req = Request(h);
    try {
      services.authenticate(ctx, Access::kAdmin);
      check(proto::validate_image_name(match.params["name"]));
      check(proto::validate_image_version(match.params["version"]));
      std::optional<std::uint64_t> length;
      if (auto cl = h[bhttp::field::content_length]; !cl.empty()) {
        std::uint64_t n = 0;
        if (std::from_chars(cl.data(), cl.data() + cl.size(), n).ec == std::errc()) length = n;
      }
      out.refusal = reserve_upload(services, length, out.hold);
      if (out.refusal) {
        metrics.add("kiln_http_requests_total",
                    {{"route", match.route->info.pattern},
                     {"method", "POST"},
                     {"code", std::to_string(out.refusal->result_int())}});
      }
    } catch (const ApiError& e) {
      metrics.add("kiln_http_requests_total",
                  {{"route", match.route->info.pattern},
                   {"method", "POST"},
                   {"code", std::to_string(static_cast<unsigned>(status_for(e.error.code)))}});
      out.refusal = error_response(e.error);
    } catch (const std::exception& e) {
      log->error("event=api.upload_admission_failed err=\"{}\"", e.what());
      out.refusal = error_response({Errc::kUnavailable, "cannot accept uploads now, retry"});
    }
    return out;
  }

  // Counts and logs every completed request, whichever way (and on whichever thread) it
  // completes, then hands the response on.
  Respond finisher(std::string route, std::string method_name, std::string target,
                   Respond respond) {
    const auto started = std::chrono::steady_clock::now();
    return [this, route = std::move(route), method_name = std::move(method_name),
            target = std::move(target), started, respond = std::move(respond)](Response&& res) {
      const unsigned code = res.result_int();
      metrics.add("kiln_http_requests_total",
                  {{"route", route}, {"method", method_name}, {"code", std::to_string(code)}});
      const std::chrono::duration<double, std::milli> ms =
          std::chrono::steady_clock::now() - started;
      if (code >= 500) {
        log->error("event=api.request method={} target=\"{}\" status={} ms={:.2f}", method_name,
                   target, code, ms.count());
      } else {
        log->debug("event=api.request method={} target=\"{}\" status={} ms={:.2f}", method_name,
                   target, code, ms.count());
      }
      respond(std::move(res));
    };
  }

  void handle(Request&& req, Respond respond) {
    const auto method = req.method();
    const std::string method_name = method_label(method);
    const std::string target(req.target());
    const auto qpos = target.find('?');
    const std::string path = target.substr(0, qpos);
    auto match = route_table().match(method, path);
    auto finish = finisher(match.route ? match.route->info.pattern : "unmatched", method_name,
                           loggable_target(target), std::move(respond));
    if (!match.route) {
      if (!match.allow.empty()) {
        auto res = json_response(
            bhttp::status::method_not_allowed,
            {{"error",
              {{"code", "method_not_allowed"},
               {"message", method_name + " is not allowed here; allowed: " + match.allow}}}});
        res.set(bhttp::field::allow, match.allow);
        return finish(std::move(res));
      }
      return finish(error_response({Errc::kNotFound, "no route for " + path}));
    }
    Ctx ctx;
    ctx.params = std::move(match.params);
    ctx.respond = finish;  // a copy: a handler that answers later may move it away
    const auto query =
        qpos == std::string::npos ? std::string_view() : std::string_view(target).substr(qpos + 1);
    dispatch(*match.route, ctx, std::move(req), query, finish);
  }

  // The one catch per request.
  void dispatch(const Router<Handler>::Route& route, Ctx& ctx, Request&& req,
                std::string_view query, const Respond& finish) {
    try {
      auto q = parse_query(query);
      if (!q) fail(Errc::kBadRequest, "malformed query string");
      ctx.query = std::move(*q);
      ctx.req = std::move(req);
      ctx.peer = peer_of(ctx.req);
      services.authenticate(ctx, route.info.access);
      if (auto res = route.fn(services, ctx)) finish(std::move(*res));
    } catch (const ApiError& e) {
      finish(error_response(e.error));
    } catch (const UnsupportedMediaType&) {
      finish(json_response(bhttp::status::unsupported_media_type,
                           {{"error",
                             {{"code", "unsupported_media_type"},
                              {"message", "Content-Type must be application/json"}}}}));
    } catch (const store::SqliteError& e) {
      log->error("event=api.db_error route=\"{}\" err=\"{}\"", route.info.pattern, e.what());
      finish(error_response(db_error(e)));
    } catch (const std::exception& e) {
      log->error("event=api.exception route=\"{}\" err=\"{}\"", route.info.pattern, e.what());
      finish(error_response({Errc::kInternal, "internal error"}));
    }
  }
};

Api::Api(store::Store& store, Metrics& metrics, const Clock& clock, boost::asio::io_context& ioc,
         ApiOptions options, std::shared_ptr<spdlog::logger> log)
    : impl_(
          std::make_unique<Impl>(store, metrics, clock, ioc, std::move(options), std::move(log))) {}

Api::~Api() = default;

void Api::attach_images(images::ImageService& images) { impl_->services.images = &images; }

void Api::attach_power(provision::PowerService& power, const SecretBox& secrets) {
  impl_->services.power = &power;
  impl_->services.secrets = &secrets;
}

void Api::attach_rollouts(provision::RolloutService& rollouts) {
  impl_->services.rollouts = &rollouts;
}

store::ConfigSnapshotter Api::config_snapshotter() {
  return api::config_snapshotter(impl_->services);
}

void Api::set_chunks_url(std::string url) { impl_->options.chunks_url = std::move(url); }

UploadAdmission Api::admit_upload(const RequestHeader& header) {
  return impl_->admit_upload(header);
}

void Api::handle(Request&& req, Respond respond) {
  impl_->handle(std::move(req), std::move(respond));
}

std::vector<RouteInfo> Api::routes() { return route_infos(); }

void Api::shutdown() { impl_->hub.shutdown(); }

}  // namespace kiln::api
