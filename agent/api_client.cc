#include "agent/api_client.h"

#include <algorithm>
#include <chrono>
#include <thread>

#include "agent/log.h"
#include "core/hex.h"
#include "proto/image_format.h"

namespace kiln::agent {

using json = nlohmann::json;

namespace {

// Never throws: bytes that are not UTF-8 (a reason quoting a server's answer) are replaced.
std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

std::optional<std::string> string_field(const json& j, const char* key) {
  const auto it = j.find(key);
  if (it == j.end() || !it->is_string()) return std::nullopt;
  return it->get<std::string>();
}

}  // namespace

Result<std::optional<ConfigDrive>> parse_config_drive(const json& j) {
  if (j.is_null()) return std::optional<ConfigDrive>();
  if (!j.is_object()) {
    return make_error(Errc::kInvalid, "the deployment plan's config_drive is not an object");
  }
  ConfigDrive cd;
  if (auto it = j.find("label"); it != j.end()) {
    if (!it->is_string()) {
      return make_error(Errc::kInvalid, "the deployment plan's config_drive.label is not a string");
    }
    cd.label = it->get<std::string>();
  }
  const auto files = j.find("files");
  if (files == j.end() || !files->is_object()) {
    return make_error(Errc::kInvalid,
                      "the deployment plan's config_drive.files is missing or not an object");
  }
  for (const auto& [name, content] : files->items()) {
    if (!content.is_string()) {
      return make_error(Errc::kInvalid,
                        "the deployment plan's config_drive.files." + name + " is not a string");
    }
    cd.files.emplace(name, content.get<std::string>());
  }
  return std::optional<ConfigDrive>(std::move(cd));
}

Result<std::string> decode_signature_header(std::string_view value) {
  if (value.empty()) return std::string();
  constexpr std::size_t kHexSize = 2 * proto::image::kSignatureSize;
  if (value.size() != kHexSize) {
    return make_error(Errc::kInvalid, "the manifest's Kiln-Signature header has " +
                                          std::to_string(value.size()) + " characters, not the " +
                                          std::to_string(kHexSize) +
                                          " hex digits of an Ed25519 signature");
  }
  auto bytes = hex_decode(value);
  if (!bytes) {
    return make_error(Errc::kInvalid, "the manifest's Kiln-Signature header is not hex");
  }
  return std::move(*bytes);
}

ApiClient::ApiClient(HttpUrl base, std::string token)
    : ApiClient(std::vector<HttpUrl>{std::move(base)}, std::move(token)) {}

ApiClient::ApiClient(std::vector<HttpUrl> servers, std::string token, std::size_t current,
                     std::chrono::milliseconds timeout)
    : servers_(std::move(servers)), timeout_(timeout), token_(std::move(token)) {
  if (servers_.empty()) servers_.push_back(HttpUrl{});
  for (const auto& s : servers_) conns_.push_back(std::make_unique<HttpConnection>(s, timeout_));
  current_ = current < servers_.size() ? current : 0;
}

std::vector<std::string> ApiClient::add_servers(const std::vector<std::string>& urls) {
  std::vector<std::string> bad;
  for (const auto& text : urls) {
    auto u = parse_agent_url(text);
    if (!u) {
      bad.push_back(text);
      continue;
    }
    if (std::any_of(servers_.begin(), servers_.end(),
                    [&](const HttpUrl& s) { return s.url == u->url; })) {
      continue;
    }
    // An agent that reached kilnd over TLS never sends its session token in the clear.
    if (servers_.front().tls && !u->tls) {
      bad.push_back(text + " (plain http; this agent talks https)");
      continue;
    }
    servers_.push_back(*u);
    conns_.push_back(std::make_unique<HttpConnection>(*u, timeout_));
  }
  return bad;
}

Result<Reply> ApiClient::call(const std::string& method, const std::string& target,
                              const std::string& body, int attempts) {
  std::string last;
  const std::size_t n = conns_.size();
  for (int a = 0; a < attempts; ++a) {
    if (a) std::this_thread::sleep_for(std::chrono::milliseconds(std::min(200 << a, 5000)));
    for (std::size_t k = 0; k < n; ++k) {
      auto& conn = *conns_[current_];
      auto r = conn.request(method, target, token_, body);
      if (r && r->status < 500) return r;
      last =
          r ? conn.base().url + target + ": HTTP " + std::to_string(r->status) : r.error().message;
      // Another instance of the cluster may answer: the next one, at once.
      if (n > 1) {
        current_ = (current_ + 1) % n;
        log_line("kilnd at " + conn.base().url + " failed (" + last + "); trying " +
                 conns_[current_]->base().url);
      }
    }
  }
  return make_error(Errc::kUnavailable, last);
}

Status ApiClient::open_session(const std::string& ticket) {
  token_ = ticket;  // the session call authenticates with the ticket
  auto r = call("POST", "/api/v1/agent/session");
  token_.clear();
  if (!r) {
    return make_error(Errc::kUnavailable, "cannot open the agent session: " + r.error().message);
  }
  if (r->status != 201) {
    return make_error(Errc::kForbidden,
                      "agent session refused: HTTP " + std::to_string(r->status) + " " + r->body);
  }
  const json j = json::parse(r->body, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("token") || !j["token"].is_string()) {
    return make_error(Errc::kInvalid, "the agent session answer has no token");
  }
  token_ = j["token"].get<std::string>();
  return ok_status();
}

Result<Plan> ApiClient::plan() {
  auto r = call("GET", "/api/v1/agent/deployment");
  if (!r) {
    return make_error(Errc::kUnavailable, "cannot fetch the deployment plan: " + r.error().message);
  }
  if (r->status != 200) {
    return make_error(Errc::kForbidden,
                      "deployment plan refused: HTTP " + std::to_string(r->status) + " " + r->body);
  }
  const json j = json::parse(r->body, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("image") || !j["image"].is_object()) {
    return make_error(Errc::kInvalid, "the deployment plan has no image");
  }
  Plan p;
  auto deployment = proto::deployment_from_json(j);
  if (!deployment)
    return make_error(Errc::kInvalid, "the deployment plan: " + deployment.error().message);
  p.deployment = std::move(*deployment);
  auto image = proto::image_version_from_json(j["image"]);
  if (!image) return make_error(Errc::kInvalid, "the deployment plan: " + image.error().message);
  p.image = std::move(*image);
  p.manifest_url = string_field(j, "manifest_url");
  p.chunks_url = string_field(j, "chunks_url");
  p.previous_manifest_url = string_field(j, "previous_manifest_url");
  if (auto it = j.find("chunks_require_token"); it != j.end() && it->is_boolean()) {
    p.chunks_require_token = it->get<bool>();
  }
  if (auto it = j.find("servers"); it != j.end() && !it->is_null()) {
    if (!it->is_array())
      return make_error(Errc::kInvalid, "the deployment plan: servers must be a list");
    for (const auto& m : *it) {
      if (!m.is_string())
        return make_error(Errc::kInvalid, "the deployment plan: servers must be URLs");
      p.servers.push_back(m.get<std::string>());
    }
  }
  if (auto it = j.find("mirrors"); it != j.end() && !it->is_null()) {
    if (!it->is_array())
      return make_error(Errc::kInvalid, "the deployment plan: mirrors must be a list");
    for (const auto& m : *it) {
      if (!m.is_string())
        return make_error(Errc::kInvalid, "the deployment plan: mirrors must be URLs");
      p.mirrors.push_back(m.get<std::string>());
    }
  }
  if (auto it = j.find("instance"); it != j.end() && it->is_object()) {
    p.instance_token = string_field(*it, "token").value_or("");
    p.instance_url = string_field(*it, "url").value_or("");
  }
  if (auto it = j.find("config_drive"); it != j.end()) {
    auto cd = parse_config_drive(*it);
    if (!cd) return cd.error();
    p.config_drive = std::move(*cd);
  }
  return p;
}

Result<SignedManifest> ApiClient::manifest(const std::string& url) {
  auto r = call("GET", url);
  if (!r || r->status != 200) {
    return make_error(Errc::kUnavailable,
                      "cannot fetch the manifest: " +
                          (r ? "HTTP " + std::to_string(r->status) : r.error().message));
  }
  auto signature = decode_signature_header(r->header("Kiln-Signature"));
  if (!signature) return signature.error();
  return SignedManifest{std::move(r->body), std::move(*signature)};
}

Result<std::string> ApiClient::previous_manifest(const std::string& url) {
  auto r = call("GET", url, {}, 2);
  if (!r) return r.error();
  if (r->status != 200) {
    return make_error(Errc::kNotFound, "previous manifest: HTTP " + std::to_string(r->status));
  }
  return std::move(r->body);
}

Status ApiClient::report(const proto::AgentReport& report) {
  const bool final = report.result.has_value();
  auto r = call("POST", final ? "/api/v1/agent/result" : "/api/v1/agent/progress",
                dump(proto::to_json(report)), final ? 10 : 1);
  if (!r) return r.error();
  if (r->status != 200)
    return make_error(Errc::kInvalid, "HTTP " + std::to_string(r->status) + ": " + r->body);
  return ok_status();
}

Status ApiClient::post_inventory(const std::string& mac, const json& inventory) {
  auto r =
      call("POST", "/api/v1/agent/inventory", dump(json{{"mac", mac}, {"inventory", inventory}}));
  if (!r) return make_error(r.error().code, "cannot post the inventory: " + r.error().message);
  if (r->status != 200) {
    return make_error(Errc::kInvalid,
                      "inventory refused: HTTP " + std::to_string(r->status) + " " + r->body);
  }
  return ok_status();
}

}  // namespace kiln::agent
