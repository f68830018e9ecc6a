// BMCs (write-only credentials, sealed at rest), power actions, and the deployed OS's boot
// confirmation (docs/power.md).
#include <spdlog/spdlog.h>

#include <filesystem>

#include "api/routes.h"
#include "core/log_util.h"
#include "core/secret_box.h"
#include "core/time.h"
#include "power/driver.h"
#include "provision/power_service.h"

namespace kiln::api {
namespace {

namespace bhttp = boost::beast::http;

provision::PowerService& power_of(Services& s) {
  if (!s.power || !s.secrets) fail(Errc::kUnavailable, "this server has no BMC control");
  return *s.power;
}

// What GET shows: everything but the credentials.
json bmc_json(const store::BmcRecord& r) {
  return {{"driver", r.driver},       {"address", r.address},
          {"ca_file", r.ca_file},     {"insecure", r.insecure},
          {"system_id", r.system_id}, {"boot_mode", r.boot_mode},
          {"credentials", "set"},     {"updated_at", format_rfc3339_ms(r.updated_at)}};
}

std::optional<Response> get_bmc(Services& s, Ctx& c) {
  auto id = s.machine(c.param("id")).id;
  return json_response(bhttp::status::ok, bmc_json(take(s.store.get_bmc(id))));
}

// PUT replaces the BMC. The credentials may be left out only when the machine already has a
// BMC (they are kept); they are never returned.
std::optional<Response> put_bmc(Services& s, Ctx& c) {
  power_of(s);
  auto b = c.body({"driver", "address", "username", "password", "ca_file", "insecure", "system_id",
                   "boot_mode"});
  auto id = s.machine(c.param("id")).id;
  store::BmcRecord r;
  r.machine_id = id;
  r.driver = required<std::string>(b, "driver");
  r.address = required<std::string>(b, "address");
  r.ca_file = field<std::string>(b, "ca_file").value_or("");
  r.insecure = field<bool>(b, "insecure").value_or(false);
  r.system_id = field<std::string>(b, "system_id").value_or("");
  r.boot_mode = field<std::string>(b, "boot_mode").value_or("auto");
  if (r.address.size() > 255 || r.system_id.size() > 255 || r.ca_file.size() > 4096) {
    fail(Errc::kInvalid, "address, system_id or ca_file too long");
  }
  if (r.insecure && !r.ca_file.empty()) {
    fail(Errc::kInvalid, "ca_file and insecure exclude each other");
  }
  if (!r.ca_file.empty()) {
    std::error_code ec;
    if (!std::filesystem::is_regular_file(r.ca_file, ec)) {
      fail(Errc::kInvalid, "ca_file " + r.ca_file + " is not a file kilnd can read");
    }
  }
  auto user = field<std::string>(b, "username");
  auto pass = field<std::string>(b, "password");
  const std::string aad = store::bmc_credentials_aad(r);
  if (!user || !pass) {
    // Kept only for the same BMC: credentials never follow a new address or weaker TLS (an
    // admin token alone must not be able to send them elsewhere).
    auto old = s.store.get_bmc(id);
    if (!old) fail(Errc::kInvalid, "fields 'username' and 'password' are required");
    if (old->driver != r.driver || old->address != r.address || old->insecure != r.insecure ||
        old->ca_file != r.ca_file) {
      fail(Errc::kInvalid,
           "a new driver, address or TLS setting needs the credentials again (username, "
           "password)");
    }
    auto opened = s.secrets->open(old->credentials, store::bmc_credentials_aad(*old));
    if (!opened) fail(Errc::kInternal, "the stored credentials do not open: set them again");
    auto creds = json::parse(*opened, nullptr, false);
    if (!user) user = creds.value("username", "");
    if (!pass) pass = creds.value("password", "");
  }
  if (user->size() > 255 || pass->size() > 255) fail(Errc::kInvalid, "credentials too long");
  power::BmcConfig cfg;
  cfg.driver = r.driver;
  cfg.address = r.address;
  cfg.username = *user;
  cfg.password = *pass;
  cfg.ca_file = r.ca_file;
  cfg.insecure = r.insecure;
  cfg.system_id = r.system_id;
  check(power::check_config(cfg));
  r.credentials = s.secrets->seal(json{{"username", *user}, {"password", *pass}}.dump(), aad);
  auto saved = take(s.store.put_bmc(r, c.who));
  s.log.info("event=machine.bmc_set machine={} driver={} address=\"{}\" by={}", id, r.driver,
             log_escape(r.address, 200), c.who);
  return json_response(bhttp::status::ok, bmc_json(saved));
}

std::optional<Response> delete_bmc(Services& s, Ctx& c) {
  auto id = s.machine(c.param("id")).id;
  check(s.store.delete_bmc(id, c.who));
  return no_content();
}

json outcome_json(const provision::PowerOutcome& o) {
  json steps = json::array();
  for (const auto& st : o.steps) {
    steps.push_back({{"name", st.name},
                     {"detail", st.detail},
                     {"took_ms", st.took.count()},
                     {"attempts", st.attempts}});
  }
  return {{"power_state", power::power_state_name(o.state)},
          {"steps", std::move(steps)},
          {"took_ms", o.took.count()}};
}

// POST /machines/{id}/power {"action": "on|off|cycle|soft-off|status"}: answered when the BMC
// is done. It runs on the power service's workers (one of power.max_concurrent BMC slots, ahead
// of queued reimages), never on an I/O thread.
std::optional<Response> power(Services& s, Ctx& c) {
  auto& ps = power_of(s);
  auto b = c.body({"action"});
  auto id = s.machine(c.param("id")).id;
  const auto name = required<std::string>(b, "action");
  std::optional<power::PowerAction> action;
  if (name != "status") {
    action = power::parse_power_action(name);
    if (!action) fail(Errc::kInvalid, "action must be on, off, cycle, soft-off or status");
  }
  ps.power_async(id, action, c.who, [respond = c.respond](Result<provision::PowerOutcome> r) {
    if (!r) return respond(error_response(r.error()));
    respond(json_response(bhttp::status::ok, outcome_json(*r)));
  });
  return std::nullopt;
}

// POST /api/v1/instance/booted with "Authorization: Bearer <instance credential>": the deployed
// OS proves it is up. The credential came with the deployment's plan (the agent leaves it for
// the OS); it confirms only its own deployment, and only once it is written.
std::optional<Response> booted(Services& s, Ctx& c) {
  return confirm_boot_response(s, c, bearer_token(c.req), "booted");
}

using V = bhttp::verb;
constexpr RouteSpec kRoutes[] = {
    {V::get, "/api/v1/machines/{id}/bmc", Access::kRead, get_bmc},
    {V::put, "/api/v1/machines/{id}/bmc", Access::kAdmin, put_bmc},
    {V::delete_, "/api/v1/machines/{id}/bmc", Access::kAdmin, delete_bmc},
    {V::post, "/api/v1/machines/{id}/power", Access::kAdmin, power},
    {V::post, "/api/v1/instance/booted", Access::kPublic, booted},
};

}  // namespace

Response confirm_boot_response(Services& s, Ctx& c, const std::string& token,
                               std::string_view via) {
  auto d = s.store.confirm_boot(token, c.peer);
  if (!d) {
    s.log.warn("event=instance.boot_refused peer={} via={} err=\"{}\"", c.peer, via,
               d.error().message);
    fail(d.error().code, d.error().message);
  }
  s.log.info("event=deployment.booted deployment={} machine={} peer={} via={} boot_ms={}", d->id,
             d->machine_id, c.peer, via, proto::boot_ms(*d).value_or(-1));
  return json_response(bhttp::status::ok, to_json(*d));
}

std::span<const RouteSpec> power_routes() { return kRoutes; }

}  // namespace kiln::api
