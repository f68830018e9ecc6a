// libFuzzer target: arbitrary bytes as an HTTP/1.1 request, through Beast's parser (with
// kilnd's limits) into the REST API handler, against a real SQLite store.
//
// Invariants checked on every input that parses: the handler answers exactly once, with a
// status code, and every JSON body it produces is valid JSON. Sanitizers (address, undefined)
// catch memory errors and undefined behaviour. Authentication is off so that fuzzed requests
// reach every operator handler; long-polls are disabled (max wait 0) so nothing waits.
#include <spdlog/sinks/null_sink.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <boost/beast/http.hpp>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "api/api.h"
#include "store/store.h"

namespace {

struct Env {
  kiln::SystemClock clock;
  kiln::Metrics metrics;
  boost::asio::io_context ioc;
  std::unique_ptr<kiln::store::Store> store;
  std::unique_ptr<kiln::api::Api> api;

  Env() {
    const auto dir =
        std::filesystem::temp_directory_path() / ("kiln-fuzz-" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    kiln::store::StoreOptions so;
    so.path = (dir / "kiln.db").string();
    so.synchronous_full = false;
    auto s = kiln::store::Store::open(so, clock);
    if (!s) std::abort();
    store = std::move(*s);
    kiln::api::ApiOptions ao;
    ao.auth_required = false;
    ao.max_wait = std::chrono::milliseconds(0);
    api = std::make_unique<kiln::api::Api>(
        *store, metrics, clock, ioc, ao,
        std::make_shared<spdlog::logger>("fuzz", std::make_shared<spdlog::sinks::null_sink_mt>()));
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static Env env;
  namespace http = boost::beast::http;
  http::request_parser<http::string_body> parser;
  parser.eager(true);
  parser.header_limit(16 * 1024);
  parser.body_limit(1 << 20);
  boost::beast::error_code ec;
  parser.put(boost::asio::buffer(data, size), ec);
  if (!ec && !parser.is_done()) parser.put_eof(ec);
  if (ec || !parser.is_done()) return 0;

  int answers = 0;
  env.api->handle(parser.release(), [&](kiln::api::Response&& res) {
    ++answers;
    if (res.result_int() < 100 || res.result_int() > 599) std::abort();
    if (res[http::field::content_type] == "application/json" &&
        !nlohmann::json::accept(res.body())) {
      std::abort();  // the API produced invalid JSON
    }
  });
  env.ioc.restart();
  env.ioc.poll();
  if (answers != 1) std::abort();
  return 0;
}
