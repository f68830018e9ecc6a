// Machine configuration for cloud-init (docs/config.md): profiles and machine documents (sealed
// at rest: they may hold secrets in user-data), the snapshot every assignment takes, and the
// metadata service (NoCloud-net and an EC2-compatible subset) that answers a deployed OS about
// itself only.
#include <spdlog/spdlog.h>

#include "api/routes.h"
#include "cloudinit/config.h"
#include "core/crypto.h"
#include "core/log_util.h"
#include "core/secret_box.h"
#include "core/time.h"

namespace kiln::api {
namespace {

namespace bhttp = boost::beast::http;
using cloudinit::Config;

const SecretBox& box(Services& s) {
  if (!s.secrets) fail(Errc::kUnavailable, "this server has no secrets key");
  return *s.secrets;
}

// Additional data: a sealed document opens only in the row it was written for.
std::string profile_aad(const std::string& name) { return "kiln-config:profile:" + name; }
std::string machine_aad(std::int64_t id) { return "kiln-config:machine:" + std::to_string(id); }
// A rollout's layer is bound to its hash (the rollout's id does not exist yet when it is sealed).
std::string rollout_aad(const std::string& sha256) { return "kiln-config:rollout:" + sha256; }
// A snapshot is bound to its machine and its hash: a sealed snapshot moved to another machine's
// deployment, or paired with another hash, does not open.
std::string deployment_aad(std::int64_t machine_id, const std::string& sha256) {
  return "kiln-config:deployment-of:" + std::to_string(machine_id) + ":" + sha256;
}

Result<Config> open_config(Services& s, const store::ConfigRecord& r, const std::string& aad) {
  auto plain = box(s).open(r.sealed, aad);
  if (!plain) {
    return make_error(Errc::kInternal,
                      "a stored configuration does not open with this server's secrets key "
                      "(secrets.key_file changed?): set it again");
  }
  auto j = json::parse(*plain, nullptr, false);
  if (j.is_discarded()) return make_error(Errc::kInternal, "a stored configuration is damaged");
  return cloudinit::parse_config(j, {std::numeric_limits<std::size_t>::max()});
}

store::ConfigRecord seal_config(Services& s, const Config& c, const std::string& aad) {
  return {box(s).seal(cloudinit::canonical(c), aad), cloudinit::config_sha256(c), 0};
}

Config parse_body(Services& s, Ctx& c) {
  auto b = c.body({"hostname", "fqdn", "ssh_authorized_keys", "user_data", "vendor_data",
                   "network_config", "metadata", "config_drive"});
  return take(cloudinit::parse_config(b, {s.options.max_user_data_bytes}));
}

// A profile's selector: "" selects every machine (a bulk assignment's may not be empty).
Result<proto::Selector> profile_selector(const std::string& text) {
  if (text.empty()) return proto::Selector{};
  return proto::parse_selector(text);
}

Result<cloudinit::Effective> effective_of(Services& s, const store::ConfigInputs& in) {
  std::vector<cloudinit::Profile> profiles;
  for (const auto& p : in.profiles) {
    auto sel = profile_selector(p.selector);
    if (!sel) return sel.error();
    // Only the profiles that select this machine are opened: one that does not open fails
    // the machines it applies to, not the whole fleet.
    if (!cloudinit::selects(*sel, in.machine.labels)) continue;
    auto cfg = open_config(s, p.config, profile_aad(p.name));
    if (!cfg) return cfg.error();
    profiles.push_back({p.name, std::move(*sel), p.priority, std::move(*cfg)});
  }
  if (in.layer) {
    // A rollout's layer: above every profile, below the machine's own document.
    auto cfg = open_config(s, *in.layer, rollout_aad(in.layer->sha256));
    if (!cfg) return cfg.error();
    profiles.push_back({"rollout", {}, std::numeric_limits<int>::max(), std::move(*cfg)});
  }
  std::optional<Config> machine;
  if (in.machine_config) {
    auto cfg = open_config(s, *in.machine_config, machine_aad(in.machine.id));
    if (!cfg) return cfg.error();
    machine = std::move(*cfg);
  }
  return cloudinit::merge(profiles, in.machine.labels, machine);
}

json effective_json(const cloudinit::Effective& e, bool secrets) {
  return {{"config", cloudinit::to_json(e.config, secrets)},
          {"config_sha256",
           e.sources.empty() ? json(nullptr) : json(cloudinit::config_sha256(e.config))},
          {"sources", e.sources}};
}

// --- machine documents -------------------------------------------------------------------------

std::optional<Response> get_machine_config(Services& s, Ctx& c) {
  auto m = s.machine(c.param("id"));
  store::ConfigInputs in{m, std::nullopt, s.store.list_profiles(), std::nullopt};
  json own = nullptr, sha = nullptr, updated = nullptr;
  if (auto r = s.store.get_machine_config(m.id)) {
    in.machine_config = *r;
    own = cloudinit::to_json(take(open_config(s, *r, machine_aad(m.id))), c.admin);
    sha = r->sha256;
    updated = format_rfc3339_ms(r->updated_at);
  }
  return json_response(bhttp::status::ok,
                       {{"machine_id", m.id},
                        {"config", own},
                        {"config_sha256", sha},
                        {"updated_at", updated},
                        {"effective", effective_json(take(effective_of(s, in)), c.admin)}});
}

std::optional<Response> put_machine_config(Services& s, Ctx& c) {
  auto m = s.machine(c.param("id"));
  const Config cfg = parse_body(s, c);
  auto saved =
      take(s.store.put_machine_config(m.id, seal_config(s, cfg, machine_aad(m.id)), c.who));
  s.log.info("event=machine.config_set machine={} sha256={} by={}", m.id, saved.sha256, c.who);
  return get_machine_config(s, c);
}

std::optional<Response> delete_machine_config(Services& s, Ctx& c) {
  auto m = s.machine(c.param("id"));
  check(s.store.delete_machine_config(m.id, c.who));
  return no_content();
}

// --- profiles ----------------------------------------------------------------------------------

json profile_json(Services& s, const store::ProfileRecord& p, bool secrets) {
  return {
      {"name", p.name},
      {"selector", p.selector},
      {"priority", p.priority},
      {"config", cloudinit::to_json(take(open_config(s, p.config, profile_aad(p.name))), secrets)},
      {"config_sha256", p.config.sha256},
      {"created_at", format_rfc3339_ms(p.created_at)},
      {"updated_at", format_rfc3339_ms(p.config.updated_at)}};
}

std::optional<Response> list_profiles(Services& s, Ctx& c) {
  json items = json::array();
  for (const auto& p : s.store.list_profiles()) items.push_back(profile_json(s, p, c.admin));
  return json_response(bhttp::status::ok, {{"items", items}});
}

std::optional<Response> get_profile(Services& s, Ctx& c) {
  return json_response(bhttp::status::ok,
                       profile_json(s, take(s.store.get_profile(c.param("name"))), c.admin));
}

std::optional<Response> put_profile(Services& s, Ctx& c) {
  const std::string name = c.param("name");
  check(cloudinit::validate_profile_name(name));
  auto b = c.body({"selector", "priority", "config"});
  const auto selector_text = field<std::string>(b, "selector").value_or("");
  auto selector = profile_selector(selector_text);
  if (!selector) fail(Errc::kInvalid, "selector: " + selector.error().message);
  const auto priority = field<std::int64_t>(b, "priority").value_or(0);
  if (priority < -1000 || priority > 1000) fail(Errc::kInvalid, "priority: from -1000 to 1000");
  auto doc = b.find("config");
  if (doc == b.end() || !doc->is_object()) {
    fail(Errc::kBadRequest, "config: must be an object (the configuration document)");
  }
  const Config cfg = take(cloudinit::parse_config(*doc, {s.options.max_user_data_bytes}));
  store::ProfileRecord p;
  p.name = name;
  p.selector = proto::format_selector(*selector);
  p.priority = static_cast<int>(priority);
  p.config = seal_config(s, cfg, profile_aad(name));
  auto saved = take(s.store.put_profile(p, c.who));
  s.log.info("event=profile.set name={} selector=\"{}\" sha256={} by={}", name,
             log_escape(p.selector, 200), saved.config.sha256, c.who);
  return json_response(bhttp::status::ok, profile_json(s, saved, c.admin));
}

std::optional<Response> delete_profile(Services& s, Ctx& c) {
  check(s.store.delete_profile(c.param("name"), c.who));
  return no_content();
}

// --- deployment snapshots ----------------------------------------------------------------------

std::optional<Response> get_deployment_config(Services& s, Ctx& c) {
  auto d = take(s.store.get_deployment(parse_int(c.param("id"), "deployment id")));
  auto r = take(s.store.deployment_config(d.id));
  json doc = nullptr, sha = nullptr;
  if (r) {
    doc =
        cloudinit::to_json(take(open_config(s, *r, deployment_aad(d.machine_id, r->sha256))), true);
    sha = r->sha256;
  }
  return json_response(bhttp::status::ok,
                       {{"deployment_id", d.id}, {"config_sha256", sha}, {"config", doc}});
}

// --- the metadata service ----------------------------------------------------------------------

Response text_response(std::string body, std::string_view type = "text/plain; charset=utf-8") {
  Response res{bhttp::status::ok, 11};
  res.set(bhttp::field::content_type, type);
  res.set(bhttp::field::cache_control, "no-store");
  res.body() = std::move(body);
  return res;
}

// The deployed instance the request speaks for: its instance credential (Authorization:
// Bearer), or else the source address of a bound DHCP lease of the machine (weaker: anyone who
// takes over the address). Anything else is a 404, the same for every unknown caller.
proto::Deployment identify(Services& s, Ctx& c) {
  const std::string token = bearer_token(c.req);
  auto d = token.empty() ? s.store.instance_by_address(c.peer) : s.store.instance_by_token(token);
  if (!d) {
    s.log.warn("event=metadata.refused peer={} by={} path=\"{}\"", c.peer,
               token.empty() ? "address" : "credential",
               log_escape(std::string(c.req.target().substr(0, 200)), 200));
    fail(Errc::kNotFound, "no instance is known for this caller");
  }
  // cloud-init asking for its data is the deployed OS up and running: the boot confirmation.
  if (d->status == proto::DeploymentStatus::kSucceeded) {
    const std::string via = token.empty() ? "lease-address" : "instance-credential";
    if (auto b = s.store.confirm_instance_boot(d->id, c.peer, "metadata:" + via)) {
      s.log.info("event=deployment.booted deployment={} machine={} peer={} via=metadata:{}", b->id,
                 b->machine_id, c.peer, via);
      return std::move(*b);
    }
  }
  return std::move(*d);
}

struct Rendered {
  Config config;
  cloudinit::Instance instance;
};

Rendered render_for(Services& s, const proto::Deployment& d, std::string local_ipv4,
                    std::string phone_home_url) {
  Rendered r;
  if (auto sealed = take(s.store.deployment_config(d.id))) {
    r.config = take(open_config(s, *sealed, deployment_aad(d.machine_id, sealed->sha256)));
  }
  auto m = take(s.store.get_machine(d.machine_id));
  r.instance = {d.id,
                d.machine_id,
                m.name,
                d.to_version.name + ":" + d.to_version.version,
                std::move(local_ipv4),
                std::move(phone_home_url)};
  return r;
}

// What the metadata service answers the caller with: its own instance, seen from its address.
Rendered caller_view(Services& s, Ctx& c) { return render_for(s, identify(s, c), c.peer, ""); }

std::optional<Response> nocloud(Services& s, Ctx& c) {
  const std::string file = c.param("file");
  if (file != "meta-data" && file != "user-data" && file != "vendor-data" &&
      file != "network-config") {
    fail(Errc::kNotFound, "no such NoCloud file");
  }
  auto r = caller_view(s, c);
  auto files = cloudinit::render_nocloud(r.config, r.instance);
  if (file == "meta-data") return text_response(files.meta_data);
  if (file == "user-data") return text_response(files.user_data);
  if (file == "vendor-data") return text_response(files.vendor_data);
  if (!files.network_config) fail(Errc::kNotFound, "no network configuration");
  return text_response(*files.network_config);
}

void check_ec2_version(const std::string& v) {
  const bool date =
      v.size() == 10 && v[4] == '-' && v[7] == '-' && std::all_of(v.begin(), v.end(), [](char ch) {
        return std::isdigit(static_cast<unsigned char>(ch)) || ch == '-';
      });
  if (v != "latest" && !date) fail(Errc::kNotFound, "not found");
}

std::optional<Response> ec2_meta(Services& s, Ctx& c) {
  check_ec2_version(c.param("ec2v"));
  std::vector<std::string> path;
  for (const char* k : {"a", "b", "c"}) {
    if (auto it = c.params.find(k); it != c.params.end()) path.push_back(it->second);
  }
  auto r = caller_view(s, c);
  auto v = cloudinit::ec2_meta_data(r.config, r.instance, path);
  if (!v) fail(Errc::kNotFound, "no such meta-data entry");
  return text_response(*v);
}

std::optional<Response> ec2_user_data(Services& s, Ctx& c) {
  check_ec2_version(c.param("ec2v"));
  auto r = caller_view(s, c);
  if (!r.config.user_data) fail(Errc::kNotFound, "no user-data");
  return text_response(*r.config.user_data, "application/octet-stream");
}

// IMDSv2's session token: cloud-init asks for one first. The caller is still identified by
// its address on every request; the token is only what the protocol expects.
std::optional<Response> ec2_token(Services& s, Ctx& c) {
  check_ec2_version(c.param("ec2v"));
  identify(s, c);
  auto res = text_response(random_hex(24));
  auto ttl = c.req["X-aws-ec2-metadata-token-ttl-seconds"];
  res.set("X-aws-ec2-metadata-token-ttl-seconds", ttl.empty() ? "21600" : std::string(ttl));
  return res;
}

// cloud-init's phone_home (kiln's vendor-data asks for it, with the instance credential in the
// URL: phone_home sends no headers): the deployed OS finished booting.
std::optional<Response> phone_home(Services& s, Ctx& c) {
  return confirm_boot_response(s, c, c.param("token"), "phone_home");
}

using V = bhttp::verb;
constexpr RouteSpec kRoutes[] = {
    {V::get, "/api/v1/machines/{id}/config", Access::kRead, get_machine_config},
    {V::put, "/api/v1/machines/{id}/config", Access::kAdmin, put_machine_config},
    {V::delete_, "/api/v1/machines/{id}/config", Access::kAdmin, delete_machine_config},
    {V::get, "/api/v1/profiles", Access::kRead, list_profiles},
    {V::get, "/api/v1/profiles/{name}", Access::kRead, get_profile},
    {V::put, "/api/v1/profiles/{name}", Access::kAdmin, put_profile},
    {V::delete_, "/api/v1/profiles/{name}", Access::kAdmin, delete_profile},
    {V::get, "/api/v1/deployments/{id}/config", Access::kAdmin, get_deployment_config},
    {V::post, "/api/v1/instance/phone-home/{token}", Access::kPublic, phone_home},
    {V::get, "/nocloud/{file}", Access::kPublic, nocloud},
    {V::get, "/{ec2v}/meta-data", Access::kPublic, ec2_meta},
    {V::get, "/{ec2v}/meta-data/{a}", Access::kPublic, ec2_meta},
    {V::get, "/{ec2v}/meta-data/{a}/{b}", Access::kPublic, ec2_meta},
    {V::get, "/{ec2v}/meta-data/{a}/{b}/{c}", Access::kPublic, ec2_meta},
    {V::get, "/{ec2v}/user-data", Access::kPublic, ec2_user_data},
    {V::put, "/{ec2v}/api/token", Access::kPublic, ec2_token},
};

}  // namespace

store::ConfigSnapshotter config_snapshotter(Services& s) {
  return [&s](const store::ConfigInputs& in) -> Result<std::optional<store::ConfigRecord>> {
    auto e = effective_of(s, in);
    if (!e) return e.error();
    if (e->sources.empty()) return std::optional<store::ConfigRecord>{};
    if (const auto n = cloudinit::rendered_size(e->config); n > cloudinit::kMaxRenderedBytes) {
      return make_error(Errc::kInvalid, "config: machine " + std::to_string(in.machine.id) +
                                            "'s effective configuration renders to " +
                                            std::to_string(n) +
                                            " bytes; a config drive holds at most " +
                                            std::to_string(cloudinit::kMaxRenderedBytes));
    }
    return std::optional<store::ConfigRecord>(seal_config(
        s, e->config, deployment_aad(in.machine.id, cloudinit::config_sha256(e->config))));
  };
}

store::ConfigRecord seal_rollout_config(Services& s, const json& doc) {
  if (!doc.is_object()) fail(Errc::kBadRequest, "field 'config' must be an object");
  const Config cfg = take(cloudinit::parse_config(doc, {s.options.max_user_data_bytes}));
  return seal_config(s, cfg, rollout_aad(cloudinit::config_sha256(cfg)));
}

std::optional<json> config_drive_plan(Services& s, const proto::Deployment& d,
                                      const std::string& phone_home_base,
                                      const std::string& instance_token) {
  auto sealed = take(s.store.deployment_config(d.id));
  if (!sealed) return std::nullopt;
  const std::string url = phone_home_base.empty()
                              ? ""
                              : phone_home_base + "/api/v1/instance/phone-home/" + instance_token;
  auto r = render_for(s, d, "", url);
  if (r.config.config_drive == false) return std::nullopt;
  auto f = cloudinit::render_nocloud(r.config, r.instance);
  json files = {
      {"meta-data", f.meta_data}, {"user-data", f.user_data}, {"vendor-data", f.vendor_data}};
  if (f.network_config) files["network-config"] = *f.network_config;
  return json{{"label", "cidata"}, {"files", std::move(files)}};
}

std::span<const RouteSpec> config_routes() { return kRoutes; }

}  // namespace kiln::api
