#include "agent/options.h"

#include <cerrno>
#include <charconv>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string_view>

#include "agent/disk.h"
#include "agent/http.h"

namespace kiln::agent {

namespace {

Error usage_error(std::string message) { return make_error(Errc::kInvalid, std::move(message)); }

// A whole decimal number in [lo, hi]; `what` names the flag or key in the error.
Result<std::int64_t> parse_number(std::string_view what, std::string_view text, std::int64_t lo,
                                  std::int64_t hi) {
  std::int64_t v = 0;
  const char* end = text.data() + text.size();
  const auto [ptr, ec] = std::from_chars(text.data(), end, v);
  if (text.empty() || ec == std::errc::invalid_argument || ptr != end) {
    return usage_error(std::string(what) + " needs a whole number, got '" + std::string(text) +
                       "'");
  }
  if (ec == std::errc::result_out_of_range || v < lo || v > hi) {
    return usage_error(std::string(what) + " must be between " + std::to_string(lo) + " and " +
                       std::to_string(hi) + ", got '" + std::string(text) + "'");
  }
  return v;
}

std::vector<std::string> split(std::string_view s, char sep) {
  std::vector<std::string> out;
  while (!s.empty()) {
    const auto at = s.find(sep);
    const auto item = s.substr(0, at);
    if (!item.empty()) out.emplace_back(item);
    if (at == std::string_view::npos) break;
    s.remove_prefix(at + 1);
  }
  return out;
}

// The flags that take a value, and what each does with it.
struct Setter {
  std::string_view flag;
  Status (*set)(Options& o, const std::string& v);
};

constexpr std::int64_t kMaxWorkers = 1024, kMaxMemoryMiB = 1 << 20, kMaxRetries = 1000,
                       kMaxTimeoutMs = 3'600'000, kMaxBackoffMs = 600'000;

Status set_retries(Options& o, std::string_view what, const std::string& v) {
  auto n = parse_number(what, v, 0, kMaxRetries);
  if (!n) return n.error();
  o.deploy.retries = static_cast<int>(*n);
  return ok_status();
}

Status set_backoff(Options& o, std::string_view what, const std::string& v) {
  auto n = parse_number(what, v, 0, kMaxBackoffMs);
  if (!n) return n.error();
  o.deploy.backoff = std::chrono::milliseconds(*n);
  return ok_status();
}

const Setter kValueFlags[] = {
    {"--server",
     [](Options& o, const std::string& v) -> Status {
       // Kept as text until the cmdline is read; checked in finish(). Repeated: fallbacks.
       if (o.server.url.empty()) {
         o.server.url = v;
       } else {
         o.fallback_servers.push_back(HttpUrl{.url = v});
       }
       return ok_status();
     }},
    {"--ticket",
     [](Options& o, const std::string& v) -> Status {
       o.ticket = v;
       return ok_status();
     }},
    {"--disk",
     [](Options& o, const std::string& v) -> Status {
       o.disk = v;
       return ok_status();
     }},
    {"--mac",
     [](Options& o, const std::string& v) -> Status {
       o.mac = v;
       return ok_status();
     }},
    {"--ca",
     [](Options& o, const std::string& v) -> Status {
       if (v.empty()) return usage_error("--ca needs a file");
       o.ca_file = v;
       return ok_status();
     }},
    {"--trust-key",
     [](Options& o, const std::string& v) -> Status {
       o.trust_keys.push_back(v);
       return ok_status();
     }},
    {"--mirror",
     [](Options& o, const std::string& v) -> Status {
       o.mirrors.push_back(v);
       return ok_status();
     }},
    {"--workers",
     [](Options& o, const std::string& v) -> Status {
       auto n = parse_number("--workers", v, 0, kMaxWorkers);
       if (!n) return n.error();
       o.deploy.workers = static_cast<int>(*n);
       return ok_status();
     }},
    {"--memory",
     [](Options& o, const std::string& v) -> Status {
       auto n = parse_number("--memory (MiB)", v, 1, kMaxMemoryMiB);
       if (!n) return n.error();
       o.deploy.memory_budget = static_cast<std::uint64_t>(*n) << 20;
       return ok_status();
     }},
    {"--retries",
     [](Options& o, const std::string& v) -> Status { return set_retries(o, "--retries", v); }},
    {"--timeout-ms",
     [](Options& o, const std::string& v) -> Status {
       auto n = parse_number("--timeout-ms", v, 1, kMaxTimeoutMs);
       if (!n) return n.error();
       o.deploy.timeout = std::chrono::milliseconds(*n);
       return ok_status();
     }},
    {"--backoff-ms",
     [](Options& o, const std::string& v) -> Status { return set_backoff(o, "--backoff-ms", v); }},
};

// The text of --after, kept until the mode is known (the cmdline may change it).
struct Pending {
  std::string after;
};

Status apply_cmdline(std::string_view text, Options& o, Pending& p) {
  text = text.substr(0, text.find('\n'));  // the kernel writes one line
  for (const auto& word : split(text, ' ')) {
    const auto eq = word.find('=');
    if (eq == std::string::npos) continue;
    const auto k = word.substr(0, eq), v = word.substr(eq + 1);
    if (k == "kiln.server" && o.server.url.empty()) {
      // kiln.server=URL1,URL2,...: the first, then the cluster's other instances.
      bool first = true;
      for (const auto& u : split(v, ',')) {
        if (u.empty()) continue;
        if (first) {
          o.server.url = std::string(u);
        } else {
          o.fallback_servers.push_back(HttpUrl{.url = std::string(u)});
        }
        first = false;
      }
    }
    if (k == "kiln.ticket" && o.ticket.empty()) o.ticket = v;
    if (k == "kiln.disk" && o.disk.empty()) {
      // The benchmark sink discards the image: never from a boot configuration.
      if (is_sink_target(v))
        return usage_error("kiln.disk cannot be a benchmark sink ('" + v + "')");
      o.disk = v;
    }
    if (k == "kiln.after" && p.after.empty()) p.after = v;
    if (k == "kiln.mirror" && o.mirrors.empty()) o.mirrors = split(v, ',');
    if (k == "kiln.mac" && o.mac.empty()) o.mac = v;
    if (k == "kiln.retries") {
      if (auto st = set_retries(o, "kiln.retries", v); !st) return st;
    }
    if (k == "kiln.backoff_ms") {
      if (auto st = set_backoff(o, "kiln.backoff_ms", v); !st) return st;
    }
    if (k == "kiln.mode") {
      if (v == "discover") {
        o.mode = Mode::kDiscover;
      } else if (v != "deploy") {
        return usage_error("kiln.mode must be deploy or discover, got '" + v + "'");
      }
    }
  }
  return ok_status();
}

// Checks what is required for the mode, and the server URL and --after value.
Status finish(Options& o, const Pending& p) {
  const std::string after = !p.after.empty() ? p.after : o.use_cmdline ? "reboot" : "none";
  if (o.mode == Mode::kDiscover) {
    if (o.server.url.empty() || o.mac.empty())
      return usage_error("--discover needs --server and --mac");
    if (after == "none") {
      o.after = After::kNone;
    } else if (after == "reboot") {
      o.after = After::kReboot;
    } else if (after == "poweroff") {
      o.after = After::kPoweroff;
    } else {
      return usage_error("after discovery, --after must be none, reboot or poweroff, got '" +
                         after + "'");
    }
  } else {
    if (o.server.url.empty() || o.ticket.empty() || o.disk.empty())
      return usage_error("--server, --ticket and --disk are required");
    if (after == "none") {
      o.after = After::kNone;
    } else if (after == "reboot") {
      o.after = After::kReboot;
    } else if (after == "kexec") {
      o.after = After::kKexec;
    } else {
      return usage_error("--after must be none, reboot or kexec, got '" + after + "'");
    }
  }
  auto url = parse_agent_url(o.server.url);
  if (!url) return usage_error("--server: " + url.error().message);
  o.server = std::move(*url);
  for (auto& f : o.fallback_servers) {
    auto u = parse_agent_url(f.url);
    if (!u) return usage_error("--server: " + u.error().message);
    // The session token never travels in the clear after the first server was reached over
    // TLS: a network that breaks the https server must not get it from a plain fallback.
    if (o.server.tls && !u->tls) {
      return usage_error("--server: '" + f.url + "' is plain http but '" + o.server.url +
                         "' is https; every fallback must be https too");
    }
    f = std::move(*u);
  }
  return ok_status();
}

}  // namespace

Result<Options> parse_options(const std::vector<std::string>& args,
                              const CmdlineReader& read_cmdline) {
  Options o;
  Pending p;
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "-h" || a == "--help") {
      Options help;
      help.help = true;
      return help;
    }
    if (a == "--discover") {
      o.mode = Mode::kDiscover;
    } else if (a == "--allow-unsigned") {
      o.allow_unsigned = true;
    } else if (a == "--no-delta") {
      o.deploy.delta = false;
    } else if (a == "--cmdline") {
      o.use_cmdline = true;
      // An optional FILE: the next word, unless it is a flag.
      if (i + 1 < args.size() && args[i + 1].rfind('-', 0) != 0) o.cmdline_path = args[++i];
    } else if (a == "--after") {
      if (i + 1 >= args.size()) return usage_error("--after needs a value");
      p.after = args[++i];
    } else {
      const Setter* setter = nullptr;
      for (const auto& s : kValueFlags) {
        if (s.flag == a) setter = &s;
      }
      if (!setter) return usage_error("unknown argument '" + a + "'");
      if (i + 1 >= args.size()) return usage_error(a + " needs a value");
      if (auto st = setter->set(o, args[++i]); !st) return st.error();
    }
  }
  if (o.use_cmdline) {
    auto text = read_cmdline(o.cmdline_path);
    if (!text) return usage_error("--cmdline: " + text.error().message);
    if (auto st = apply_cmdline(*text, o, p); !st) return st.error();
  }
  if (auto st = finish(o, p); !st) return st.error();
  return o;
}

Result<std::string> read_cmdline_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    return make_error(Errc::kNotFound, "cannot read " + path + ": " + std::strerror(errno));
  }
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

const char* usage_text() {
  return "usage: kiln-agent --server URL --ticket TICKET --disk PATH|smallest|largest|serial=S\n"
         "                  [--trust-key PEM]... [--allow-unsigned] [--mirror URL]...\n"
         "                  [--ca PEM] [--after none|reboot|kexec] [--workers N]\n"
         "                  [--memory MiB]"
         " [--retries N] [--timeout-ms N] [--backoff-ms N] [--no-delta]\n"
         "                  [--cmdline [FILE]]\n"
         "       kiln-agent --discover --server URL --mac MAC [--ca PEM]\n"
         "                  [--after none|reboot|poweroff]\n"
         "       kiln-agent --load-modules DIR   (the initramfs's coldplug)\n"
         "With --cmdline the kernel command line supplies kiln.mode=deploy|discover,\n"
         "kiln.server=, kiln.ticket=, kiln.disk=, kiln.after=, kiln.mac=, kiln.mirror=\n"
         "(comma-separated), kiln.retries= and kiln.backoff_ms=. --discover posts this\n"
         "machine's inventory (CPU, memory, disks, NICs, DMI): a discovered machine becomes "
         "ready.\n"
         "--disk sink:SIZE:STATS is a benchmark and test target, never a machine's disk:\n"
         "the image is fetched and verified, then discarded; STATS gets a digest of what\n"
         "was written (agent/disk.h) and per-chunk latencies.\n"
         "A repeated --server (or kiln.server=URL1,URL2,...) names further kilnd instances\n"
         "of a cluster: a call the first does not answer (or answers 5xx) goes to the next.\n"
         "An https:// server's certificate must chain to the CA in --ca (default\n"
         "/etc/kiln/ca.pem, when present) and name the URL's host or IP address.\n";
}

}  // namespace kiln::agent
