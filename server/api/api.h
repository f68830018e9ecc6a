// api/api.h — the REST API v1 (proto/openapi.yaml): request in, response out, no sockets.
//
// `Api::handle` matches the request against the static route table (api/routes.h), checks the
// caller (API tokens with read/admin scope, or a deployment's agent token on
// /api/v1/agent/...), calls the route's handler (one file per resource: machines.cc,
// images.cc, deployments.cc, events.cc, tokens.cc, agent.cc, system.cc) and renders its answer
// or a `{"error":{"code","message"}}` body. Exactly one catch per request turns an unexpected
// exception into a 500 (or a 503 when the database is busy). Long-polls wait on the
// executor's timers; image imports and deletions run on the ImageService's executor; neither
// ever blocks an I/O thread. Thread-safety: handle() may be called concurrently from any
// number of threads.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/beast/http.hpp>
#include <memory>
#include <optional>
#include <vector>

#include "api/context.h"
#include "api/router.h"

namespace kiln::api {

using RequestHeader = boost::beast::http::request_header<>;

// Whether a request header announces an image upload, and if so whether it is refused before
// its body is read (unauthenticated, not allowed, bad name).
struct UploadAdmission {
  bool is_upload = false;
  std::optional<Response> refusal;
  std::shared_ptr<void> hold;  // admitted: keep until the upload is answered (upload limits)
};

class Api {
 public:
  Api(store::Store& store, Metrics& metrics, const Clock& clock, boost::asio::io_context& ioc,
      ApiOptions options, std::shared_ptr<spdlog::logger> log);
  ~Api();

  void handle(Request&& req, Respond respond);
  // Enables .kiln uploads, manifests and image deletion through `images`, which must outlive
  // the Api. Call before serving.
  void attach_images(images::ImageService& images);
  // Enables BMCs (credentials sealed by `secrets`), power actions and reboot-on-assign through
  // `power`; both must outlive the Api. Call before serving.
  void attach_power(provision::PowerService& power, const SecretBox& secrets);
  // Wakes `rollouts` (which must outlive the Api) when a rollout is made or acted on. Call
  // before serving.
  void attach_rollouts(provision::RolloutService& rollouts);
  // The configuration snapshot assignments take (for the rollout engine's); valid after
  // attach_power.
  store::ConfigSnapshotter config_snapshotter();
  // Sets ApiOptions::chunks_url (known once the listeners are bound). Call before serving.
  void set_chunks_url(std::string url);
  UploadAdmission admit_upload(const RequestHeader& header);
  // Every route served, for the spec conformance test and `kilnd routes` (no server needed).
  static std::vector<RouteInfo> routes();
  // Completes every waiting long-poll now (used at shutdown).
  void shutdown();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace kiln::api
