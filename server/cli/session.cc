#include "cli/session.h"

#include "proto/api_types.h"

namespace kiln::cli {

using json = nlohmann::json;

Session::Session(Client client, bool json_mode, std::string token_hint, std::ostream& out,
                 std::ostream& err)
    : client_(std::move(client)),
      json_mode_(json_mode),
      token_hint_(std::move(token_hint)),
      out_(out),
      err_(err) {}

int Session::usage(const std::string& message) {
  err_ << "kiln: " << message << "\n";
  return kExitUsage;
}

std::optional<Reply> Session::call(std::string_view method, const std::string& target,
                                   const json* body, std::chrono::seconds wait,
                                   std::string_view content_type) {
  const std::string payload = body ? body->dump() : std::string();
  return interpret(client_.request(method, target, payload, content_type, wait));
}

std::optional<Reply> Session::upload(const std::string& target, const std::string& path,
                                     const UploadProgress& progress, std::chrono::seconds wait) {
  return interpret(client_.upload(target, path, "application/octet-stream", progress, wait));
}

std::optional<Reply> Session::interpret(Result<HttpReply>&& r) {
  if (!r) {
    err_ << "kiln: " << r.error().message << "\n";
    failure_code_ = kExitUsage;
    return std::nullopt;
  }
  Reply reply{r->status, std::move(r->body), nullptr};
  json parsed = json::parse(reply.raw, nullptr, /*allow_exceptions=*/false);
  if (reply.status >= 200 && reply.status < 300) {
    if (reply.raw.empty()) return reply;
    if (parsed.is_discarded()) {
      err_ << "kiln: the response from " << client_.endpoint().url
           << " is not JSON; is the URL a kilnd server? (HTTP " << reply.status << ")\n";
      failure_code_ = kExitUsage;
      return std::nullopt;
    }
    reply.body = std::move(parsed);
    return reply;
  }
  failure_code_ = kExitApiError;
  const json* error = nullptr;
  if (!parsed.is_discarded() && parsed.is_object()) {
    auto it = parsed.find("error");
    if (it != parsed.end() && it->is_object()) error = &*it;
  }
  if (error) {
    err_ << "kiln: " << text(*error, "message") << " (HTTP " << reply.status << " "
         << text(*error, "code") << ")\n";
  } else {
    err_ << "kiln: unexpected response from " << client_.endpoint().url << " (HTTP " << reply.status
         << " " << r->reason << ")\n";
  }
  if (reply.status == 401 && !token_hint_.empty()) err_ << "kiln: hint: " << token_hint_ << "\n";
  return std::nullopt;
}

void Session::unexpected_response(const std::string& message) {
  err_ << "kiln: unexpected response from kilnd: " << message << "\n";
  failure_code_ = kExitApiError;
}

int Session::print_raw(const Reply& r) {
  out_ << r.raw;
  if (!r.raw.empty() && r.raw.back() != '\n') out_ << '\n';
  return kExitOk;
}

std::string text(const json& j, const char* key) {
  if (!j.is_object()) return "";
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return "";
  if (it->is_string()) return it->get<std::string>();
  return it->dump();
}

const json& items_of(const json& body, const char* key) {
  static const json kEmpty = json::array();
  if (!body.is_object()) return kEmpty;
  auto it = body.find(key);
  return it != body.end() && it->is_array() ? *it : kEmpty;
}

std::string api_path(std::initializer_list<std::string_view> segments) {
  std::string out(proto::kApiPrefix);
  for (auto s : segments) out += "/" + encode_component(s);
  return out;
}

Query& Query::add(std::string_view key, std::string_view value) {
  text_ += text_.empty() ? "?" : "&";
  text_ += encode_component(key) + "=" + encode_component(value);
  return *this;
}

Result<std::pair<std::string, std::string>> parse_label(std::string_view arg) {
  const std::size_t eq = arg.find('=');
  if (eq == std::string_view::npos) {
    return make_error(Errc::kInvalid, "label '" + std::string(arg) + "' must be key=value");
  }
  std::string key(arg.substr(0, eq)), value(arg.substr(eq + 1));
  if (auto s = proto::validate_label_key(key); !s) {
    return make_error(Errc::kInvalid, "label '" + std::string(arg) + "': " + s.error().message);
  }
  if (auto s = proto::validate_label_value(value); !s) {
    return make_error(Errc::kInvalid, "label '" + std::string(arg) + "': " + s.error().message);
  }
  return std::pair{std::move(key), std::move(value)};
}

Result<json> parse_labels(const std::vector<std::string>& args) {
  json labels = json::object();
  for (const auto& l : args) {
    auto kv = parse_label(l);
    if (!kv) return kv.error();
    labels[kv->first] = kv->second;
  }
  return labels;
}

Result<std::string> checked_selector(const std::string& text) {
  auto sel = proto::parse_selector(text);
  if (!sel)
    return make_error(Errc::kInvalid, "bad selector '" + text + "': " + sel.error().message);
  return proto::format_selector(*sel);
}

Status checked_image(const std::string& name, const std::string& version) {
  if (auto s = proto::validate_image_name(name); !s) {
    return make_error(Errc::kInvalid, "image name '" + name + "': " + s.error().message);
  }
  if (auto s = proto::validate_image_version(version); !s) {
    return make_error(Errc::kInvalid, "image version '" + version + "': " + s.error().message);
  }
  return ok_status();
}

std::string all_states() {
  std::string out;
  for (auto s : proto::kAllMachineStates) {
    out += std::string(out.empty() ? "" : ", ") + to_string(s);
  }
  return out;
}

}  // namespace kiln::cli
