#include "cli/image_commands.h"

#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <functional>
#include <nlohmann/json.hpp>

#include "cli/api_commands.h"
#include "cli/render.h"
#include "core/hex.h"
#include "images/builder.h"
#include "proto/api_types.h"
#include "proto/image_file.h"

namespace kiln::cli {

namespace img = kiln::proto::image;
using Clock = std::chrono::steady_clock;

namespace {

std::string human_bytes(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (b >= 1024 && u < 4) {
    b /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u ? "%.1f %s" : "%.0f %s", b, units[u]);
  return buf;
}

bool parse_size(const std::string& s, std::uint32_t& out) {
  if (s.empty()) return false;
  std::uint64_t mult = 1;
  std::string digits = s;
  const char last = static_cast<char>(std::toupper(static_cast<unsigned char>(s.back())));
  if (last == 'K' || last == 'M') {
    mult = last == 'K' ? 1024 : 1024 * 1024;
    digits.pop_back();
  }
  if (digits.empty() || digits.find_first_not_of("0123456789") != std::string::npos) return false;
  const std::uint64_t v = std::stoull(digits) * mult;
  if (v > UINT32_MAX) return false;
  out = static_cast<std::uint32_t>(v);
  return true;
}

// Progress on a terminal: one line redrawn in place; otherwise a plain line every 5 s.
class ProgressPrinter {
 public:
  explicit ProgressPrinter(std::ostream& err) : err_(err), tty_(::isatty(STDERR_FILENO) == 1) {}
  void operator()(const images::Progress& p) {
    const auto now = Clock::now();
    if (now - last_ < (tty_ ? std::chrono::milliseconds(200) : std::chrono::seconds(5))) return;
    last_ = now;
    const double secs = std::chrono::duration<double>(now - start_).count();
    const double rate = secs > 0 ? static_cast<double>(p.bytes_in) / secs : 0;
    std::string line = "building: " + human_bytes(static_cast<double>(p.bytes_in));
    if (p.total && *p.total > 0) {
      char pct[16];
      std::snprintf(pct, sizeof pct, " (%.0f%%)",
                    100.0 * static_cast<double>(p.bytes_in) / static_cast<double>(*p.total));
      line += std::string(" of ") + human_bytes(static_cast<double>(*p.total)) + pct;
      if (rate > 0) {
        char eta[32];
        std::snprintf(eta, sizeof eta, ", ETA %.0fs",
                      static_cast<double>(*p.total - p.bytes_in) / rate);
        line += eta;
      }
    }
    line += ", " + human_bytes(rate) + "/s, out " + human_bytes(static_cast<double>(p.bytes_out));
    if (tty_) {
      err_ << "\r" << line << "\033[K" << std::flush;
      drawn_ = true;
    } else {
      err_ << line << "\n";
    }
  }
  void done() {
    if (drawn_) err_ << "\r\033[K" << std::flush;
  }

 private:
  std::ostream& err_;
  bool tty_;
  bool drawn_ = false;
  Clock::time_point start_ = Clock::now();
  Clock::time_point last_ = Clock::now();
};

// Chunks by kind: data, raw, zero, unmapped.
std::array<std::size_t, 4> count_kinds(const img::Manifest& m) {
  std::array<std::size_t, 4> n{};
  for (const auto& c : m.chunks) {
    switch (c.kind) {
      case img::ChunkKind::kData:
        ++n[0];
        break;
      case img::ChunkKind::kRaw:
        ++n[1];
        break;
      case img::ChunkKind::kZero:
        ++n[2];
        break;
      case img::ChunkKind::kUnmapped:
        ++n[3];
        break;
    }
  }
  return n;
}

}  // namespace

namespace {

// The builder's options from the command line (errors: the message to print, exit 2).
Result<images::BuildOptions> build_options(const ImageBuildArgs& a) {
  images::BuildOptions o;
  o.input = a.input;
  o.output = a.output;
  o.name = a.name;
  o.version = a.version;
  if (auto s = proto::validate_image_name(a.name); !s) return s.error();
  if (auto s = proto::validate_image_version(a.version); !s) return s.error();
  if (!parse_size(a.chunk_size, o.chunk_size)) {
    return make_error(Errc::kInvalid,
                      "bad --chunk-size '" + a.chunk_size + "' (bytes, or with K/M)");
  }
  o.level = a.level;
  o.threads = a.threads;
  o.free_holes = a.free_holes;
  o.sector_size = a.sector_size;
  o.sign_key = a.sign_key;
  for (const auto& l : a.labels) {
    const auto eq = l.find('=');
    if (eq == std::string::npos || !proto::validate_label_key(l.substr(0, eq)) ||
        !proto::validate_label_value(l.substr(eq + 1))) {
      return make_error(Errc::kInvalid, "bad --label '" + l + "' (key=value)");
    }
    o.labels[l.substr(0, eq)] = l.substr(eq + 1);
  }
  if (!a.boot_kernel.empty()) {
    o.boot = img::BootHints{a.boot_partition, a.boot_kernel, a.boot_initrd, a.boot_cmdline};
  }
  return o;
}

// "built <file>: <name>:<version>, <size> in <stored> (<ratio>), <chunks>, <time>, <rate>".
void print_build_summary(std::ostream& out, const std::string& output, const images::BuildReport& r,
                         double secs) {
  const auto& m = r.manifest;
  const auto kinds = count_kinds(m);
  char line[256];
  std::snprintf(line, sizeof line,
                "built %s: %s:%s, %s in %s (%.1f%%), %zu chunks (%zu data, %zu raw, %zu zero, %zu "
                "unmapped), %.1fs, %s/s%s\n",
                output.c_str(), m.name.c_str(), m.version.c_str(),
                human_bytes(static_cast<double>(m.size)).c_str(),
                human_bytes(static_cast<double>(r.output_bytes)).c_str(),
                100.0 * static_cast<double>(r.output_bytes) / static_cast<double>(m.size),
                m.chunks.size(), kinds[0], kinds[1], kinds[2], kinds[3], secs,
                human_bytes(static_cast<double>(m.size) / std::max(secs, 1e-9)).c_str(),
                r.signed_ ? ", signed" : ", unsigned");
  out << line << "sha256 " << m.sha256 << "\n";
}

// The manifest summary of `image inspect` (`keys_given`: trusted keys were passed with --key).
void print_image_summary(std::ostream& out, const img::PackedImage& image, bool keys_given) {
  const auto& m = image.manifest();
  const auto kinds = count_kinds(m);
  out << "Image:       " << m.name << ":" << m.version << "\n"
      << "Created:     " << m.created_at << "\n"
      << "Size:        " << m.size << " bytes (" << human_bytes(static_cast<double>(m.size))
      << ")\n"
      << "Stored:      " << image.file_size() << " bytes ("
      << human_bytes(static_cast<double>(image.file_size())) << ")\n"
      << "Chunks:      " << m.chunks.size() << " x " << human_bytes(m.chunk_size) << ": "
      << kinds[0] << " data, " << kinds[1] << " raw, " << kinds[2] << " zero, " << kinds[3]
      << " unmapped\n"
      << "Sector size: " << m.sector_size << "\n"
      << "SHA-256:     " << m.sha256 << "\n"
      << "Signed:      "
      << (image.signature().empty() ? "no"
          : !keys_given             ? "signature present, not verified (no --key)"
                                    : "yes (Ed25519, trusted key)")
      << "\n";
  for (const auto& r : m.partition_tables) {
    out << "Partition table region: " << r.offset << "+" << r.length << "\n";
  }
  if (m.boot) {
    out << "Boot:        partition " << m.boot->partition << ", kernel " << m.boot->kernel
        << ", initrd " << m.boot->initrd << ", cmdline \"" << m.boot->cmdline << "\"\n";
  }
  for (const auto& [k, v] : m.labels) out << "Label:       " << k << "=" << v << "\n";
}

}  // namespace

int image_build(const ImageBuildArgs& a, bool json, std::ostream& out, std::ostream& err) {
  auto o = build_options(a);
  if (!o) {
    err << "kiln: " << o.error().message << "\n";
    return 2;
  }
  ProgressPrinter printer(err);
  const auto start = Clock::now();
  auto r = images::build_image(*o, [&](const images::Progress& p) { printer(p); });
  printer.done();
  if (!r) {
    err << "kiln: " << r.error().message << "\n";
    return 2;
  }
  const double secs = std::chrono::duration<double>(Clock::now() - start).count();
  if (json) {
    out << img::to_canonical_json(r->manifest) << "\n";
    return 0;
  }
  print_build_summary(out, a.output, *r, secs);
  return 0;
}

int image_inspect(const std::string& path, const std::vector<std::string>& trusted_keys, bool json,
                  bool quiet, std::ostream& out, std::ostream& err) {
  std::vector<img::Key> keys;
  for (const auto& k : trusted_keys) {
    auto key = img::Key::load_public(k);
    if (!key) {
      err << "kiln: " << key.error().message << "\n";
      return 2;
    }
    keys.push_back(std::move(*key));
  }
  auto image = img::PackedImage::open(path, keys);
  if (!image) {
    err << "kiln: " << image.error().message << "\n";
    return 1;
  }
  if (json) {
    out << image->manifest_bytes() << "\n";
  } else if (!quiet) {
    print_image_summary(out, *image, !keys.empty());
  }
  auto v = img::verify_image(*image, keys);
  if (!v) {
    err << "kiln: " << path << ": " << v.error().message << "\n";
    return 1;
  }
  if (!json) {
    out << "verified: " << v->chunks << " chunks, " << v->payload_bytes << " payload bytes"
        << (v->signature_checked ? ", signature trusted" : "") << "\n";
  }
  return 0;
}

int key_generate(const std::string& prefix, std::ostream& out, std::ostream& err) {
  const std::string priv = prefix + ".pem", pub = prefix + ".pub.pem";
  if (auto s = img::Key::generate(priv, pub); !s) {
    err << "kiln: " << s.error().message << "\n";
    return 2;
  }
  out << "private key " << priv << " (keep it secret), public key " << pub << "\n";
  return 0;
}

// --- commands against kilnd: list, show, register, push, delete ------------------------------

namespace {

using json = nlohmann::json;

int print_image_list(Session& s, const Reply& r) {
  if (s.json_mode()) return s.print_raw(r);
  auto versions = s.decoded_all(items_of(r.body), proto::image_version_from_json);
  if (!versions) return s.failure_code();
  auto t = image_table();
  for (const auto& v : *versions) add_image_row(t, v);
  t.print(s.out());
  return kExitOk;
}

// The body of `image register`, or a usage error.
Result<json> register_body(const Args& a) {
  if (auto st = checked_image(a.image, a.version); !st) return st.error();
  if (a.url.rfind("http://", 0) != 0 && a.url.rfind("https://", 0) != 0) {
    return make_error(Errc::kInvalid, "--url must be an http:// or https:// URL");
  }
  if (!is_sha256_hex(ascii_lower(a.sha256))) {
    return make_error(Errc::kInvalid, "--sha256 must be 64 hex digits");
  }
  if (a.size <= 0) return make_error(Errc::kInvalid, "--size must be a positive number of bytes");
  json body = {{"source_url", a.url}, {"sha256", a.sha256}, {"size_bytes", a.size}};
  if (!a.format.empty()) body["format"] = a.format;
  if (!a.sign_key.empty()) {
    // Signed-only sites (images.trusted_keys) register, and agents with a baked-in key write,
    // only external images signed over exactly these fields.
    auto key = img::Key::load_private(a.sign_key);
    if (!key) return key.error();
    auto sig = key->sign(
        img::external_signing_message(a.image, a.version, a.url, ascii_lower(a.sha256), a.size,
                                      a.format.empty() ? std::string("raw") : a.format));
    if (!sig) return sig.error();
    body["signature"] = hex_encode(*sig);
  }
  if (!a.description.empty()) body["description"] = a.description;
  auto labels = parse_labels(a.labels);
  if (!labels) return labels.error();
  if (!labels->empty()) body["labels"] = std::move(*labels);
  return body;
}

// Upload progress on stderr: on a terminal one line redrawn every 200 ms, otherwise a plain
// line every 5 s; nothing with --json.
class UploadPrinter {
 public:
  UploadPrinter(Session& s, const img::Manifest& m)
      : s_(s),
        what_(m.name + ":" + m.version),
        tty_(::isatty(STDERR_FILENO) == 1 && !s.json_mode()) {}

  void operator()(std::uint64_t sent, std::uint64_t all) {
    const auto now = Clock::now();
    if (sent < all &&
        now - last_ < (tty_ ? std::chrono::milliseconds(200) : std::chrono::seconds(5)))
      return;
    last_ = now;
    const std::string text = line(sent, all, now);
    if (tty_) {
      s_.err() << "\r" << text << "\033[K" << std::flush;
      drawn_ = true;
    } else if (!s_.json_mode()) {
      s_.err() << text << "\n";
    }
    if (sent == all && !s_.json_mode()) {
      if (drawn_) s_.err() << "\n";
      s_.err() << "verifying on the server...\n";
    }
  }

 private:
  std::string line(std::uint64_t sent, std::uint64_t all, Clock::time_point now) const {
    const double secs = std::chrono::duration<double>(now - start_).count();
    const double rate = secs > 0 ? static_cast<double>(sent) / secs : 0;
    std::string eta;
    if (rate > 0 && sent < all) {
      eta = ", ETA " +
            std::to_string(static_cast<long long>(static_cast<double>(all - sent) / rate)) + "s";
    }
    char buf[160];
    std::snprintf(buf, sizeof buf, "uploading %s: %s of %s (%.0f%%), %s/s%s", what_.c_str(),
                  format_bytes(static_cast<std::int64_t>(sent)).c_str(),
                  format_bytes(static_cast<std::int64_t>(all)).c_str(),
                  all ? 100.0 * static_cast<double>(sent) / static_cast<double>(all) : 100.0,
                  format_bytes(static_cast<std::int64_t>(rate)).c_str(), eta.c_str());
    return buf;
  }

  Session& s_;
  const std::string what_;
  const bool tty_;
  bool drawn_ = false;
  const Clock::time_point start_ = Clock::now();
  Clock::time_point last_ = start_ - std::chrono::hours(1);
};

}  // namespace

int image_list(Session& s, const Args&) {
  auto r = s.call("GET", api_path({"images"}));
  if (!r) return s.failure_code();
  return print_image_list(s, *r);
}

int image_show(Session& s, const Args& a) {
  if (a.version.empty()) {
    auto r = s.call("GET", api_path({"images", a.image}));
    if (!r) return s.failure_code();
    return print_image_list(s, *r);
  }
  auto r = s.call("GET", api_path({"images", a.image, "versions", a.version}));
  if (!r) return s.failure_code();
  if (s.json_mode()) return s.print_raw(*r);
  auto v = s.decoded(proto::image_version_from_json(r->body));
  if (!v) return s.failure_code();
  print_image(s.out(), *v);
  return kExitOk;
}

int image_register(Session& s, const Args& a) {
  auto body = register_body(a);
  if (!body) return s.usage(body.error().message);
  auto r = s.call("POST", api_path({"images", a.image, "versions", a.version}), &*body);
  if (!r) return s.failure_code();
  if (s.json_mode()) return s.print_raw(*r);
  auto v = s.decoded(proto::image_version_from_json(r->body));
  if (!v) return s.failure_code();
  const std::string what = v->name + ":" + v->version;
  if (r->status == 200) {
    s.out() << "image " << what << " was already registered with the same metadata\n";
  } else {
    s.out() << "registered image " << what << " (" << v->format << ", "
            << format_bytes(v->size_bytes) << ")\n";
  }
  return kExitOk;
}

int image_push(Session& s, const Args& a) {
  // Read the name and version from the image itself (and refuse a damaged file before
  // sending it); the server verifies everything again.
  auto image = img::PackedImage::open(a.path);
  if (!image) return s.usage(image.error().message);
  const auto& m = image->manifest();
  UploadPrinter printer(s, m);
  // The server verifies every chunk before answering: allow about 100 MB/s for it.
  const auto verify_wait =
      std::chrono::seconds(60 + static_cast<long long>(image->file_size() / 100'000'000));
  auto r = s.upload(api_path({"images", m.name, "versions", m.version}), a.path, std::ref(printer),
                    verify_wait);
  if (!r) return s.failure_code();
  if (s.json_mode()) return s.print_raw(*r);
  auto v = s.decoded(proto::image_version_from_json(r->body));
  if (!v) return s.failure_code();
  const std::string what = v->name + ":" + v->version;
  if (r->status == 200) {
    s.out() << "image " << what << " was already stored with the same content\n";
    return kExitOk;
  }
  // The import's figures travel beside the resource, in "import".
  const auto& imp = r->body.value("import", json::object());
  s.out() << "pushed image " << what << " (" << format_bytes(v->size_bytes) << ", "
          << imp.value("chunks", 0) << " chunks, " << imp.value("new_chunks", 0) << " new, "
          << format_bytes(imp.value("new_bytes", std::int64_t{0})) << " stored"
          << (imp.value("signed", false) ? ", signed" : ", unsigned") << ")\n";
  return kExitOk;
}

int image_delete(Session& s, const Args& a) {
  auto r = s.call("DELETE", api_path({"images", a.image, "versions", a.version}));
  if (!r) return s.failure_code();
  if (s.json_mode()) return s.print_raw(*r);
  s.out() << "deleted image " << a.image << ":" << a.version << "\n";
  return kExitOk;
}

}  // namespace kiln::cli
