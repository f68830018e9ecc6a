// power/redfish.h — the Redfish driver: a BMC's /redfish/v1 over kilnd's own HTTP(S) client.
//
// It discovers the ComputerSystem (GET /redfish/v1 → Systems → the only member, or the one
// named by BmcConfig::system_id) once per driver, authenticates with a session
// (SessionService, X-Auth-Token; deleted again by the destructor) or, when the service has no
// sessions or refuses to make one, HTTP Basic; and then reads PowerState, posts
// ComputerSystem.Reset to the action's advertised `target` with a ResetType the system allows,
// and patches a one-time PXE boot override (with If-Match when the system has an ETag) that it
// reads back. Real BMCs' quirks it handles: 412/428 on a stale or missing ETag (re-read, retry),
// a 400 on BootSourceOverrideMode (retry once without it), an override that is accepted and not
// applied (kConflict), no AllowableValues (assume the common set), 5xx and timeouts (bounded
// retries with backoff, never on 4xx).
//
// The HTTP exchange is behind Transport so tests can script a BMC; beast_transport() is the real
// one. Not thread-safe (see driver.h).
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/result.h"
#include "power/driver.h"

namespace kiln::power {

struct HttpRequest {
  std::string method;  // "GET", "POST", "PATCH", "DELETE"
  std::string target;  // absolute path on the BMC, e.g. "/redfish/v1/Systems/1"
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;  // JSON, or empty
};

struct HttpResponse {
  unsigned status = 0;
  std::map<std::string, std::string> headers;  // names lower-cased
  std::string body;
  std::string header(const std::string& lower_name) const;  // "" when absent
};

// One HTTP exchange with the BMC. An error (never an HTTP status) when there is no response:
// kUnavailable (cannot connect, reset, timed out, truncated), kTooLarge (the body exceeds the
// cap), kInvalid (TLS configuration: an unreadable CA file). Any HTTP status is a response.
class Transport {
 public:
  virtual ~Transport() = default;
  virtual Result<HttpResponse> send(const HttpRequest& request) = 0;
};

// Response bodies above this are refused (kTooLarge): a BMC's JSON is a few KiB.
inline constexpr std::size_t kMaxRedfishBody = 1 << 20;

// The real transport: HTTP/1.1 keep-alive over TCP or TLS (TLS 1.2+, SNI, the certificate
// verified against `config.ca_file` and the URL's host name or IP; no verification at all only
// when `config.insecure`; an https URL with neither is kInvalid). Every step (resolve, connect,
// handshake, write, read) is bounded by `config.timeout`. After a failure the next send()
// reconnects. kInvalid for a malformed address.
Result<std::unique_ptr<Transport>> beast_transport(const BmcConfig& config);

struct RedfishOptions {
  std::chrono::milliseconds backoff{500};         // before a retry, doubled each time
  std::chrono::milliseconds poll_interval{1000};  // between PowerState reads after a reset
  int poll_attempts = 60;                         // PowerState reads before giving up
};

class RedfishDriver final : public Driver {
 public:
  RedfishDriver(BmcConfig config, std::unique_ptr<Transport> transport,
                RedfishOptions options = {});
  ~RedfishDriver() override;  // deletes the session, if one was made (one attempt)

  Result<PowerState> status() override;
  Result<std::vector<Step>> power(PowerAction action) override;
  Result<std::vector<Step>> boot_once_network(BootMode mode) override;

  // What discovery found ("" before the first call): the system's @odata.id, and whether
  // requests carry a session token ("session") or HTTP Basic ("basic").
  const std::string& system_path() const { return system_path_; }
  const std::string& auth_mode() const { return auth_mode_; }

 private:
  struct Reply;
  Result<Reply> call(const std::string& step, const std::string& method, const std::string& target,
                     const std::string& body = {}, const std::string& if_match = {});
  Status connect();
  Status login(const std::string& sessions_path);
  Result<Reply> get_system(const std::string& step);
  Result<Step> reset(const std::string& target, const std::string& reset_type);
  Result<Step> wait_for(PowerState want, const std::string& after);
  Error fail(const std::string& step, const std::string& method, const std::string& target,
             const Reply& reply) const;
  std::string scrub(std::string text) const;

  BmcConfig config_;
  std::unique_ptr<Transport> transport_;
  RedfishOptions options_;
  std::string system_path_;
  std::string auth_mode_;
  std::string token_;
  std::string session_path_;
};

}  // namespace kiln::power
