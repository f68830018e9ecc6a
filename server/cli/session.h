// cli/session.h — what every API command of `kiln` works with: a Session (the client, the
// output streams and mode, and the CLI's one way of reporting failures), request building
// (paths, queries) and the local validation that refuses bad input before calling kilnd.
//
// A Session is used by one command on one thread; it borrows the output streams, which must
// outlive it.
#pragma once

#include <chrono>
#include <cstdint>
#include <initializer_list>
#include <nlohmann/json.hpp>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "cli/client.h"
#include "cli/commands.h"
#include "core/result.h"

namespace kiln::cli {

// A successful (2xx) API reply.
struct Reply {
  unsigned status = 0;
  std::string raw;      // the body as received
  nlohmann::json body;  // parsed body; null for an empty body (204)
};

// Commands return `failure_code()` after a failed call (the message has been printed) and
// `usage(...)` for input they refuse before calling the API.
class Session {
 public:
  // `token_hint` is printed after a 401 ("" for none).
  Session(Client client, bool json_mode, std::string token_hint, std::ostream& out,
          std::ostream& err);

  bool json_mode() const { return json_mode_; }
  std::ostream& out() { return out_; }
  std::ostream& err() { return err_; }
  int failure_code() const { return failure_code_; }

  // Prints "kiln: <message>" and returns the usage exit code (2).
  int usage(const std::string& message);

  // Calls the API. Returns the reply for a 2xx status; otherwise prints the error (the
  // server's {"error":{...}} message, or the transport failure) and returns nullopt with
  // failure_code() set to 1 (API error) or 2 (server unreachable or not speaking the API).
  std::optional<Reply> call(std::string_view method, const std::string& target,
                            const nlohmann::json* body = nullptr,
                            std::chrono::seconds wait = std::chrono::seconds(0),
                            std::string_view content_type = "application/json");

  // POSTs a file as application/octet-stream, streamed; see call().
  std::optional<Reply> upload(const std::string& target, const std::string& path,
                              const UploadProgress& progress, std::chrono::seconds wait);

  // A resource decoded from a 2xx reply (one of proto's *_from_json results). A decoding
  // failure is printed as "kiln: unexpected response from kilnd: <message>" and gives nullopt
  // with failure_code() set to 1.
  template <typename T>
  std::optional<T> decoded(Result<T> r) {
    if (r) return std::move(*r);
    unexpected_response(r.error().message);
    return std::nullopt;
  }

  // Every element of `array` decoded with `decode` (a proto decoder); nullopt as decoded().
  template <typename T>
  std::optional<std::vector<T>> decoded_all(const nlohmann::json& array,
                                            Result<T> (*decode)(const nlohmann::json&)) {
    std::vector<T> out;
    out.reserve(array.size());
    for (const auto& item : array) {
      auto v = decoded(decode(item));
      if (!v) return std::nullopt;
      out.push_back(std::move(*v));
    }
    return out;
  }

  void unexpected_response(const std::string& message);

  // --json output: the body exactly as the server sent it.
  int print_raw(const Reply& r);

 private:
  std::optional<Reply> interpret(Result<HttpReply>&& r);

  Client client_;
  const bool json_mode_;
  const std::string token_hint_;
  std::ostream& out_;
  std::ostream& err_;
  int failure_code_ = kExitOk;
};

// --- reading the JSON around a resource ------------------------------------------------------

// A scalar field as text: strings as is, numbers and booleans printed, null/missing as "".
std::string text(const nlohmann::json& j, const char* key);

// body[key] when it is an array, else an empty array.
const nlohmann::json& items_of(const nlohmann::json& body, const char* key = "items");

// --- requests --------------------------------------------------------------------------------

// "/api/v1/<seg>/<seg>..." with every segment percent-encoded.
std::string api_path(std::initializer_list<std::string_view> segments);

// "?k=v&k=v" with keys and values percent-encoded ("" while empty).
class Query {
 public:
  Query& add(std::string_view key, std::string_view value);
  const std::string& str() const { return text_; }

 private:
  std::string text_;
};

// --- local validation (the same grammar the server applies); errors are kInvalid -------------

// "key=value" -> {key, value}, both checked against the label grammar of proto/api_types.h.
Result<std::pair<std::string, std::string>> parse_label(std::string_view arg);
// Every "key=value" of `args` as a JSON object of strings.
Result<nlohmann::json> parse_labels(const std::vector<std::string>& args);
// The selector in its canonical form.
Result<std::string> checked_selector(const std::string& text);
Status checked_image(const std::string& name, const std::string& version);
// "discovered, ready, ..." for messages.
std::string all_states();

}  // namespace kiln::cli
