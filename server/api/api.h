// api/api.h — the REST API v1 (proto/openapi.yaml): request in, response out, no sockets.
//
// `Api::handle` authenticates the caller (API tokens with read/admin scope, or a deployment's
// agent token on /api/v1/agent/...), routes the request, validates its JSON, calls the store
// and renders the JSON answer or a `{"error":{"code","message"}}` body. Exactly one catch per
// request turns an unexpected exception into a 500 (or a 503 when the database is busy).
// Long-polls on /api/v1/events wait on the executor's timers, never blocking a thread.
// Thread-safety: handle() may be called concurrently from any number of threads.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "api/event_hub.h"
#include "api/router.h"
#include "core/clock.h"
#include "core/metrics.h"
#include "proto/image_format.h"
#include "store/store.h"

namespace spdlog {
class logger;
}

namespace kiln::images {
class ChunkStore;
}

namespace kiln::api {

using RequestHeader = boost::beast::http::request_header<>;
// The header under which the HTTP server hands over a body it streamed to a file
// (http::kUploadFileHeader); only the server sets it.
inline constexpr std::string_view kUploadFileHeader = "Kiln-Upload-File";

// Whether a request header announces an image upload, and if so whether it is refused before
// its body is read (unauthenticated, not allowed, bad name).
struct UploadAdmission {
  bool is_upload = false;
  std::optional<Response> refusal;
};

struct ApiOptions {
  bool auth_required = true;   // false: every caller is an anonymous admin (development only)
  bool metrics_public = true;  // /metrics without a token
  std::chrono::milliseconds max_wait{60'000};  // longest long-poll on /api/v1/events
  int default_page = 1000;
  int max_page = 10'000;
  std::chrono::milliseconds agent_token_ttl{6 * 3600 * 1000};
  std::string version = "0.1.0";
};

class Api {
 public:
  Api(store::Store& store, Metrics& metrics, const Clock& clock, boost::asio::io_context& ioc,
      ApiOptions options, std::shared_ptr<spdlog::logger> log);
  ~Api();

  void handle(Request&& req, Respond respond);
  // Enables .kiln uploads into `chunks`, verified against `trusted` (none: signatures are not
  // required). Call before serving.
  void attach_images(images::ChunkStore& chunks, std::vector<proto::image::Key> trusted);
  UploadAdmission admit_upload(const RequestHeader& header);
  // Every route served, for the spec conformance test and `kilnd routes`.
  std::vector<RouteInfo> routes() const;
  // Completes every waiting long-poll now (used at shutdown).
  void shutdown();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace kiln::api
