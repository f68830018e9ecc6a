#include "cli/image_commands.h"

#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>

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

int image_build(const ImageBuildArgs& a, bool json, std::ostream& out, std::ostream& err) {
  images::BuildOptions o;
  o.input = a.input;
  o.output = a.output;
  o.name = a.name;
  o.version = a.version;
  if (auto s = proto::validate_image_name(a.name); !s) {
    err << "kiln: " << s.error().message << "\n";
    return 2;
  }
  if (auto s = proto::validate_image_version(a.version); !s) {
    err << "kiln: " << s.error().message << "\n";
    return 2;
  }
  if (!parse_size(a.chunk_size, o.chunk_size)) {
    err << "kiln: bad --chunk-size '" << a.chunk_size << "' (bytes, or with K/M)\n";
    return 2;
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
      err << "kiln: bad --label '" << l << "' (key=value)\n";
      return 2;
    }
    o.labels[l.substr(0, eq)] = l.substr(eq + 1);
  }
  if (!a.boot_kernel.empty()) {
    o.boot = img::BootHints{a.boot_partition, a.boot_kernel, a.boot_initrd, a.boot_cmdline};
  }
  ProgressPrinter printer(err);
  const auto start = Clock::now();
  auto r = images::build_image(o, [&](const images::Progress& p) { printer(p); });
  printer.done();
  if (!r) {
    err << "kiln: " << r.error().message << "\n";
    return 2;
  }
  const double secs = std::chrono::duration<double>(Clock::now() - start).count();
  const auto& m = r->manifest;
  if (json) {
    out << img::to_canonical_json(m) << "\n";
    return 0;
  }
  const auto kinds = count_kinds(m);
  char line[256];
  std::snprintf(line, sizeof line,
                "built %s: %s:%s, %s in %s (%.1f%%), %zu chunks (%zu data, %zu raw, %zu zero, %zu "
                "unmapped), %.1fs, %s/s%s\n",
                a.output.c_str(), m.name.c_str(), m.version.c_str(),
                human_bytes(static_cast<double>(m.size)).c_str(),
                human_bytes(static_cast<double>(r->output_bytes)).c_str(),
                100.0 * static_cast<double>(r->output_bytes) / static_cast<double>(m.size),
                m.chunks.size(), kinds[0], kinds[1], kinds[2], kinds[3], secs,
                human_bytes(static_cast<double>(m.size) / std::max(secs, 1e-9)).c_str(),
                r->signed_ ? ", signed" : ", unsigned");
  out << line << "sha256 " << m.sha256 << "\n";
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
  const auto& m = image->manifest();
  if (json) {
    out << image->manifest_bytes() << "\n";
  } else if (!quiet) {
    const auto kinds = count_kinds(m);
    out << "Image:       " << m.name << ":" << m.version << "\n"
        << "Created:     " << m.created_at << "\n"
        << "Size:        " << m.size << " bytes (" << human_bytes(static_cast<double>(m.size))
        << ")\n"
        << "Stored:      " << image->file_size() << " bytes ("
        << human_bytes(static_cast<double>(image->file_size())) << ")\n"
        << "Chunks:      " << m.chunks.size() << " x " << human_bytes(m.chunk_size) << ": "
        << kinds[0] << " data, " << kinds[1] << " raw, " << kinds[2] << " zero, " << kinds[3]
        << " unmapped\n"
        << "Sector size: " << m.sector_size << "\n"
        << "SHA-256:     " << m.sha256 << "\n"
        << "Signed:      "
        << (image->signature().empty() ? "no"
            : keys.empty()             ? "signature present, not verified (no --key)"
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

}  // namespace kiln::cli
