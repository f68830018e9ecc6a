#include "api/api.h"

#include <arpa/inet.h>
#include <spdlog/spdlog.h>

#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>
#include <charconv>
#include <nlohmann/json.hpp>

#include "core/crypto.h"
#include "core/json_writer.h"
#include "core/mac.h"
#include "core/time.h"
#include "core/url.h"
#include "images/chunk_store.h"
#include "proto/api_types.h"
#include "proto/image_file.h"
#include "proto/resources.h"
#include "store/sqlite.h"

namespace kiln::api {

namespace bhttp = boost::beast::http;
using json = nlohmann::json;
using proto::Scope;

namespace {

// --- rendering -------------------------------------------------------------------------------

json ts(std::int64_t ms) { return format_rfc3339_ms(ms); }
bhttp::status status_for(Errc e) {
  switch (e) {
    case Errc::kBadRequest:
      return bhttp::status::bad_request;
    case Errc::kInvalid:
      return bhttp::status::unprocessable_entity;
    case Errc::kNotFound:
      return bhttp::status::not_found;
    case Errc::kConflict:
      return bhttp::status::conflict;
    case Errc::kUnauthorized:
      return bhttp::status::unauthorized;
    case Errc::kForbidden:
      return bhttp::status::forbidden;
    case Errc::kTooLarge:
      return bhttp::status::payload_too_large;
    case Errc::kUnavailable:
      return bhttp::status::service_unavailable;
    case Errc::kInternal:
      return bhttp::status::internal_server_error;
  }
  return bhttp::status::internal_server_error;
}

Response json_response(bhttp::status st, const json& body) {
  Response res{st, 11};
  res.set(bhttp::field::content_type, "application/json");
  res.set(bhttp::field::cache_control, "no-store");
  // User input echoed in messages may be invalid UTF-8: replace, never throw.
  res.body() = body.dump(-1, ' ', false, json::error_handler_t::replace);
  res.body().push_back('\n');
  return res;
}

// A response whose body is already JSON text.
Response raw_json_response(bhttp::status st, std::string body) {
  Response res{st, 11};
  res.set(bhttp::field::content_type, "application/json");
  res.set(bhttp::field::cache_control, "no-store");
  res.body() = std::move(body);
  res.body().push_back('\n');
  return res;
}

Response machine_response(bhttp::status st, const store::Machine& m) {
  std::string body;
  proto::append_json(body, m);
  return raw_json_response(st, std::move(body));
}

Response error_response(const Error& e) {
  auto res = json_response(status_for(e.code),
                           {{"error", {{"code", errc_name(e.code)}, {"message", e.message}}}});
  if (e.code == Errc::kUnauthorized)
    res.set(bhttp::field::www_authenticate, "Bearer realm=\"kiln\"");
  return res;
}

Response no_content() {
  Response res{bhttp::status::no_content, 11};
  return res;
}

// Throwing an ApiError anywhere in a handler becomes its error response.
struct ApiError {
  Error error;
};
struct UnsupportedMediaType {};
[[noreturn]] void fail(Errc code, std::string message) {
  throw ApiError{{code, std::move(message)}};
}

template <typename T>
T take(Result<T>&& r) {
  if (!r) throw ApiError{r.error()};
  return std::move(r).value();
}
void check(const Status& s) {
  if (!s) throw ApiError{s.error()};
}

std::int64_t parse_int(std::string_view s, std::string_view what) {
  std::int64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size()) {
    fail(Errc::kBadRequest,
         std::string(what) + " must be an integer, got '" + std::string(s) + "'");
  }
  return v;
}

bool parse_bool(std::string_view s, std::string_view what) {
  if (s == "true" || s == "1" || s.empty()) return true;
  if (s == "false" || s == "0") return false;
  fail(Errc::kBadRequest, std::string(what) + " must be true or false");
}

// Bodies are checked for depth (json_nesting_depth) before parsing: copying or dumping a
// deeply nested document recurses, and a body of a million '[' must cost a 400, not the stack.
constexpr int kMaxJsonDepth = 32;
// An agent's free-form progress detail (rates, ETA, stage timings) is small; bounding it bounds
// every event and so every page of /api/v1/events.
constexpr std::size_t kMaxDetailBytes = 4096;

// The method as a metrics label: only methods HTTP defines, so clients cannot mint series.
std::string method_label(bhttp::verb v) {
  return v == bhttp::verb::unknown ? "OTHER" : std::string(bhttp::to_string(v));
}

// --- request context ---------------------------------------------------------------------------

struct Ctx {
  Request req;
  Params params;
  std::map<std::string, std::string> query;
  std::string who = "anonymous";
  std::optional<store::Deployment> agent_deployment;
  Respond respond;

  const std::string& param(std::string_view name) const { return params.find(name)->second; }
  std::optional<std::string> q(const std::string& k) const {
    auto it = query.find(k);
    return it == query.end() ? std::nullopt : std::optional(it->second);
  }

  // The request body as a JSON object; allowed keys only (typos are errors, not ignored).
  json body(std::initializer_list<std::string_view> allowed) const {
    std::string mime(
        req[bhttp::field::content_type].substr(0, req[bhttp::field::content_type].find(';')));
    while (!mime.empty() && (mime.back() == ' ' || mime.back() == '\t')) mime.pop_back();
    std::transform(mime.begin(), mime.end(), mime.begin(), ::tolower);
    const bool patch = req.method() == bhttp::verb::patch;
    if (mime != "application/json" && !(patch && mime == "application/merge-patch+json")) {
      throw UnsupportedMediaType{};
    }
    if (json_nesting_depth(req.body()) > kMaxJsonDepth) {
      fail(Errc::kBadRequest, "request body nests deeper than " + std::to_string(kMaxJsonDepth));
    }
    json j = json::parse(req.body(), nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) fail(Errc::kBadRequest, "request body is not valid JSON");
    if (!j.is_object()) fail(Errc::kBadRequest, "request body must be a JSON object");
    for (const auto& [k, _] : j.items()) {
      bool ok = false;
      for (auto a : allowed) ok = ok || k == a;
      if (!ok) fail(Errc::kBadRequest, "unknown field '" + k + "'");
    }
    return j;
  }
};

template <typename T>
std::optional<T> field(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return std::nullopt;
  if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
    if (!it->is_number_integer()) {
      fail(Errc::kBadRequest, std::string("field '") + key + "' must be an integer");
    }
  }
  if constexpr (std::is_same_v<T, bool>) {
    if (!it->is_boolean())
      fail(Errc::kBadRequest, std::string("field '") + key + "' must be a boolean");
  }
  try {
    return it->get<T>();
  } catch (const json::exception&) {
    fail(Errc::kBadRequest, std::string("field '") + key + "' has the wrong type");
  }
}

template <typename T>
T required(const json& j, const char* key) {
  auto v = field<T>(j, key);
  if (!v) fail(Errc::kBadRequest, std::string("field '") + key + "' is required");
  return std::move(*v);
}

std::string normalize_mac_or_fail(const std::string& s) {
  auto m = normalize_mac(s);
  if (!m) fail(Errc::kInvalid, "'" + s + "' is not a MAC address");
  return *m;
}

std::map<std::string, std::string> labels_from(const json& j) {
  std::map<std::string, std::string> out;
  if (j.is_null()) return out;
  if (!j.is_object()) fail(Errc::kBadRequest, "labels must be an object of strings");
  for (const auto& [k, v] : j.items()) {
    if (!v.is_string()) fail(Errc::kBadRequest, "label '" + k + "' must be a string");
    check(proto::validate_label_key(k));
    check(proto::validate_label_value(v.get<std::string>()));
    out[k] = v.get<std::string>();
  }
  return out;
}

}  // namespace

// ---------------------------------------------------------------------------------------------

using HandlerFn = std::function<std::optional<Response>(Ctx&)>;

struct Api::Impl {
  store::Store& store;
  Metrics& metrics;
  const Clock& clock;
  boost::asio::io_context& ioc;
  ApiOptions options;
  std::shared_ptr<spdlog::logger> log;
  EventHub hub;
  Router<HandlerFn> router;
  // Image uploads (attach_images): verified and imported on `importer`, one at a time (each
  // import hashes on every core already), never on an io thread.
  images::ChunkStore* chunks = nullptr;
  std::vector<proto::image::Key> trusted;
  std::unique_ptr<boost::asio::thread_pool> importer;

  Impl(store::Store& s, Metrics& m, const Clock& c, boost::asio::io_context& io, ApiOptions o,
       std::shared_ptr<spdlog::logger> l)
      : store(s),
        metrics(m),
        clock(c),
        ioc(io),
        options(std::move(o)),
        log(std::move(l)),
        hub(io, s.last_event_id()) {
    add_routes();
    metrics.describe("kiln_machines", Metrics::Type::kGauge, "Machines by lifecycle state.");
    metrics.describe("kiln_deployments", Metrics::Type::kGauge, "Deployments by status.");
    metrics.describe("kiln_events_waiters", Metrics::Type::kGauge,
                     "Clients long-polling /api/v1/events.");
    metrics.describe("kiln_build_info", Metrics::Type::kGauge, "kilnd version.");
    metrics.set("kiln_build_info", {{"version", options.version}}, 1);
    metrics.add_collector([this] {
      std::vector<Metrics::Sample> out;
      for (const auto& [state, n] : store.count_machines_by_state()) {
        out.emplace_back("kiln_machines", Labels{{"state", state}}, static_cast<double>(n));
      }
      for (const auto& [status, n] : store.count_deployments_by_status()) {
        out.emplace_back("kiln_deployments", Labels{{"status", status}}, static_cast<double>(n));
      }
      out.emplace_back("kiln_events_waiters", Labels{}, static_cast<double>(hub.waiting()));
      return out;
    });
  }

  // --- lookups ---

  // A path's machine reference: anything that reads as a MAC (including 12 bare hex digits)
  // is a MAC; otherwise it must be a numeric id.
  store::Machine machine(const std::string& id_or_mac) {
    if (auto mac = normalize_mac(id_or_mac)) return take(store.find_machine_by_mac(*mac));
    if (id_or_mac.empty() || id_or_mac.size() > 18 ||
        !std::all_of(id_or_mac.begin(), id_or_mac.end(), ::isdigit)) {
      fail(Errc::kNotFound, "machine '" + id_or_mac + "' not found (expected an id or a MAC)");
    }
    return take(store.get_machine(parse_int(id_or_mac, "machine id")));
  }

  store::AssignRequest assign_request(const json& b, const Ctx& c) {
    store::AssignRequest r;
    r.image = required<std::string>(b, "image");
    r.version = required<std::string>(b, "version");
    r.force = field<bool>(b, "force").value_or(false);
    r.requested_by = c.who;
    return r;
  }

  static Response assigned(const store::AssignOutcome& o) {
    json j = to_json(o.deployment);
    if (o.superseded_id) j["superseded_deployment_id"] = *o.superseded_id;
    return json_response(o.created ? bhttp::status::created : bhttp::status::ok, j);
  }

  // --- images ---

  Response manifest_response(const std::string& name, const std::string& version) {
    auto v = take(store.get_image_version(name, version));
    if (v.format != "kiln" || !chunks) {
      fail(Errc::kNotFound, "image version " + name + ":" + version + " is an external " +
                                v.format + " image; it has no manifest");
    }
    auto bytes = take(chunks->manifest(name, version));
    Response res{bhttp::status::ok, 11};
    res.set(bhttp::field::content_type, "application/json");
    // Versions are immutable: the manifest under this name never changes.
    res.set(bhttp::field::etag, "\"" + sha256_hex(bytes) + "\"");
    res.set(bhttp::field::cache_control, "no-cache");
    if (auto sig = chunks->signature(name, version); sig && !sig->empty()) {
      res.set("Kiln-Signature", hex_encode(*sig));
    }
    res.body() = std::move(bytes);
    return res;
  }

  static std::string hex_encode(std::string_view b) {
    static constexpr char kHex[] = "0123456789abcdef";
    std::string out;
    out.reserve(b.size() * 2);
    for (unsigned char ch : b) {
      out.push_back(kHex[ch >> 4]);
      out.push_back(kHex[ch & 15]);
    }
    return out;
  }

  // The header of a request: is it an image upload, and is it refused before its body?
  UploadAdmission admit_upload(const RequestHeader& h) {
    UploadAdmission out;
    if (!chunks || h.method() != bhttp::verb::post) return out;
    std::string mime(
        h[bhttp::field::content_type].substr(0, h[bhttp::field::content_type].find(';')));
    std::transform(mime.begin(), mime.end(), mime.begin(), ::tolower);
    while (!mime.empty() && mime.back() == ' ') mime.pop_back();
    if (mime != "application/octet-stream") return out;
    const std::string target(h.target());
    auto match = router.match(h.method(), target.substr(0, target.find('?')));
    if (!match.route || match.route->info.pattern != "/api/v1/images/{name}/versions/{version}") {
      return out;
    }
    out.is_upload = true;
    Ctx ctx;
    ctx.req = Request(h);
    try {
      authenticate(ctx, Access::kAdmin);
      check(proto::validate_image_name(match.params["name"]));
      check(proto::validate_image_version(match.params["version"]));
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

  // Verifies and imports an uploaded .kiln file off the io threads, then answers.
  void start_import(Ctx& c, std::string path) {
    if (!chunks) fail(Errc::kNotFound, "this server does not store images");
    auto respond = c.respond;
    boost::asio::post(*importer, [this, name = c.param("name"), version = c.param("version"),
                                  who = c.who, path = std::move(path), respond] {
      try {
        respond(import_upload(name, version, who, path));
      } catch (const ApiError& e) {
        log->info("event=images.upload_refused image={}:{} by={} err=\"{}\"", name, version, who,
                  e.error.message);
        respond(error_response(e.error));
      } catch (const store::SqliteError& e) {
        log->error("event=api.db_error route=upload err=\"{}\"", e.what());
        respond(error_response(e.is_busy() ? Error{Errc::kUnavailable, "database busy, retry"}
                                           : Error{Errc::kInternal, "database error"}));
      } catch (const std::exception& e) {
        log->error("event=api.exception route=upload err=\"{}\"", e.what());
        respond(error_response({Errc::kInternal, "internal error"}));
      }
    });
  }

  Response import_upload(const std::string& name, const std::string& version,
                         const std::string& who, const std::string& path) {
    const auto started = std::chrono::steady_clock::now();
    auto opened = proto::image::PackedImage::open(path, trusted);
    if (!opened) {
      auto e = opened.error();
      if (e.code != Errc::kForbidden && e.code != Errc::kInternal) e.code = Errc::kInvalid;
      // The server's temporary path means nothing to the client.
      if (auto at = e.message.find(path); at != std::string::npos) {
        e.message.replace(at, path.size(), "upload");
      }
      throw ApiError{e};
    }
    const auto& m = opened->manifest();
    if (m.name != name || m.version != version) {
      fail(Errc::kInvalid,
           "the image is " + m.name + ":" + m.version + ", uploaded as " + name + ":" + version);
    }
    if (auto existing = store.get_image_version(name, version); existing) {
      if (existing->format != "kiln" || existing->sha256 != m.sha256) {
        fail(Errc::kConflict, "image version " + name + ":" + version +
                                  " already exists with different content; versions are "
                                  "immutable, upload a new version instead");
      }
    }
    auto report = chunks->import(*opened, trusted);
    if (!report) {
      auto e = report.error();
      if (auto at = e.message.find(path); at != std::string::npos) {
        e.message.replace(at, path.size(), "upload");
      }
      if (e.code != Errc::kConflict && e.code != Errc::kForbidden && e.code != Errc::kInternal) {
        e.code = Errc::kInvalid;
      }
      throw ApiError{e};
    }
    store::ImageVersion v;
    v.name = name;
    v.version = version;
    v.size_bytes = static_cast<std::int64_t>(m.size);
    v.sha256 = m.sha256;
    v.format = "kiln";
    v.created_by = who;
    for (const auto& [k, val] : m.labels) {
      if (proto::validate_label_key(k) && proto::validate_label_value(val)) v.labels[k] = val;
    }
    auto registered = store.register_image_version(v);
    if (!registered) {
      // Leave nothing behind: the manifest this import stored goes again.
      if (!report->already_present) (void)chunks->remove(name, version);
      throw ApiError{registered.error()};
    }
    auto& [out, created] = *registered;
    const auto ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started)
            .count();
    log->info(
        "event=images.uploaded image={}:{} by={} created={} chunks={} new_chunks={} "
        "new_bytes={} ms={:.0f}",
        name, version, who, created, report->chunks, report->new_chunks, report->new_bytes, ms);
    json j = to_json(out);
    j["import"] = {{"chunks", report->chunks},
                   {"new_chunks", report->new_chunks},
                   {"new_bytes", report->new_bytes},
                   {"signed", !opened->signature().empty()}};
    auto res = json_response(created ? bhttp::status::created : bhttp::status::ok, j);
    res.set(bhttp::field::location, "/api/v1/images/" + name + "/versions/" + version);
    return res;
  }

  // --- routes ---

  void add_routes() {
    using V = bhttp::verb;
    auto& r = router;
    r.add(V::get, "/healthz", Access::kPublic, [this](Ctx&) {
      return json_response(bhttp::status::ok, {{"status", "ok"},
                                               {"version", options.version},
                                               {"schema_version", store.schema_version()}});
    });
    r.add(V::get, "/metrics", options.metrics_public ? Access::kPublic : Access::kRead,
          [this](Ctx&) {
            Response res{bhttp::status::ok, 11};
            res.set(bhttp::field::content_type, "text/plain; version=0.0.4; charset=utf-8");
            res.body() = metrics.render();
            return res;
          });

    // machines
    r.add(V::get, "/api/v1/machines", Access::kRead, [this](Ctx& c) {
      store::MachineFilter f;
      if (auto s = c.q("selector"); s && !s->empty()) f.selector = take(proto::parse_selector(*s));
      if (auto s = c.q("state"); s && !s->empty()) {
        f.state = proto::parse_machine_state(*s);
        if (!f.state) fail(Errc::kInvalid, "unknown state '" + *s + "'");
      }
      if (auto s = c.q("after")) f.after_id = parse_int(*s, "after");
      f.limit = options.default_page;
      if (auto s = c.q("limit")) {
        auto n = parse_int(*s, "limit");
        if (n < 1 || n > options.max_page) {
          fail(Errc::kInvalid, "limit must be 1-" + std::to_string(options.max_page));
        }
        f.limit = static_cast<int>(n);
      }
      auto page = store.list_machines(f);
      std::string body = "{\"items\":[";
      body.reserve(page.items.size() * 400 + 64);
      for (std::size_t i = 0; i < page.items.size(); ++i) {
        if (i) body.push_back(',');
        proto::append_json(body, page.items[i]);
      }
      body += "],\"next_after\":";
      if (page.next_after) {
        json_append_int(body, *page.next_after);
      } else {
        body += "null";
      }
      body += "}";
      return raw_json_response(bhttp::status::ok, std::move(body));
    });
    r.add(V::post, "/api/v1/machines", Access::kAdmin, [this](Ctx& c) {
      auto b = c.body({"mac", "macs", "uuid", "ipv4", "name", "labels", "state"});
      store::NewMachine nm;
      if (auto mac = field<std::string>(b, "mac")) nm.macs.push_back(normalize_mac_or_fail(*mac));
      for (const auto& mac :
           field<std::vector<std::string>>(b, "macs").value_or(std::vector<std::string>{})) {
        auto n = normalize_mac_or_fail(mac);
        if (std::find(nm.macs.begin(), nm.macs.end(), n) == nm.macs.end()) nm.macs.push_back(n);
      }
      if (nm.macs.empty()) fail(Errc::kBadRequest, "field 'mac' (or 'macs') is required");
      if (auto u = field<std::string>(b, "uuid")) {
        std::string lower = *u;
        std::transform(lower.begin(), lower.end(), lower.begin(), ::tolower);
        bool shape = lower.size() == 36;
        for (std::size_t i = 0; shape && i < lower.size(); ++i) {
          const bool dash = i == 8 || i == 13 || i == 18 || i == 23;
          shape = dash ? lower[i] == '-' : std::isxdigit(static_cast<unsigned char>(lower[i])) != 0;
        }
        if (!shape) fail(Errc::kInvalid, "uuid must be 8-4-4-4-12 hex digits");
        nm.uuid = lower;
      }
      if (auto a = field<std::string>(b, "ipv4")) {
        in_addr parsed{};
        if (::inet_pton(AF_INET, a->c_str(), &parsed) != 1) {
          fail(Errc::kInvalid, "ipv4 must be a dotted-quad IPv4 address");
        }
        char canon[INET_ADDRSTRLEN];
        ::inet_ntop(AF_INET, &parsed, canon, sizeof canon);
        nm.ipv4 = std::string(canon);
      }
      nm.name = field<std::string>(b, "name").value_or("");
      if (nm.name.size() > 255) fail(Errc::kInvalid, "name longer than 255 characters");
      nm.labels = labels_from(b.value("labels", json(nullptr)));
      if (auto s = field<std::string>(b, "state")) {
        auto st = proto::parse_machine_state(*s);
        if (st != proto::MachineState::kDiscovered && st != proto::MachineState::kReady) {
          fail(Errc::kInvalid, "a new machine's state is 'ready' or 'discovered'");
        }
        nm.state = *st;
      }
      auto m = take(store.create_machine(nm, c.who));
      auto res = machine_response(bhttp::status::created, m);
      res.set(bhttp::field::location, "/api/v1/machines/" + std::to_string(m.id));
      return res;
    });
    r.add(V::get, "/api/v1/machines/{id}", Access::kRead,
          [this](Ctx& c) { return machine_response(bhttp::status::ok, machine(c.param("id"))); });
    r.add(V::patch, "/api/v1/machines/{id}", Access::kAdmin, [this](Ctx& c) {
      auto b = c.body({"labels"});
      auto id = machine(c.param("id")).id;
      const json& labels = b.value("labels", json::object());
      if (!labels.is_object()) fail(Errc::kBadRequest, "labels must be an object");
      store::LabelPatch patch;
      for (const auto& [k, v] : labels.items()) {
        check(proto::validate_label_key(k));
        if (v.is_null()) {
          patch[k] = std::nullopt;
        } else if (v.is_string()) {
          check(proto::validate_label_value(v.get<std::string>()));
          patch[k] = v.get<std::string>();
        } else {
          fail(Errc::kBadRequest, "label '" + k + "' must be a string or null");
        }
      }
      return machine_response(bhttp::status::ok,
                              take(store.patch_machine_labels(id, patch, c.who)));
    });
    r.add(V::delete_, "/api/v1/machines/{id}", Access::kAdmin, [this](Ctx& c) {
      auto id = machine(c.param("id")).id;
      bool force = c.q("force") ? parse_bool(*c.q("force"), "force") : false;
      check(store.delete_machine(id, force, c.who));
      return no_content();
    });
    r.add(V::put, "/api/v1/machines/{id}/assignment", Access::kAdmin, [this](Ctx& c) {
      auto b = c.body({"image", "version", "force"});
      auto id = machine(c.param("id")).id;
      return assigned(take(store.assign(id, assign_request(b, c))));
    });
    r.add(V::post, "/api/v1/machines/{id}/rollback", Access::kAdmin, [this](Ctx& c) {
      auto id = machine(c.param("id")).id;
      return assigned(take(store.rollback(id, c.who)));
    });
    r.add(V::get, "/api/v1/machines/{id}/deployments", Access::kRead, [this](Ctx& c) {
      auto id = machine(c.param("id")).id;
      json items = json::array();
      for (const auto& d : take(store.list_deployments(id))) items.push_back(to_json(d));
      return json_response(bhttp::status::ok, {{"items", std::move(items)}});
    });
    r.add(V::post, "/api/v1/assignments", Access::kAdmin, [this](Ctx& c) {
      auto b = c.body({"selector", "image", "version", "force"});
      auto selector = take(proto::parse_selector(required<std::string>(b, "selector")));
      auto out = take(store.assign_bulk(selector, assign_request(b, c)));
      json items = json::array();
      int created = 0;
      for (const auto& [mid, o] : out.results) {
        json j = to_json(o.deployment);
        j["created"] = o.created;
        if (o.superseded_id) j["superseded_deployment_id"] = *o.superseded_id;
        created += o.created ? 1 : 0;
        items.push_back(std::move(j));
      }
      return json_response(created ? bhttp::status::created : bhttp::status::ok,
                           {{"selector", proto::format_selector(selector)},
                            {"matched", out.results.size()},
                            {"created", created},
                            {"deployments", std::move(items)}});
    });

    // images
    r.add(V::get, "/api/v1/images", Access::kRead, [this](Ctx&) {
      json items = json::array();
      for (const auto& v : store.list_image_versions(std::nullopt)) items.push_back(to_json(v));
      return json_response(bhttp::status::ok, {{"items", std::move(items)}});
    });
    r.add(V::get, "/api/v1/images/{name}", Access::kRead, [this](Ctx& c) {
      auto versions = store.list_image_versions(c.param("name"));
      if (versions.empty()) fail(Errc::kNotFound, "image '" + c.param("name") + "' not found");
      json items = json::array();
      for (const auto& v : versions) items.push_back(to_json(v));
      return json_response(bhttp::status::ok,
                           {{"name", c.param("name")}, {"items", std::move(items)}});
    });
    r.add(V::post, "/api/v1/images/{name}/versions/{version}", Access::kAdmin,
          [this](Ctx& c) -> std::optional<Response> {
            if (auto file = c.req[kUploadFileHeader]; !file.empty()) {
              start_import(c, std::string(file));
              return std::nullopt;
            }
            auto b =
                c.body({"size_bytes", "sha256", "format", "source_url", "description", "labels"});
            store::ImageVersion v;
            v.name = c.param("name");
            v.version = c.param("version");
            check(proto::validate_image_name(v.name));
            check(proto::validate_image_version(v.version));
            v.size_bytes = required<std::int64_t>(b, "size_bytes");
            if (v.size_bytes <= 0) fail(Errc::kInvalid, "size_bytes must be positive");
            v.sha256 = required<std::string>(b, "sha256");
            std::transform(v.sha256.begin(), v.sha256.end(), v.sha256.begin(), ::tolower);
            if (v.sha256.size() != 64 ||
                v.sha256.find_first_not_of("0123456789abcdef") != std::string::npos) {
              fail(Errc::kInvalid, "sha256 must be 64 hex digits");
            }
            v.format = field<std::string>(b, "format").value_or("raw");
            static const std::vector<std::string> kFormats = {"raw", "raw.gz", "raw.xz", "raw.zst"};
            if (std::find(kFormats.begin(), kFormats.end(), v.format) == kFormats.end()) {
              fail(Errc::kInvalid,
                   "format must be one of raw, raw.gz, raw.xz, raw.zst (.kiln images "
                   "are uploaded, not registered)");
            }
            v.source_url = field<std::string>(b, "source_url");
            if (!v.source_url || (v.source_url->rfind("http://", 0) != 0 &&
                                  v.source_url->rfind("https://", 0) != 0)) {
              fail(Errc::kInvalid,
                   "source_url (http:// or https://) is required for an external image");
            }
            v.description = field<std::string>(b, "description").value_or("");
            v.labels = labels_from(b.value("labels", json(nullptr)));
            v.created_by = c.who;
            auto [out, created] = take(store.register_image_version(v));
            auto res =
                json_response(created ? bhttp::status::created : bhttp::status::ok, to_json(out));
            res.set(bhttp::field::location,
                    "/api/v1/images/" + out.name + "/versions/" + out.version);
            return res;
          });
    r.add(V::get, "/api/v1/images/{name}/versions/{version}", Access::kRead, [this](Ctx& c) {
      return json_response(
          bhttp::status::ok,
          to_json(take(store.get_image_version(c.param("name"), c.param("version")))));
    });
    r.add(V::get, "/api/v1/images/{name}/versions/{version}/manifest", Access::kRead,
          [this](Ctx& c) { return manifest_response(c.param("name"), c.param("version")); });
    r.add(V::delete_, "/api/v1/images/{name}/versions/{version}", Access::kAdmin, [this](Ctx& c) {
      const auto& name = c.param("name");
      const auto& version = c.param("version");
      auto v = take(store.get_image_version(name, version));
      check(store.delete_image_version(name, version, c.who));
      if (v.format == "kiln" && chunks) {
        // The version is gone from the store first, so a crash in between leaves at worst an
        // orphaned manifest, never a visible version without its chunks.
        if (auto st = chunks->remove(name, version); !st) {
          log->warn("event=images.manifest_remove_failed image={}:{} err=\"{}\"", name, version,
                    st.error().message);
        }
        auto gc = chunks->collect_garbage();
        if (gc) {
          log->info("event=images.gc removed_chunks={} removed_bytes={}", gc->removed_chunks,
                    gc->removed_bytes);
        } else {
          log->error("event=images.gc_failed err=\"{}\"", gc.error().message);
        }
      }
      return no_content();
    });

    // deployments
    r.add(V::get, "/api/v1/deployments/{id}", Access::kRead, [this](Ctx& c) {
      return json_response(
          bhttp::status::ok,
          to_json(take(store.get_deployment(parse_int(c.param("id"), "deployment id")))));
    });
    r.add(V::post, "/api/v1/deployments/{id}/agent-token", Access::kAdmin, [this](Ctx& c) {
      auto id = parse_int(c.param("id"), "deployment id");
      const auto expires = clock.now_ms() + options.agent_token_ttl.count();
      auto token = take(store.mint_agent_token(id, expires));
      log->info("event=api.agent_token_minted deployment={} by={}", id, c.who);
      return json_response(bhttp::status::created,
                           {{"deployment_id", id}, {"token", token}, {"expires_at", ts(expires)}});
    });

    // events (long-poll)
    r.add(V::get, "/api/v1/events", Access::kRead, [this](Ctx& c) -> std::optional<Response> {
      const std::int64_t since = c.q("since") ? parse_int(*c.q("since"), "since") : 0;
      std::int64_t limit = c.q("limit") ? parse_int(*c.q("limit"), "limit") : 100;
      if (limit < 1 || limit > 1000) fail(Errc::kInvalid, "limit must be 1-1000");
      std::optional<std::int64_t> machine_id;
      if (auto m = c.q("machine")) machine_id = machine(*m).id;
      std::int64_t wait_s = c.q("wait") ? parse_int(*c.q("wait"), "wait") : 0;
      const auto max_s = std::chrono::duration_cast<std::chrono::seconds>(options.max_wait).count();
      if (wait_s < 0 || wait_s > max_s)
        fail(Errc::kInvalid, "wait must be 0-" + std::to_string(max_s));
      std::int64_t scanned = 0;
      auto page = events_page(since, static_cast<int>(limit), machine_id, &scanned);
      if (!page["events"].empty() || wait_s == 0) return json_response(bhttp::status::ok, page);
      // Nothing yet: park the request until an event arrives or the wait is over.
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(wait_s);
      park(since, scanned, static_cast<int>(limit), machine_id, deadline, std::move(c.respond));
      return std::nullopt;
    });

    // tokens
    r.add(V::get, "/api/v1/tokens", Access::kAdmin, [this](Ctx&) {
      json items = json::array();
      for (const auto& t : store.list_tokens()) items.push_back(to_json(t));
      return json_response(bhttp::status::ok, {{"items", std::move(items)}});
    });
    r.add(V::post, "/api/v1/tokens", Access::kAdmin, [this](Ctx& c) {
      auto b = c.body({"name", "scope"});
      auto scope_name = field<std::string>(b, "scope").value_or("read");
      auto scope = proto::parse_scope(scope_name);
      if (!scope) fail(Errc::kInvalid, "scope must be 'read' or 'admin'");
      auto [t, clear] = take(store.create_token(required<std::string>(b, "name"), *scope));
      json j = to_json(t);
      j["token"] = clear;
      return json_response(bhttp::status::created, j);
    });
    r.add(V::delete_, "/api/v1/tokens/{id}", Access::kAdmin, [this](Ctx& c) {
      check(store.revoke_token(parse_int(c.param("id"), "token id"), c.who));
      return no_content();
    });

    // discovery: the agent booted on an unknown machine reports what it found. Not
    // authenticated (the machine has no deployment yet): the store takes it once, only while
    // the machine is `discovered` (registered by its first PXE boot).
    r.add(V::post, "/api/v1/agent/inventory", Access::kPublic, [this](Ctx& c) {
      auto b = c.body({"mac", "inventory"});
      const auto mac = normalize_mac_or_fail(required<std::string>(b, "mac"));
      const json& inv = b.value("inventory", json(nullptr));
      if (!inv.is_object()) fail(Errc::kBadRequest, "field 'inventory' must be an object");
      if (inv.dump().size() > 64 * 1024) fail(Errc::kInvalid, "inventory larger than 64 KiB");
      // The machine's other NICs identify it too, whichever it boots from next time.
      std::vector<std::string> others;
      if (auto nics = inv.find("nics"); nics != inv.end() && nics->is_array()) {
        for (const auto& nic : *nics) {
          if (!nic.is_object() || !nic.contains("mac") || !nic["mac"].is_string()) continue;
          auto n = normalize_mac(nic["mac"].get<std::string>());
          if (n && *n != mac && *n != "00:00:00:00:00:00" &&
              std::find(others.begin(), others.end(), *n) == others.end() && others.size() < 32) {
            others.push_back(*n);
          }
        }
      }
      auto m = take(store.record_inventory(mac, inv, others));
      log->info("event=machine.inventory machine={} mac={} state={}", m.id, mac,
                proto::to_string(m.state));
      return machine_response(bhttp::status::ok, m);
    });

    // agent (authenticated by the deployment's agent token)
    r.add(V::get, "/api/v1/agent/deployment", Access::kAgent, [this](Ctx& c) {
      const auto& d = *c.agent_deployment;
      auto image = store.get_image_version(d.to_version.name, d.to_version.version);
      json j = to_json(d);
      j["image"] = image ? to_json(*image) : json(nullptr);
      if (image && image->format == "kiln") {
        j["manifest_url"] = "/api/v1/agent/manifest";
        j["chunks_url"] = "/v1/chunks/";
        // What the disk held before, as a hint for local copies (the agent verifies them).
        j["previous_manifest_url"] = nullptr;
        if (d.from_version && chunks) {
          auto prev = store.get_image_version(d.from_version->name, d.from_version->version);
          if (prev && prev->format == "kiln" &&
              chunks->manifest(d.from_version->name, d.from_version->version)) {
            j["previous_manifest_url"] = "/api/v1/agent/previous-manifest";
          }
        }
      } else if (image) {
        j["manifest_url"] = nullptr;
        j["chunks_url"] = nullptr;
      }
      return json_response(bhttp::status::ok, j);
    });
    r.add(V::get, "/api/v1/agent/manifest", Access::kAgent, [this](Ctx& c) {
      const auto& d = *c.agent_deployment;
      return manifest_response(d.to_version.name, d.to_version.version);
    });
    r.add(V::get, "/api/v1/agent/previous-manifest", Access::kAgent, [this](Ctx& c) {
      const auto& d = *c.agent_deployment;
      if (!d.from_version) fail(Errc::kNotFound, "the machine held no known version before");
      return manifest_response(d.from_version->name, d.from_version->version);
    });
    r.add(V::post, "/api/v1/agent/progress", Access::kAgent, [this](Ctx& c) {
      auto b = c.body({"stage", "bytes_done", "bytes_total", "detail"});
      auto rep = report_from(b);
      return json_response(bhttp::status::ok,
                           to_json(take(store.report_progress(c.agent_deployment->id, rep))));
    });
    r.add(V::post, "/api/v1/agent/result", Access::kAgent, [this](Ctx& c) {
      auto b = c.body({"status", "reason", "stage", "bytes_done", "bytes_total", "detail"});
      auto rep = report_from(b);
      auto st = proto::parse_deployment_status(required<std::string>(b, "status"));
      if (st != proto::DeploymentStatus::kSucceeded && st != proto::DeploymentStatus::kFailed) {
        fail(Errc::kInvalid, "status must be 'succeeded' or 'failed'");
      }
      rep.result = st;
      rep.reason = field<std::string>(b, "reason").value_or("");
      if (st == proto::DeploymentStatus::kFailed && rep.reason.empty()) {
        fail(Errc::kInvalid, "a failed result needs a reason");
      }
      auto d = take(store.report_progress(c.agent_deployment->id, rep));
      log->info("event=deployment.{} deployment={} machine={} reason=\"{}\"",
                proto::to_string(d.status), d.id, d.machine_id, d.status_reason);
      return json_response(bhttp::status::ok, to_json(d));
    });
  }

  static store::AgentReport report_from(const json& b) {
    store::AgentReport r;
    r.stage = field<std::string>(b, "stage");
    if (r.stage && r.stage->size() > 64) fail(Errc::kInvalid, "stage longer than 64 characters");
    r.bytes_done = field<std::int64_t>(b, "bytes_done");
    r.bytes_total = field<std::int64_t>(b, "bytes_total");
    if (r.bytes_done.value_or(0) < 0 || r.bytes_total.value_or(0) < 0 ||
        (r.bytes_done && r.bytes_total && *r.bytes_total > 0 && *r.bytes_done > *r.bytes_total)) {
      fail(Errc::kInvalid, "bytes_done must be between 0 and bytes_total");
    }
    if (auto d = b.find("detail"); d != b.end() && !d->is_null()) {
      if (!d->is_object()) fail(Errc::kBadRequest, "detail must be an object");
      if (d->dump().size() > kMaxDetailBytes) {
        fail(Errc::kTooLarge, "detail larger than " + std::to_string(kMaxDetailBytes) + " bytes");
      }
      r.detail = *d;
    }
    return r;
  }

  // One page of events after `since`. `scanned` is an event id up to which every event was
  // considered (read before the query, so nothing committed in between is skipped).
  json events_page(std::int64_t since, int limit, std::optional<std::int64_t> machine_id,
                   std::int64_t* scanned = nullptr) {
    if (scanned) *scanned = store.last_event_id();
    json items = json::array();
    std::int64_t next = since;
    for (const auto& e : store.events_since(since, limit, machine_id)) {
      items.push_back(to_json(e));
      next = e.id;
    }
    return {{"events", std::move(items)}, {"next", next}};
  }

  // Waits for an event after `since` (matching `machine_id`, if set) until `deadline`.
  // `seen` is the newest event id already known not to match.
  void park(std::int64_t since, std::int64_t seen, int limit,
            std::optional<std::int64_t> machine_id, std::chrono::steady_clock::time_point deadline,
            Respond respond) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    hub.wait(std::max(since, seen), left,
             [this, since, limit, machine_id, deadline, respond = std::move(respond)]() mutable {
               try {
                 std::int64_t scanned = 0;
                 auto page = events_page(since, limit, machine_id, &scanned);
                 const bool over =
                     std::chrono::steady_clock::now() >= deadline || hub.is_shut_down();
                 if (!page["events"].empty() || over) {
                   return respond(json_response(bhttp::status::ok, page));
                 }
                 // A filtered wait woke on an unrelated event: wait on past what was scanned.
                 park(since, scanned, limit, machine_id, deadline, std::move(respond));
               } catch (const std::exception& e) {
                 log->error("event=api.events_failed err=\"{}\"", e.what());
                 respond(error_response({Errc::kInternal, "internal error"}));
               }
             });
  }

  // --- dispatch ---

  void authenticate(Ctx& c, Access access) {
    if (access == Access::kPublic) return;
    auto auth = c.req[bhttp::field::authorization];
    std::string token;
    if (auth.size() > 7 && boost::beast::iequals(auth.substr(0, 7), "Bearer ")) {
      token = std::string(auth.substr(7));
      while (!token.empty() && token.front() == ' ') token.erase(0, 1);
    }
    if (access == Access::kAgent) {
      if (token.empty()) fail(Errc::kUnauthorized, "missing deployment token");
      c.agent_deployment = take(store.authenticate_agent(token));
      c.who = "agent:deployment/" + std::to_string(c.agent_deployment->id);
      return;
    }
    if (!options.auth_required) return;
    if (token.empty())
      fail(Errc::kUnauthorized, "missing bearer token (Authorization: Bearer ...)");
    auto t = store.authenticate(token);
    if (!t) fail(Errc::kUnauthorized, "unknown or revoked token");
    c.who = t->name;
    if (access == Access::kAdmin && t->scope != Scope::kAdmin) {
      fail(Errc::kForbidden, "token '" + t->name + "' has scope 'read'; this call needs 'admin'");
    }
  }

  void handle(Request&& req, Respond respond) {
    const auto started = std::chrono::steady_clock::now();
    const auto method = req.method();
    const std::string method_name = method_label(method);
    std::string target(req.target());
    const auto qpos = target.find('?');
    const std::string path = target.substr(0, qpos);
    auto match = router.match(method, path);
    std::string route = match.route ? match.route->info.pattern : "unmatched";

    // Counts and logs every completed request, whichever way it completes.
    auto finish = [this, route, method_name, target, started, respond = std::move(respond),
                   is_write = method != bhttp::verb::get](Response&& res) {
      const unsigned code = res.result_int();
      metrics.add("kiln_http_requests_total",
                  {{"route", route}, {"method", method_name}, {"code", std::to_string(code)}});
      if (is_write && code < 300) hub.notify(store.last_event_id());
      const auto ms =
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started)
              .count();
      if (code >= 500) {
        log->error("event=api.request method={} target=\"{}\" status={} ms={:.2f}", method_name,
                   target, code, ms);
      } else {
        log->debug("event=api.request method={} target=\"{}\" status={} ms={:.2f}", method_name,
                   target, code, ms);
      }
      respond(std::move(res));
    };

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
    ctx.respond = finish;
    try {
      auto q = parse_query(qpos == std::string::npos ? std::string_view()
                                                     : std::string_view(target).substr(qpos + 1));
      if (!q) fail(Errc::kBadRequest, "malformed query string");
      ctx.query = std::move(*q);
      ctx.req = std::move(req);
      authenticate(ctx, match.route->info.access);
      auto res = match.route->fn(ctx);
      if (res) finish(std::move(*res));
    } catch (const ApiError& e) {
      finish(error_response(e.error));
    } catch (const UnsupportedMediaType&) {
      finish(json_response(bhttp::status::unsupported_media_type,
                           {{"error",
                             {{"code", "unsupported_media_type"},
                              {"message", "Content-Type must be application/json"}}}}));
    } catch (const store::SqliteError& e) {
      log->error("event=api.db_error route=\"{}\" err=\"{}\"", route, e.what());
      finish(error_response(e.is_busy() ? Error{Errc::kUnavailable, "database busy, retry"}
                                        : Error{Errc::kInternal, "database error"}));
    } catch (const std::exception& e) {
      log->error("event=api.exception route=\"{}\" err=\"{}\"", route, e.what());
      finish(error_response({Errc::kInternal, "internal error"}));
    }
  }
};

Api::Api(store::Store& store, Metrics& metrics, const Clock& clock, boost::asio::io_context& ioc,
         ApiOptions options, std::shared_ptr<spdlog::logger> log)
    : impl_(
          std::make_unique<Impl>(store, metrics, clock, ioc, std::move(options), std::move(log))) {}

Api::~Api() {
  // Imports in flight finish (and answer) before the store they write to can go away.
  if (impl_->importer) impl_->importer->join();
}

void Api::attach_images(images::ChunkStore& chunks, std::vector<proto::image::Key> trusted) {
  impl_->chunks = &chunks;
  impl_->trusted = std::move(trusted);
  impl_->importer = std::make_unique<boost::asio::thread_pool>(1);
}

UploadAdmission Api::admit_upload(const RequestHeader& header) {
  return impl_->admit_upload(header);
}

void Api::handle(Request&& req, Respond respond) {
  impl_->handle(std::move(req), std::move(respond));
}

std::vector<RouteInfo> Api::routes() const { return impl_->router.infos(); }

void Api::shutdown() { impl_->hub.shutdown(); }

}  // namespace kiln::api
