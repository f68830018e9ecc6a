// Images: list, versions, register an external image, upload a .kiln (imported by the
// ImageService off the I/O threads), manifest, delete.
#include <spdlog/spdlog.h>

#include <algorithm>

#include "api/image_responses.h"
#include "api/routes.h"
#include "core/crypto.h"
#include "core/hex.h"
#include "images/image_service.h"
#include "proto/image_format.h"
#include "store/sqlite.h"

namespace kiln::api {

namespace bhttp = boost::beast::http;

Response manifest_response(Services& s, const std::string& name, const std::string& version) {
  auto v = take(s.store.get_image_version(name, version));
  if (v.format != "kiln" || !s.images) {
    fail(Errc::kNotFound, "image version " + name + ":" + version + " is an external " + v.format +
                              " image; it has no manifest");
  }
  auto bytes = take(s.images->manifest(name, version));
  Response res{bhttp::status::ok, 11};
  res.set(bhttp::field::content_type, "application/json");
  // Versions are immutable: the manifest under this name never changes.
  res.set(bhttp::field::etag, "\"" + sha256_hex(bytes) + "\"");
  res.set(bhttp::field::cache_control, "no-cache");
  if (auto sig = s.images->signature(name, version); sig && !sig->empty()) {
    res.set("Kiln-Signature", hex_encode(*sig));
  }
  res.body() = std::move(bytes);
  return res;
}

std::optional<Response> reserve_upload(Services& s, std::optional<std::uint64_t> length,
                                       std::shared_ptr<void>& hold) {
  if (!s.images) return std::nullopt;
  auto slot = s.images->reserve_upload(length);
  switch (slot.refused) {
    case images::UploadSlot::kNone:
      hold = std::move(slot.hold);
      return std::nullopt;
    case images::UploadSlot::kBusy: {
      auto res = error_response({Errc::kUnavailable, slot.message});
      res.set(bhttp::field::retry_after, "10");
      return res;
    }
    case images::UploadSlot::kNoSpace:
      return json_response(
          bhttp::status::insufficient_storage,
          {{"error", {{"code", "insufficient_storage"}, {"message", slot.message}}}});
  }
  return std::nullopt;
}

namespace {

std::optional<Response> list(Services& s, Ctx&) {
  json items = json::array();
  for (const auto& v : s.store.list_image_versions(std::nullopt)) items.push_back(to_json(v));
  return json_response(bhttp::status::ok, {{"items", std::move(items)}});
}

std::optional<Response> versions(Services& s, Ctx& c) {
  auto vs = s.store.list_image_versions(c.param("name"));
  if (vs.empty()) fail(Errc::kNotFound, "image '" + c.param("name") + "' not found");
  json items = json::array();
  for (const auto& v : vs) items.push_back(to_json(v));
  return json_response(bhttp::status::ok, {{"name", c.param("name")}, {"items", std::move(items)}});
}

// Registers the imported version in the catalogue and answers the upload (on the images
// executor). A registration that fails leaves nothing behind in the chunk store.
Response register_upload(Services& s, const std::string& name, const std::string& version,
                         const std::string& who, const images::ImportOutcome& imported) {
  const auto& m = imported.manifest;
  proto::ImageVersion v;
  v.name = name;
  v.version = version;
  v.size_bytes = static_cast<std::int64_t>(m.size);
  v.sha256 = m.sha256;
  v.format = "kiln";
  v.created_by = who;
  for (const auto& [k, val] : m.labels) {
    if (proto::validate_label_key(k) && proto::validate_label_value(val)) v.labels[k] = val;
  }
  auto registered = s.store.register_image_version(v);
  if (!registered) {
    if (!imported.report.already_present) s.images->forget(name, version);
    throw ApiError{registered.error()};
  }
  auto& [out, created] = *registered;
  const auto& r = imported.report;
  s.log.info(
      "event=images.uploaded image={}:{} by={} created={} chunks={} new_chunks={} new_bytes={} "
      "ms={:.0f}",
      name, version, who, created, r.chunks, r.new_chunks, r.new_bytes, imported.ms);
  json j = to_json(out);
  j["import"] = {{"chunks", r.chunks},
                 {"new_chunks", r.new_chunks},
                 {"new_bytes", r.new_bytes},
                 {"signed", imported.is_signed}};
  auto res = json_response(created ? bhttp::status::created : bhttp::status::ok, j);
  res.set(bhttp::field::location, "/api/v1/images/" + name + "/versions/" + version);
  return res;
}

// Hands an uploaded .kiln file (streamed to `path` by the HTTP server) to the ImageService;
// answers when it is imported and registered.
void start_import(Services& s, Ctx& c, std::string path) {
  if (!s.images) fail(Errc::kNotFound, "this server does not store images");
  const std::string name = c.param("name"), version = c.param("version"), who = c.who;
  // Versions are immutable: the same name:version with other content is a conflict.
  auto admit = [&s, name, version](const proto::image::Manifest& m) -> Status {
    if (auto existing = s.store.get_image_version(name, version); existing) {
      if (existing->format != "kiln" || existing->sha256 != m.sha256) {
        return make_error(Errc::kConflict, "image version " + name + ":" + version +
                                               " already exists with different content; "
                                               "versions are immutable, upload a new version "
                                               "instead");
      }
    }
    return ok_status();
  };
  s.images->import(
      name, version, std::move(path), admit,
      [&s, name, version, who, respond = c.respond](Result<images::ImportOutcome> imported) {
        try {
          respond(register_upload(s, name, version, who, take(std::move(imported))));
        } catch (const ApiError& e) {
          s.log.info("event=images.upload_refused image={}:{} by={} err=\"{}\"", name, version, who,
                     e.error.message);
          respond(error_response(e.error));
        } catch (const store::SqliteError& e) {
          s.log.error("event=api.db_error route=upload err=\"{}\"", e.what());
          respond(error_response(db_error(e)));
        } catch (const std::exception& e) {
          s.log.error("event=api.exception route=upload err=\"{}\"", e.what());
          respond(error_response({Errc::kInternal, "internal error"}));
        }
      });
}

// Signed-only mode: with trusted keys configured, an external image is registered only with a
// signature by one of them over its name, version, URL, SHA-256, size and format (kiln image
// register --sign). Without trusted keys a given signature is stored unchecked (the agents
// check it against theirs).
void check_external_signature(Services& s, proto::ImageVersion& v, const json& b) {
  namespace img = proto::image;
  auto hex = field<std::string>(b, "signature");
  std::string raw;
  if (hex) {
    auto bytes = hex_decode(*hex);
    if (!bytes || bytes->size() != img::kSignatureSize) {
      fail(Errc::kInvalid, "signature must be " + std::to_string(img::kSignatureSize * 2) +
                               " hex digits (an Ed25519 signature)");
    }
    raw = std::move(*bytes);
    v.signature = ascii_lower(*hex);
  }
  const auto* trusted = s.images ? &s.images->trusted() : nullptr;
  if (!trusted || trusted->empty()) return;
  if (raw.empty()) {
    fail(Errc::kInvalid,
         "images.trusted_keys is set: an external image needs a signature by a trusted key "
         "(kiln image register --sign KEY)");
  }
  const std::string message = img::external_signing_message(v.name, v.version, *v.source_url,
                                                            v.sha256, v.size_bytes, v.format);
  for (const auto& k : *trusted) {
    if (k.verify(message, raw)) return;
  }
  fail(Errc::kInvalid,
       "the signature does not verify against any trusted key for this name, version, URL, "
       "sha256, size and format");
}

proto::ImageVersion external_version(const json& b, Ctx& c) {
  proto::ImageVersion v;
  v.name = c.param("name");
  v.version = c.param("version");
  check(proto::validate_image_name(v.name));
  check(proto::validate_image_version(v.version));
  v.size_bytes = required<std::int64_t>(b, "size_bytes");
  if (v.size_bytes <= 0) fail(Errc::kInvalid, "size_bytes must be positive");
  v.sha256 = ascii_lower(required<std::string>(b, "sha256"));
  if (!is_sha256_hex(v.sha256)) fail(Errc::kInvalid, "sha256 must be 64 hex digits");
  v.format = field<std::string>(b, "format").value_or("raw");
  static const std::vector<std::string> kFormats = {"raw", "raw.gz", "raw.xz", "raw.zst"};
  if (std::find(kFormats.begin(), kFormats.end(), v.format) == kFormats.end()) {
    fail(Errc::kInvalid,
         "format must be one of raw, raw.gz, raw.xz, raw.zst (.kiln images are uploaded, not "
         "registered)");
  }
  v.source_url = field<std::string>(b, "source_url");
  if (!v.source_url ||
      (v.source_url->rfind("http://", 0) != 0 && v.source_url->rfind("https://", 0) != 0)) {
    fail(Errc::kInvalid, "source_url (http:// or https://) is required for an external image");
  }
  if (std::any_of(v.source_url->begin(), v.source_url->end(),
                  [](unsigned char ch) { return ch <= 0x20 || ch == 0x7f; })) {
    fail(Errc::kInvalid, "source_url must not contain spaces or control characters");
  }
  v.description = field<std::string>(b, "description").value_or("");
  v.labels = labels_from(b.value("labels", json(nullptr)));
  v.created_by = c.who;
  return v;
}

// POST a version: a .kiln upload (the body arrives as a file) or an external image's metadata.
std::optional<Response> create(Services& s, Ctx& c) {
  if (auto file = c.req[kUploadFileHeader]; !file.empty()) {
    start_import(s, c, std::string(file));
    return std::nullopt;
  }
  auto b = c.body(
      {"size_bytes", "sha256", "format", "source_url", "description", "labels", "signature"});
  auto v = external_version(b, c);
  check_external_signature(s, v, b);
  auto [out, created] = take(s.store.register_image_version(v));
  auto res = json_response(created ? bhttp::status::created : bhttp::status::ok, to_json(out));
  res.set(bhttp::field::location, "/api/v1/images/" + out.name + "/versions/" + out.version);
  return res;
}

std::optional<Response> get(Services& s, Ctx& c) {
  return json_response(
      bhttp::status::ok,
      to_json(take(s.store.get_image_version(c.param("name"), c.param("version")))));
}

std::optional<Response> manifest(Services& s, Ctx& c) {
  return manifest_response(s, c.param("name"), c.param("version"));
}

// The version leaves the catalogue first, so a crash in between leaves at worst an orphaned
// manifest, never a visible version without its chunks. Its manifest and unreferenced chunks
// go on the images executor (which may wait for an import); the answer follows.
std::optional<Response> remove(Services& s, Ctx& c) {
  const auto& name = c.param("name");
  const auto& version = c.param("version");
  auto found = s.store.get_image_version(name, version);
  // Not in the catalogue yet: its upload may still be importing. It stops now.
  if (!found && found.error().code == Errc::kNotFound && s.images &&
      s.images->cancel(name, version)) {
    return no_content();
  }
  auto v = take(std::move(found));
  check(s.store.delete_image_version(name, version, c.who));
  if (s.images) s.images->cancel(name, version);  // a re-upload of it, importing
  if (v.format != "kiln" || !s.images) return no_content();
  s.images->remove(name, version, [respond = c.respond](Status) { respond(no_content()); });
  return std::nullopt;
}

using V = bhttp::verb;
constexpr RouteSpec kRoutes[] = {
    {V::get, "/api/v1/images", Access::kRead, list},
    {V::get, "/api/v1/images/{name}", Access::kRead, versions},
    {V::post, "/api/v1/images/{name}/versions/{version}", Access::kAdmin, create},
    {V::get, "/api/v1/images/{name}/versions/{version}", Access::kRead, get},
    {V::get, "/api/v1/images/{name}/versions/{version}/manifest", Access::kRead, manifest},
    {V::delete_, "/api/v1/images/{name}/versions/{version}", Access::kAdmin, remove},
};

}  // namespace

std::span<const RouteSpec> image_routes() { return kRoutes; }

}  // namespace kiln::api
