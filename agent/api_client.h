// agent/api_client.h — the agent's side of the agent protocol (proto/openapi.yaml, the
// /api/v1/agent/... routes): the plan, the manifest and its signature, progress and the
// result, the discovery inventory. Calls are retried across short outages of kilnd (transport
// errors and 5xx, with backoff); any other HTTP status is the caller's to judge. The bodies the
// agent sends are built in this file's .cc and nowhere else. Not thread-safe: one ApiClient per
// thread (the progress reporter has its own).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "agent/config_drive.h"
#include "agent/http.h"
#include "core/result.h"
#include "core/url.h"
#include "proto/resources.h"

namespace kiln::agent {

// GET /api/v1/agent/deployment: what to write, decoded with proto's codecs: the deployment
// and the image version it writes (format, name, version, sha256, and source_url/size_bytes
// for external images).
struct Plan {
  proto::Deployment deployment;
  proto::ImageVersion image;
  std::optional<std::string> manifest_url;           // .kiln images
  std::optional<std::string> chunks_url;             // .kiln images
  std::optional<std::string> previous_manifest_url;  // a hint for local copies, may be absent
  bool chunks_require_token = false;                 // send the session token with chunk reads
  // Every kilnd instance serving this machine's network (a cluster; the one answering first):
  // API calls and chunk reads fall back to them in order. Empty from a single kilnd.
  std::vector<std::string> servers;
  // Chunk mirrors kilnd chose for this machine's network (its mirrors config), tried after
  // the agent's own --mirror / kiln.mirror ones and before kilnd.
  std::vector<std::string> mirrors;
  // The deployed OS's credential for confirming its boot (kilnd's POST
  // <instance_url>/api/v1/instance/booted); empty when kilnd sent none. "" url: the agent's.
  std::string instance_token;
  std::string instance_url;
  // The NoCloud config drive to write after the image ("config_drive": null or
  // {"label": "cidata", "files": {"meta-data": "...", ...}}); nullopt when absent or null.
  std::optional<ConfigDrive> config_drive;
};

// The plan's "config_drive" property, strictly typed: null -> nullopt; otherwise an object
// with an optional string "label" and an object "files" of strings. A wrong type is kInvalid
// naming the property. The contents are checked later (validate_config_drive).
Result<std::optional<ConfigDrive>> parse_config_drive(const nlohmann::json& j);

// A manifest as served, with the signature from its Kiln-Signature header (raw bytes; empty
// when the header is absent, i.e. the manifest is unsigned).
struct SignedManifest {
  std::string body;
  std::string signature;
};

// The bytes a Kiln-Signature header value spells: "" for an absent/empty header (unsigned), or
// exactly proto::image::kSignatureSize bytes written as hex (either case). Anything else (not
// hex, odd or wrong length) is an error naming the header; it never throws.
Result<std::string> decode_signature_header(std::string_view value);

class ApiClient {
 public:
  // `token` is the agent session's token ("" for discovery and before open_session()).
  ApiClient(HttpUrl base, std::string token);
  // Several kilnd instances sharing one database (a cluster): `servers` in order of
  // preference, the session valid on each. A call that gets no answer (refused, reset, timed
  // out) or a 5xx from one goes to the next at once, and the client stays with the one that
  // answered. `current` is the one to start with.
  ApiClient(std::vector<HttpUrl> servers, std::string token, std::size_t current = 0,
            std::chrono::milliseconds timeout = std::chrono::seconds(30));

  // The server in use.
  const HttpUrl& base() const { return conns_[current_]->base(); }
  std::size_t current() const { return current_; }
  const std::vector<HttpUrl>& servers() const { return servers_; }
  const std::string& token() const { return token_; }
  // Adds fallback servers (the plan's "servers") after the known ones, skipping duplicates and
  // URLs that do not parse (returned, for the log).
  std::vector<std::string> add_servers(const std::vector<std::string>& urls);

  // POST /api/v1/agent/session with the deployment's boot ticket: opens this agent's session
  // (bound by kilnd to our address) and uses its token from now on. Errors: kUnavailable
  // (unreachable), kForbidden (refused: the deployment is bound to another agent, the ticket
  // is unknown or expired, or the deployment failed for too many agent boots; kilnd's answer
  // in the message).
  Status open_session(const std::string& ticket);

  // One call, up to `attempts` rounds while kilnd is unreachable or answers 5xx (backoff from
  // 200 ms doubling, capped at 5 s, between rounds); a round tries every server once, starting
  // with the current one. A transport failure after the last round is kUnavailable.
  Result<Reply> call(const std::string& method, const std::string& target,
                     const std::string& body = {}, int attempts = 10);

  // The plan. Errors: unreachable (kUnavailable), refused (kUnauthorized: any non-200, with
  // kilnd's answer), unparsable or without an image (kInvalid: worth reporting as failed).
  Result<Plan> plan();
  // The manifest at `url` (a plan's manifest_url) and its signature header, decoded.
  // Errors: kUnavailable (cannot fetch), kInvalid (a bad Kiln-Signature header).
  Result<SignedManifest> manifest(const std::string& url);
  // Another manifest's body (the previous version's: a hint, so only 2 tries).
  Result<std::string> previous_manifest(const std::string& url);

  // POSTs a progress report (1 try: the next one follows within a second) or, when
  // `report.result` is set, the deployment's result (10 tries). Non-200 is an error.
  Status report(const proto::AgentReport& report);
  // POST /api/v1/agent/inventory (discovery). Non-200 is an error with kilnd's answer.
  Status post_inventory(const std::string& mac, const nlohmann::json& inventory);

 private:
  std::vector<HttpUrl> servers_;
  std::vector<std::unique_ptr<HttpConnection>> conns_;  // one per server
  std::size_t current_ = 0;
  std::chrono::milliseconds timeout_;
  std::string token_;
};

}  // namespace kiln::agent
