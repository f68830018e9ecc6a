#include "daemon/config.h"

#include <arpa/inet.h>

#include <algorithm>
#include <charconv>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>
#include <stdexcept>
#include <type_traits>

#include "core/url.h"
#include "store/db.h"

namespace kiln::daemon {

using json = nlohmann::json;

std::string Config::effective_db_path() const {
  return db_path.empty() ? data_dir + "/kiln.db" : db_path;
}
std::string Config::effective_images_dir() const {
  return images_dir.empty() ? data_dir + "/images" : images_dir;
}
std::string Config::effective_secrets_key_file() const {
  return secrets_key_file.empty() ? data_dir + "/secrets.key" : secrets_key_file;
}
std::string Config::effective_files_dir() const {
  return files_dir.empty() ? data_dir + "/files" : files_dir;
}

namespace {

[[noreturn]] void refuse(std::string message) { throw std::runtime_error(std::move(message)); }

[[noreturn]] void wrong_type(std::string_view key, std::string_view want, const json& got) {
  refuse(std::string(key) + " must be " + std::string(want) + ", got " + got.dump());
}

// --- typed values ---------------------------------------------------------------------------

template <typename T>
constexpr std::string_view type_name() {
  if constexpr (std::is_same_v<T, bool>) {
    return "a boolean";
  } else if constexpr (std::is_integral_v<T>) {
    return "an integer";
  } else if constexpr (std::is_same_v<T, std::string>) {
    return "a string";
  } else {
    static_assert(std::is_same_v<T, std::vector<std::string>>);
    return "a list of strings";
  }
}

// `v` as a T; throws naming `key` on a wrong type or (integers) a value T cannot hold.
template <typename T>
T as(const json& v, std::string_view key) {
  if constexpr (std::is_same_v<T, bool>) {
    if (!v.is_boolean()) wrong_type(key, type_name<T>(), v);
    return v.get<bool>();
  } else if constexpr (std::is_integral_v<T>) {
    using Limits = std::numeric_limits<T>;
    const std::string range =
        "an integer within " + std::to_string(Limits::min()) + ".." + std::to_string(Limits::max());
    if (!v.is_number_integer()) wrong_type(key, range, v);
    if (v.is_number_unsigned()) {
      const auto u = v.get<std::uint64_t>();
      if (u > static_cast<std::uint64_t>(Limits::max())) wrong_type(key, range, v);
      return static_cast<T>(u);
    }
    const auto i = v.get<std::int64_t>();
    if (i < static_cast<std::int64_t>(Limits::min()) ||
        (i > 0 && static_cast<std::uint64_t>(i) > static_cast<std::uint64_t>(Limits::max()))) {
      wrong_type(key, range, v);
    }
    return static_cast<T>(i);
  } else if constexpr (std::is_same_v<T, std::string>) {
    if (!v.is_string()) wrong_type(key, type_name<T>(), v);
    return v.get<std::string>();
  } else {
    if (!v.is_array()) wrong_type(key, type_name<T>(), v);
    T out;
    for (const auto& e : v) {
      if (!e.is_string()) wrong_type(key, type_name<T>(), v);
      out.push_back(e.get<std::string>());
    }
    return out;
  }
}

// A setting held as is in one member: `ref(c)` names it for Config& and const Config&.
template <typename Ref>
ConfigField value(std::string_view key, std::string_view doc, Ref ref, json example = nullptr,
                  std::string_view flag = "") {
  using T = std::remove_cvref_t<decltype(ref(std::declval<Config&>()))>;
  return ConfigField{
      .key = key,
      .type = type_name<T>(),
      .doc = doc,
      .flag = flag,
      .parse = [key, ref](const json& v, Config& c) { ref(c) = as<T>(v, key); },
      .dump = [ref](const Config& c) { return json(ref(c)); },
      .example = std::move(example),
  };
}

// A duration member (std::chrono) written in the file as a count of `Unit`.
template <typename Unit, typename Ref>
ConfigField duration(std::string_view key, std::string_view doc, Ref ref) {
  return ConfigField{
      .key = key,
      .type = "an integer",
      .doc = doc,
      .parse = [key, ref](const json& v, Config& c) { ref(c) = Unit(as<int>(v, key)); },
      .dump =
          [ref](const Config& c) { return json(std::chrono::duration_cast<Unit>(ref(c)).count()); },
  };
}

// A directory or file whose empty value means a default derived from data_dir.
template <typename Ref>
ConfigField derived_path(std::string_view key, std::string_view doc, Ref ref,
                         std::string (Config::*effective)() const, std::string_view flag = "") {
  ConfigField f = value(key, doc, ref, "", flag);
  f.derived_default = true;
  f.dump = [effective](const Config& c) { return json((c.*effective)()); };
  return f;
}

// One of a fixed set of words.
ConfigField word(std::string_view key, std::string_view doc, std::string_view type,
                 std::function<void(const std::string&, Config&)> set,
                 std::function<std::string(const Config&)> get) {
  return ConfigField{
      .key = key,
      .type = type,
      .doc = doc,
      .parse = [key, set](const json& v, Config& c) { set(as<std::string>(v, key), c); },
      .dump = [get](const Config& c) { return json(get(c)); },
  };
}

// --- values with a syntax of their own --------------------------------------------------------

// "host:port" ("[v6]:port"); the host is not resolved.
HostPort listen_address(std::string_view key, const json& v) {
  auto hp = parse_host_port(as<std::string>(v, key));
  if (!hp) refuse(std::string(key) + ": " + hp.error().message);
  return *hp;
}

std::string host_port_text(const std::string& host, std::uint16_t port) {
  const std::string h = host.find(':') != std::string::npos ? "[" + host + "]" : host;
  return h + ":" + std::to_string(port);
}

std::string local_boot_name(boot::LocalBoot lb) {
  return lb == boot::LocalBoot::kSanboot ? "sanboot" : "exit";
}

ConfigField local_boot(std::string_view key, std::string_view doc,
                       boot::LocalBoot provision::BootOptions::*m) {
  return word(
      key, doc, "sanboot or exit",
      [key, m](const std::string& s, Config& c) {
        auto lb = boot::parse_local_boot(s);
        if (!lb) refuse(std::string(key) + " must be sanboot or exit");
        c.boot.*m = *lb;
      },
      [m](const Config& c) { return local_boot_name(c.boot.*m); });
}

dhcp::Subnet parse_subnet(const json& sj) {
  if (!sj.is_object()) wrong_type("dhcp.subnets[]", "an object", sj);
  for (const auto& [k, _] : sj.items()) {
    static const std::set<std::string> kKeys = {"subnet", "pool",   "router",
                                                "dns",    "domain", "lease_time_s"};
    if (!kKeys.count(k)) refuse("unknown key 'dhcp.subnets[]." + k + "'");
  }
  dhcp::Subnet sn;
  if (!sj.contains("subnet")) refuse("dhcp.subnets[] needs a subnet");
  if (!sj.contains("pool")) refuse("dhcp.subnets[] needs a pool");
  const auto cidr = as<std::string>(sj["subnet"], "dhcp.subnets[].subnet");
  if (!dhcp::parse_cidr(cidr, sn.network, sn.prefix)) {
    refuse("dhcp: bad subnet '" + cidr + "' (want a.b.c.d/n)");
  }
  const auto pool = as<std::string>(sj["pool"], "dhcp.subnets[].pool");
  const auto dash = pool.find('-');
  auto first = dhcp::parse_ipv4(pool.substr(0, dash));
  auto last = dash == std::string::npos ? std::nullopt : dhcp::parse_ipv4(pool.substr(dash + 1));
  if (!first || !last || dhcp::to_u32(*last) < dhcp::to_u32(*first) || !sn.contains(*first) ||
      !sn.contains(*last)) {
    refuse("dhcp: pool '" + pool + "' must be first-last inside " + cidr);
  }
  sn.pool_first = *first;
  sn.pool_last = *last;
  // "" is how --print-config writes a subnet without a router.
  if (auto r = sj.find("router"); r != sj.end() && !as<std::string>(*r, "router").empty()) {
    auto ip = dhcp::parse_ipv4(r->get<std::string>());
    if (!ip) refuse("dhcp: bad router in " + cidr);
    sn.router = *ip;
  }
  if (auto d = sj.find("dns"); d != sj.end()) {
    for (const auto& dn : as<std::vector<std::string>>(*d, "dhcp.subnets[].dns")) {
      auto ip = dhcp::parse_ipv4(dn);
      if (!ip) refuse("dhcp: bad dns server '" + dn + "'");
      sn.dns.push_back(*ip);
    }
  }
  if (auto d = sj.find("domain"); d != sj.end()) {
    sn.domain = as<std::string>(*d, "dhcp.subnets[].domain");
  }
  if (auto l = sj.find("lease_time_s"); l != sj.end()) {
    sn.lease_time_s = as<std::uint32_t>(*l, "dhcp.subnets[].lease_time_s");
  }
  if (sn.lease_time_s < 60) refuse("dhcp: lease_time_s must be >= 60");
  return sn;
}

// One images.mirrors entry: {"subnet": "10.1.0.0/24", "urls": ["http://cache:8080"]}.
api::MirrorRule parse_mirror_rule(const json& mj) {
  if (!mj.is_object()) wrong_type("images.mirrors[]", "an object {subnet, urls}", mj);
  for (const auto& [k, _] : mj.items()) {
    if (k != "subnet" && k != "urls") refuse("unknown key 'images.mirrors[]." + k + "'");
  }
  if (!mj.contains("subnet") || !mj.contains("urls")) {
    refuse("images.mirrors[] needs a subnet and urls, got " + mj.dump());
  }
  auto rule =
      api::make_mirror_rule(as<std::string>(mj["subnet"], "images.mirrors[].subnet"),
                            as<std::vector<std::string>>(mj["urls"], "images.mirrors[].urls"));
  if (!rule) refuse("images." + rule.error().message);
  return std::move(*rule);
}

json dump_subnet(const dhcp::Subnet& sn) {
  json dns = json::array();
  for (const auto& d : sn.dns) dns.push_back(dhcp::to_string(d));
  return {{"subnet", dhcp::to_string(sn.network) + "/" + std::to_string(sn.prefix)},
          {"pool", dhcp::to_string(sn.pool_first) + "-" + dhcp::to_string(sn.pool_last)},
          {"router", sn.router ? dhcp::to_string(*sn.router) : ""},
          {"dns", dns},
          {"domain", sn.domain},
          {"lease_time_s", sn.lease_time_s}};
}

std::string ra_prefix_text(const dhcp::RaPrefix& p) {
  char buf[INET6_ADDRSTRLEN];
  ::inet_ntop(AF_INET6, p.prefix.data(), buf, sizeof buf);
  return std::string(buf) + "/" + std::to_string(p.length);
}

// --- the table -------------------------------------------------------------------------------

std::vector<ConfigField> make_fields() {
  using std::chrono::milliseconds;
  using std::chrono::seconds;
  std::vector<ConfigField> f;
  // Top level.
  f.push_back(value(
      "data_dir", "state directory; the other paths default under it",
      [](auto& c) -> auto& { return c.data_dir; }, "/var/lib/kiln", "--data-dir"));
  f.push_back(derived_path(
      "db_path", "SQLite database; \"\" = <data_dir>/kiln.db",
      [](auto& c) -> auto& { return c.db_path; }, &Config::effective_db_path, "--db"));
  f.push_back(value(
      "db_url",
      "PostgreSQL database shared by several kilnd (postgresql://user@host/db or a libpq "
      "conninfo); \"\" = SQLite at db_path",
      [](auto& c) -> auto& { return c.db_url; }));
  // --print-config goes to terminals and tickets: a password in the URL is masked (keep it in
  // ~/.pgpass or PGPASSFILE, docs/multi-rack.md).
  f.back().dump = [](const Config& c) { return json(store::redact_db_url(c.db_url)); };
  f.push_back(derived_path(
      "files_dir", "served at /files/ (and the TFTP root); \"\" = <data_dir>/files",
      [](auto& c) -> auto& { return c.files_dir; }, &Config::effective_files_dir, "--files-dir"));
  f.push_back(value(
      "threads", "io threads; 0 = number of cores", [](auto& c) -> auto& { return c.threads; },
      nullptr, "--threads"));
  f.push_back(value(
      "log_level", "trace, debug, info, warn, error", [](auto& c) -> auto& { return c.log_level; },
      nullptr, "--log-level"));
  f.push_back(value(
      "shutdown_grace_ms", "in-flight requests get this long at SIGTERM",
      [](auto& c) -> auto& { return c.shutdown_grace_ms; }));
  f.push_back(value(
      "ready_file", "written with the base URL once listening",
      [](auto& c) -> auto& { return c.ready_file; }, nullptr, "--ready-file"));
  // images
  f.push_back(derived_path(
      "images.dir", "the content-addressed chunk store; \"\" = <data_dir>/images",
      [](auto& c) -> auto& { return c.images_dir; }, &Config::effective_images_dir));
  f.push_back(value(
      "images.trusted_keys",
      "Ed25519 public keys (PEM files); when set, unsigned uploads are refused",
      [](auto& c) -> auto& { return c.trusted_keys; }));
  f.push_back(value(
      "images.max_upload_bytes", "largest .kiln upload (1 TiB)",
      [](auto& c) -> auto& { return c.http.upload.limit; }));
  f.push_back(value(
      "images.max_image_bytes",
      "largest declared (uncompressed) image size accepted (1 TiB); 0 = no limit",
      [](auto& c) -> auto& { return c.image_limits.max_image_bytes; }));
  f.push_back(value(
      "images.max_chunks", "most chunks in an image's manifest; 0 = no limit",
      [](auto& c) -> auto& { return c.image_limits.max_chunks; }));
  f.push_back(value(
      "images.max_concurrent_uploads",
      "uploads received or importing at once; past it: 503 + Retry-After; 0 = no limit",
      [](auto& c) -> auto& { return c.image_limits.max_concurrent_uploads; }));
  f.push_back(value(
      "images.min_free_bytes",
      "free bytes the images filesystem keeps after an upload (2 x its length); else 507",
      [](auto& c) -> auto& { return c.image_limits.min_free_bytes; }));
  // store
  f.push_back(word(
      "store.synchronous", "full: fsync each commit; normal: survive crashes only",
      "full or normal",
      [](const std::string& s, Config& c) {
        if (s != "full" && s != "normal") refuse("store.synchronous must be full or normal");
        c.db_synchronous_full = s == "full";
      },
      [](const Config& c) { return c.db_synchronous_full ? "full" : "normal"; }));
  f.push_back(value(
      "store.busy_timeout_ms", "how long a write waits for the database lock",
      [](auto& c) -> auto& { return c.db_busy_timeout_ms; }));
  // http
  f.push_back(ConfigField{
      .key = "http.listen",
      .type = "host:port",
      .doc = "HTTP listen address host:port (IPv6 in brackets); port 0 = ephemeral",
      .flag = "-l,--listen",
      .parse =
          [](const json& v, Config& c) {
            const auto hp = listen_address("http.listen", v);
            c.http.address = hp.host;
            c.http.port = hp.port;
          },
      .dump = [](const Config& c) { return json(host_port_text(c.http.address, c.http.port)); },
      .example = "0.0.0.0:8080",
  });
  f.push_back(value(
      "http.body_limit", "largest request body (bytes) apart from uploads",
      [](auto& c) -> auto& { return c.http.body_limit; }));
  f.push_back(value(
      "http.header_limit", "largest request header (bytes)",
      [](auto& c) -> auto& { return c.http.header_limit; }));
  f.push_back(duration<milliseconds>(
      "http.read_timeout_ms", "a whole request, and the keep-alive idle time",
      [](auto& c) -> auto& { return c.http.read_timeout; }));
  f.push_back(duration<milliseconds>(
      "http.write_timeout_ms", "a response making no progress",
      [](auto& c) -> auto& { return c.http.write_timeout; }));
  f.push_back(value(
      "http.max_connections", "concurrent connections",
      [](auto& c) -> auto& { return c.http.max_connections; }));
  f.push_back(value(
      "http.max_connections_per_address",
      "concurrent connections from one client address (past it: 503); 0 = no limit",
      [](auto& c) -> auto& { return c.http.max_connections_per_address; }));
  f.push_back(value(
      "http.tls_cert", "PEM certificate chain; with tls_key, the listener speaks HTTPS",
      [](auto& c) -> auto& { return c.http.tls_cert_file; }, nullptr, "--tls-cert"));
  f.push_back(value(
      "http.tls_key", "PEM private key for tls_cert",
      [](auto& c) -> auto& { return c.http.tls_key_file; }, nullptr, "--tls-key"));
  f.push_back(ConfigField{
      .key = "http.tls_listen",
      .type = "host:port or \"\"",
      .doc = "HTTPS listener host:port beside the plain one (tls_cert/tls_key): scripts, kernel, "
             "initrd, agent API; chunks stay plain; \"\" = none (e.g. 0.0.0.0:8443)",
      .flag = "--tls-listen",
      .parse =
          [](const json& v, Config& c) {
            if (as<std::string>(v, "http.tls_listen").empty()) {
              c.http.tls_listen.reset();
              return;
            }
            const auto hp = listen_address("http.tls_listen", v);
            c.http.tls_listen = http::ServerOptions::Listen{hp.host, hp.port};
          },
      .dump =
          [](const Config& c) {
            return json(c.http.tls_listen
                            ? host_port_text(c.http.tls_listen->address, c.http.tls_listen->port)
                            : "");
          },
  });
  // boot: the iPXE scripts served at /boot/<mac>.ipxe (and boot/<mac>.ipxe over TFTP)
  f.push_back(value(
      "boot.roots", "more directories of boot files, searched after files_dir",
      [](auto& c) -> auto& { return c.boot_roots; }, json::array({"/usr/lib/ipxe"})));
  f.push_back(ConfigField{
      .key = "boot.server_url",
      .type = "a string",
      .doc = "how machines reach kilnd; \"\" = dhcp.boot.http_base, else http.listen",
      .parse =
          [](const json& v, Config& c) {
            auto url = as<std::string>(v, "boot.server_url");
            while (!url.empty() && url.back() == '/') url.pop_back();
            c.boot.server_url = std::move(url);
          },
      .dump = [](const Config& c) { return json(c.boot.server_url); },
      .example = "http://10.0.0.1:8080",
  });
  f.push_back(ConfigField{
      .key = "boot.https_url",
      .type = "a string",
      .doc = "how machines reach http.tls_listen; \"\" = https://<boot.server_url's "
             "host>:<tls_listen port>, else tls_listen",
      .parse =
          [](const json& v, Config& c) {
            auto url = as<std::string>(v, "boot.https_url");
            while (!url.empty() && url.back() == '/') url.pop_back();
            if (!url.empty() && url.rfind("https://", 0) != 0) {
              refuse("boot.https_url must start with https://, got '" + url + "'");
            }
            c.boot_https_url = std::move(url);
          },
      .dump = [](const Config& c) { return json(c.boot_https_url); },
  });
  f.push_back(value(
      "boot.kernel", "agent kernel, a boot artifact name (deploy/build-initramfs.sh)",
      [](auto& c) -> auto& { return c.boot.kernel; }));
  f.push_back(value(
      "boot.initrd", "agent initramfs, a boot artifact name",
      [](auto& c) -> auto& { return c.boot.initrd; }));
  f.push_back(value(
      "boot.cmdline", "extra agent kernel arguments (the last console= gets /init's output)",
      [](auto& c) -> auto& { return c.boot.cmdline; }));
  f.push_back(value(
      "boot.disk", "target disk hint (path, smallest, largest, serial=...); label kiln.disk wins",
      [](auto& c) -> auto& { return c.boot.disk; }));
  f.push_back(value(
      "boot.after", "after a deployment: reboot | kexec (the image's boot hints)",
      [](auto& c) -> auto& { return c.boot.after; }));
  f.push_back(value(
      "boot.after_discover", "after discovery: reboot (then wait for an assignment) | poweroff",
      [](auto& c) -> auto& { return c.boot.after_discover; }));
  f.push_back(local_boot("boot.localboot_bios",
                         "deployed BIOS machines: sanboot --drive 0x80 | exit (to the next device)",
                         &provision::BootOptions::local_bios));
  f.push_back(local_boot("boot.localboot_efi", "deployed UEFI machines: sanboot | exit",
                         &provision::BootOptions::local_efi));
  f.push_back(value(
      "boot.poll_s", "a ready machine (or one waiting for an operator) asks again this often",
      [](auto& c) -> auto& { return c.boot.poll_s; }));
  f.push_back(value(
      "boot.retry_s", "a script whose agent download failed asks again after this",
      [](auto& c) -> auto& { return c.boot.retry_s; }));
  f.push_back(value(
      "boot.retries", "automatic retries of a failed deployment before failed.ipxe",
      [](auto& c) -> auto& { return c.boot.retries; }));
  f.push_back(value(
      "boot.discover_unknown", "register unknown MACs as discovered and boot them into discovery",
      [](auto& c) -> auto& { return c.boot.discover_unknown; }));
  f.push_back(value(
      "boot.max_discovered", "stop registering unknown MACs beyond this many discovered",
      [](auto& c) -> auto& { return c.boot.max_discovered; }));
  f.push_back(value(
      "boot.discovery",
      "open: new machines boot into discovery at once | approve: they wait for an operator",
      [](auto& c) -> auto& { return c.boot.discovery; }));
  f.push_back(value(
      "boot.discovery_per_minute", "new machines registered per minute at most (0: no limit)",
      [](auto& c) -> auto& { return c.boot.discovery_per_minute; }));
  f.push_back(value(
      "boot.discovery_per_minute_per_address",
      "... and at most this many from one requester address (0: no limit)",
      [](auto& c) -> auto& { return c.boot.discovery_per_minute_per_address; }));
  f.push_back(value(
      "boot.scripts_dir", "directory of *.ipxe overriding the built-in templates",
      [](auto& c) -> auto& { return c.boot.scripts_dir; }));
  f.push_back(value(
      "images.chunks_require_token",
      "serve /v1/chunks/ to agent sessions only (private, not cacheable; images hold no secrets)",
      [](auto& c) -> auto& { return c.api.chunks_require_token; }));
  f.push_back(ConfigField{
      .key = "images.mirrors",
      .type = "a list of {subnet, urls}",
      .doc = "rack caches for chunks: an agent whose address is in subnet gets urls (most "
             "specific subnet wins; [] = none) and falls back to kilnd",
      .parse =
          [](const json& v, Config& c) {
            if (!v.is_array()) wrong_type("images.mirrors", "a list of {subnet, urls}", v);
            c.api.mirrors.clear();
            for (const auto& mj : v) c.api.mirrors.push_back(parse_mirror_rule(mj));
            for (std::size_t i = 0; i < c.api.mirrors.size(); ++i) {
              for (std::size_t k = 0; k < i; ++k) {
                if (c.api.mirrors[k].network == c.api.mirrors[i].network &&
                    c.api.mirrors[k].prefix == c.api.mirrors[i].prefix) {
                  refuse("images.mirrors: subnet " + c.api.mirrors[i].subnet +
                         " is listed twice (as " + c.api.mirrors[k].subnet + ")");
                }
              }
            }
          },
      .dump =
          [](const Config& c) {
            json a = json::array();
            for (const auto& r : c.api.mirrors)
              a.push_back({{"subnet", r.subnet}, {"urls", r.urls}});
            return a;
          },
      .example = json::array({{{"subnet", "10.0.12.0/24"}, {"urls", {"http://10.0.12.2:8080"}}},
                              {{"subnet", "10.0.13.0/24"}, {"urls", {"http://10.0.13.2:8080"}}}}),
  });
  f.push_back(value(
      "cluster.peers",
      "the other kilnd instances (http://host:port, or https:// checked against "
      "cluster.ca_file): missing chunks and manifests are fetched from them (verified), and "
      "agents get them as fallback servers (an agent booted over https only the https ones)",
      [](auto& c) -> auto& { return c.cluster.peers; },
      json::array({"http://10.0.12.3:8080", "http://10.0.13.2:8080"})));
  f.push_back(value(
      "cluster.upstream",
      "an HTTP cache or kilnd asked for a missing chunk or manifest after the peers (\"\": none)",
      [](auto& c) -> auto& { return c.cluster.upstream; }));
  f.push_back(value(
      "cluster.ca_file",
      "CA (PEM) that https:// peers' and upstream's certificates must chain to (\"\": the "
      "system's trust store)",
      [](auto& c) -> auto& { return c.cluster.ca_file; }));
  f.push_back(value(
      "cluster.token_file",
      "file holding the secret every instance shares (peer fetches send it; needed with peers)",
      [](auto& c) -> auto& { return c.cluster_token_file; }, "/etc/kiln/cluster.token"));
  f.push_back(duration<milliseconds>(
      "cluster.fetch_timeout_ms", "one request to a peer or the upstream, whole",
      [](auto& c) -> auto& { return c.cluster.timeout; }));
  f.push_back(value(
      "boot.max_agent_boots",
      "a deployment whose agent opened this many sessions without a result fails at the next",
      [](auto& c) -> auto& { return c.api.max_agent_boots; }));
  f.push_back(value(
      "boot.require_lease",
      "fail closed: a MAC without a bound lease from kilnd's DHCP gets no script, its agent no "
      "session (authoritative DHCP only)",
      [](auto& c) -> auto& { return c.boot.require_lease; }));
  f.push_back(value(
      "boot.bind_to_lease",
      "a MAC leased by kilnd's DHCP gets its script only at its leased address",
      [](auto& c) -> auto& { return c.boot.bind_to_lease; }));
  f.push_back(duration<seconds>(
      "boot.token_ttl_s", "a deploy script's boot ticket expires (or ends with its deployment)",
      [](auto& c) -> auto& { return c.boot.token_ttl; }));
  f.push_back(value(
      "cloud_init.max_user_data_bytes",
      "largest user-data (and vendor-data) a configuration document may hold, in bytes",
      [](auto& c) -> auto& { return c.api.max_user_data_bytes; }));
  f.push_back(ConfigField{
      .key = "boot.instance_url",
      .type = "a string",
      .doc = "where deployed OSes confirm their boot (POST .../api/v1/instance/booted); "
             "\"\" = the agent's server URL",
      .parse =
          [](const json& v, Config& c) {
            auto url = as<std::string>(v, "boot.instance_url");
            if (!url.empty() && !url.starts_with("http://") && !url.starts_with("https://")) {
              refuse("boot.instance_url must start with http:// or https://, got '" + url + "'");
            }
            while (url.ends_with("/")) url.pop_back();
            c.api.instance_url = url;
          },
      .dump = [](const Config& c) { return json(c.api.instance_url); },
  });
  f.push_back(duration<seconds>(
      "boot.deadlines.written_s",
      "the image must be written within this long of kilnd's power-on (0: no deadline)",
      [](auto& c) -> auto& { return c.power.written_deadline; }));
  f.push_back(duration<seconds>(
      "boot.deadlines.booted_s",
      "the deployed OS must confirm its boot within this long of being written (0: none)",
      [](auto& c) -> auto& { return c.power.booted_deadline; }));
  f.push_back(value(
      "boot.deadlines.retries",
      "a missed deadline power-cycles the machine (BMC) this many times before it fails",
      [](auto& c) -> auto& { return c.power.deadline_retries; }));
  f.push_back(duration<seconds>(
      "boot.deadlines.startup_grace_s",
      "after kilnd starts, deadlines are first checked this late (OSes that could not confirm "
      "while it was down get a chance)",
      [](auto& c) -> auto& { return c.power.startup_grace; }));
  f.push_back(value(
      "boot.auto_rollback",
      "a deployment failed by a deadline rolls the machine back to its last booted version",
      [](auto& c) -> auto& { return c.power.auto_rollback; }));
  f.push_back(duration<milliseconds>(
      "rollouts.tick_ms",
      "how often the rollout engine drives unfinished rollouts (it also runs at once when one "
      "is made or acted on)",
      [](auto& c) -> auto& { return c.rollouts.tick; }));
  // power
  f.push_back(value(
      "power.max_concurrent", "BMC operations at once (the rest queue)",
      [](auto& c) -> auto& { return c.power.max_concurrent; }));
  f.push_back(value(
      "power.reboot_on_assign",
      "assignments and rollbacks reboot machines that have a BMC unless they say reboot=false",
      [](auto& c) -> auto& { return c.power.reboot_on_assign; }));
  f.push_back(duration<milliseconds>(
      "power.timeout_ms", "one BMC request's timeout",
      [](auto& c) -> auto& { return c.bmc_timeout; }));
  f.push_back(value(
      "power.retries", "extra attempts of a BMC request after a timeout, 5xx or stale ETag",
      [](auto& c) -> auto& { return c.bmc_retries; }));
  f.push_back(derived_path(
      "secrets.key_file",
      "AES-256 key sealing BMC credentials at rest (created 0600 at first start); default "
      "<data_dir>/secrets.key",
      [](auto& c) -> auto& { return c.secrets_key_file; }, &Config::effective_secrets_key_file));
  // ra
  f.push_back(value(
      "ra.interfaces", "answer router solicitations on these interfaces only; [] = off",
      [](auto& c) -> auto& { return c.ra.interfaces; }, json::array({"eth1"})));
  f.push_back(value(
      "ra.router_lifetime_s", "0: kilnd is not a default router",
      [](auto& c) -> auto& { return c.ra.router_lifetime_s; }));
  f.push_back(ConfigField{
      .key = "ra.prefixes",
      .type = "a list of IPv6 prefixes",
      .doc = "on-link prefixes, not for SLAAC, e.g. [\"fd00:0:0:12::/64\"]",
      .parse =
          [](const json& v, Config& c) {
            c.ra.prefixes.clear();
            for (const auto& p : as<std::vector<std::string>>(v, "ra.prefixes")) {
              auto parsed = dhcp::parse_ra_prefix(p);
              if (!parsed) refuse("ra.prefixes: " + parsed.error().message);
              c.ra.prefixes.push_back(*parsed);
            }
          },
      .dump =
          [](const Config& c) {
            json a = json::array();
            for (const auto& p : c.ra.prefixes) a.push_back(ra_prefix_text(p));
            return a;
          },
  });
  f.push_back(value(
      "ra.max_per_second", "answers per interface and second",
      [](auto& c) -> auto& { return c.ra.max_per_second; }));
  // tftp
  f.push_back(ConfigField{
      .key = "tftp.listen",
      .type = "host:port or \"\"",
      .doc = "TFTP listen address host:port, \"\" = off; the root is files_dir, then boot.roots",
      .flag = "--tftp-listen",
      .parse =
          [](const json& v, Config& c) {
            const auto text = as<std::string>(v, "tftp.listen");
            c.tftp_enabled = !text.empty();
            if (!c.tftp_enabled) return;
            const auto hp = listen_address("tftp.listen", v);
            c.tftp.address = hp.host;
            c.tftp.port = hp.port;
          },
      .dump =
          [](const Config& c) {
            return json(c.tftp_enabled ? host_port_text(c.tftp.address, c.tftp.port) : "");
          },
      .example = "0.0.0.0:69",
  });
  f.push_back(value(
      "tftp.threads", "TFTP's own threads; 0 = number of cores",
      [](auto& c) -> auto& { return c.tftp.threads; }));
  f.push_back(value(
      "tftp.max_transfers", "concurrent transfers",
      [](auto& c) -> auto& { return c.tftp.max_transfers; }));
  f.push_back(value(
      "tftp.max_per_client", "concurrent transfers per client address",
      [](auto& c) -> auto& { return c.tftp.max_per_client; }));
  f.push_back(value(
      "tftp.max_request_bytes",
      "larger read/write requests get ERROR 4 unparsed (RFC 2347: 512; 512..65468)",
      [](auto& c) -> auto& { return c.tftp.limits.max_request_bytes; }));
  f.push_back(value(
      "tftp.max_blksize", "largest RFC 2348 blksize granted (512..65464)",
      [](auto& c) -> auto& { return c.tftp.limits.max_blksize; }));
  f.push_back(ConfigField{
      .key = "tftp.max_windowsize",
      .type = "an integer",
      .doc = "largest RFC 7440 windowsize granted (1..65535)",
      .parse =
          [](const json& v, Config& c) {
            if (!v.is_number_integer() || v.get<std::int64_t>() < 1 ||
                v.get<std::int64_t>() > 65535) {
              refuse("tftp.max_windowsize must be within 1..65535");
            }
            c.tftp.limits.max_window = v.get<std::uint16_t>();
          },
      .dump = [](const Config& c) { return json(c.tftp.limits.max_window); },
  });
  f.push_back(value(
      "tftp.initial_rto_ms", "retransmit timeout before any RTT is measured",
      [](auto& c) -> auto& { return c.tftp.initial_rto_ms; }));
  f.push_back(value(
      "tftp.min_rto_ms", "adaptive timeout bounds (a client's timeout option wins)",
      [](auto& c) -> auto& { return c.tftp.min_rto_ms; }));
  f.push_back(value(
      "tftp.max_rto_ms", "upper bound of the adaptive timeout",
      [](auto& c) -> auto& { return c.tftp.max_rto_ms; }));
  f.push_back(value(
      "tftp.max_retries", "consecutive timeouts before a transfer fails",
      [](auto& c) -> auto& { return c.tftp.max_retries; }));
  f.push_back(value(
      "tftp.netascii_max_bytes", "netascii transfers are converted in memory",
      [](auto& c) -> auto& { return c.tftp.netascii_max_bytes; }));
  // dhcp
  f.push_back(ConfigField{
      .key = "dhcp.mode",
      .type = "off, authoritative or proxy",
      .doc = "off | authoritative | proxy: boot information only, beside another server",
      .parse =
          [](const json& v, Config& c) {
            const auto mode = as<std::string>(v, "dhcp.mode");
            if (mode != "off" && mode != "authoritative" && mode != "proxy") {
              refuse("dhcp.mode must be off, authoritative or proxy");
            }
            c.dhcp_mode = mode;
            c.dhcp.proxy = mode == "proxy";
          },
      .dump = [](const Config& c) { return json(c.dhcp_mode); },
      .example = "authoritative",
  });
  f.push_back(value(
      "dhcp.interfaces", "required when on: DHCP is served on these interfaces only",
      [](auto& c) -> auto& { return c.dhcp.interfaces; }, json::array({"eth1"})));
  f.push_back(value(
      "dhcp.server_address", "\"\" = the first interface's IPv4 (option 54, next server)",
      [](auto& c) -> auto& { return c.dhcp.server_address; }));
  f.push_back(value(
      "dhcp.port", "the server's UDP port", [](auto& c) -> auto& { return c.dhcp.server_port; }));
  f.push_back(value(
      "dhcp.offer_ttl_s", "how long an unanswered offer holds its address",
      [](auto& c) -> auto& { return c.dhcp.offer_ttl_s; }));
  f.push_back(value(
      "dhcp.decline_quarantine_s", "a DECLINEd address is not handed out for this long",
      [](auto& c) -> auto& { return c.dhcp.decline_quarantine_s; }));
  f.push_back(ConfigField{
      .key = "dhcp.relays",
      .type = "a list of IPv4 addresses",
      .doc = "relayed requests (giaddr) are served only from these source addresses",
      .parse =
          [](const json& v, Config& c) {
            auto relays = as<std::vector<std::string>>(v, "dhcp.relays");
            for (const auto& r : relays) {
              if (!dhcp::parse_ipv4(r)) refuse("dhcp.relays: bad IPv4 address '" + r + "'");
            }
            c.dhcp.relays = std::move(relays);
          },
      .dump = [](const Config& c) { return json(c.dhcp.relays); },
      .example = json::array({"10.0.1.1"}),
  });
  f.push_back(value(
      "dhcp.known_only", "only machines kiln knows (by MAC) get leases",
      [](auto& c) -> auto& { return c.dhcp.known_only; }));
  f.push_back(value(
      "dhcp.new_lease_rate", "new leases a minute, all clients together; 0 = unlimited",
      [](auto& c) -> auto& { return c.dhcp.new_lease_rate; }));
  f.push_back(value(
      "dhcp.new_lease_burst", "new leases at once before dhcp.new_lease_rate applies",
      [](auto& c) -> auto& { return c.dhcp.new_lease_burst; }));
  f.push_back(value(
      "dhcp.new_lease_rate_per_mac", "new leases a minute per MAC (also its burst); 0 = unlimited",
      [](auto& c) -> auto& { return c.dhcp.new_lease_rate_per_mac; }));
  f.push_back(ConfigField{
      .key = "dhcp.subnets",
      .type = "a list of subnets",
      .doc = "authoritative mode; relays (giaddr) pick theirs by address",
      .parse =
          [](const json& v, Config& c) {
            if (!v.is_array()) wrong_type("dhcp.subnets", "a list of subnets", v);
            c.dhcp.subnets.clear();
            for (const auto& sj : v) c.dhcp.subnets.push_back(parse_subnet(sj));
          },
      .dump =
          [](const Config& c) {
            json a = json::array();
            for (const auto& sn : c.dhcp.subnets) a.push_back(dump_subnet(sn));
            return a;
          },
      .example = json::array({{{"subnet", "10.0.0.0/24"},
                               {"pool", "10.0.0.100-10.0.0.250"},
                               {"router", "10.0.0.1"},
                               {"dns", {"10.0.0.1"}},
                               {"domain", "rack12.example"},
                               {"lease_time_s", 3600}}}),
  });
  f.push_back(value(
      "dhcp.boot.bios_file", "boot file for BIOS PXE clients",
      [](auto& c) -> auto& { return c.dhcp.boot.bios_file; }));
  f.push_back(value(
      "dhcp.boot.efi_x64_file", "boot file for x86-64 UEFI (or \"snponly.efi\")",
      [](auto& c) -> auto& { return c.dhcp.boot.efi_x64_file; }));
  f.push_back(value(
      "dhcp.boot.efi_ia32_file", "boot file for IA32 UEFI; \"\" = not served",
      [](auto& c) -> auto& { return c.dhcp.boot.efi_ia32_file; }));
  f.push_back(value(
      "dhcp.boot.efi_arm64_file", "boot file for arm64 UEFI; \"\" = not served",
      [](auto& c) -> auto& { return c.dhcp.boot.efi_arm64_file; }));
  f.push_back(value(
      "dhcp.boot.boot_unknown", "machines kiln does not know boot too (into discovery)",
      [](auto& c) -> auto& { return c.dhcp.boot.boot_unknown; }));
  f.push_back(value(
      "dhcp.boot.http_base", "\"\" = boot.server_url, else http://<server_address>:<http port>",
      [](auto& c) -> auto& { return c.dhcp.boot.http_base; }));
  f.push_back(value(
      "dhcp.boot.https_base",
      "HTTPS boot: https://<address>:<tls port>; iPXE with HTTPS gets its script here, "
      "iPXE without it the HTTPS build (deploy/build-ipxe.sh) over TFTP; \"\" = off",
      [](auto& c) -> auto& { return c.dhcp.boot.https_base; }));
  f.push_back(value(
      "dhcp.boot.https_bios_file", "TFTP file of iPXE with HTTPS for BIOS; \"\" = none",
      [](auto& c) -> auto& { return c.dhcp.boot.https_bios_file; }));
  f.push_back(value(
      "dhcp.boot.https_efi_file", "TFTP file of iPXE with HTTPS for x86-64 UEFI; \"\" = none",
      [](auto& c) -> auto& { return c.dhcp.boot.https_efi_file; }));
  f.push_back(value(
      "dhcp.boot.https_required",
      "with https_base: an iPXE that cannot get HTTPS gets no boot file (no http script)",
      [](auto& c) -> auto& { return c.dhcp.boot.https_required; }));
  // api
  ConfigField auth = value(
      "api.auth", "API calls need a token; false: every caller is an anonymous admin (dev only)",
      [](auto& c) -> auto& { return c.api.auth_required; }, nullptr, "--no-auth");
  auth.flag_clears = true;
  f.push_back(std::move(auth));
  f.push_back(value(
      "api.metrics_public", "/metrics without a token",
      [](auto& c) -> auto& { return c.api.metrics_public; }));
  f.push_back(duration<milliseconds>(
      "api.max_wait_ms", "longest long-poll on /api/v1/events",
      [](auto& c) -> auto& { return c.api.max_wait; }));
  f.push_back(duration<seconds>(
      "api.agent_token_ttl_s", "lifetime of an agent session (and of an operator's boot ticket)",
      [](auto& c) -> auto& { return c.api.agent_token_ttl; }));
  // ui
  f.push_back(value(
      "ui.enabled", "serve the web dashboard at /ui/ (static files; its data needs an API token)",
      [](auto& c) -> auto& { return c.ui_enabled; }));
  return f;
}

// Comment lines the example file prints at the top of a section ("" = the file itself).
struct SectionDoc {
  std::string_view section;
  std::vector<std::string_view> lines;
};
const std::vector<SectionDoc>& section_docs() {
  static const std::vector<SectionDoc> kDocs = {
      {"",
       {"kilnd configuration (kilnd --print-example-config). Every field is optional; the value",
        "shown is its default unless a default is noted. Comments are allowed. Unknown keys are",
        "errors. Flags (kilnd --help) override this file."}},
      {"boot",
       {"The iPXE scripts served at /boot/<mac>.ipxe (and boot/<mac>.ipxe over TFTP); see",
        "ipxe-scripts/."}},
      {"ra",
       {"IPv6 router advertisements with router lifetime 0: iPXE waits ~13 s for one on every",
        "start when none comes."}},
  };
  return kDocs;
}

// Cross-field rules, checked after every field is set.
void check(const Config& c) {
  const auto& t = c.tftp;
  if (t.limits.max_blksize < 512 || t.limits.max_blksize > 65464) {
    refuse("tftp.max_blksize must be within 512..65464");
  }
  if (t.limits.max_request_bytes < 512 || t.limits.max_request_bytes > 65468) {
    refuse("tftp.max_request_bytes must be within 512..65468");
  }
  if (t.min_rto_ms < 1 || t.min_rto_ms > t.max_rto_ms) {
    refuse("tftp: need 1 <= min_rto_ms <= max_rto_ms");
  }
  if (t.max_transfers < 1 || t.max_per_client < 1 || t.max_retries < 0) {
    refuse("tftp: max_transfers and max_per_client must be >= 1, max_retries >= 0");
  }
  if (c.dhcp_mode != "off" && c.dhcp.interfaces.empty()) {
    refuse("dhcp.interfaces must name the interfaces to serve");
  }
  if (c.power.max_concurrent < 1 || c.power.max_concurrent > 1024) {
    refuse("power.max_concurrent must be 1-1024");
  }
  if (c.bmc_timeout.count() < 100 || c.bmc_retries < 0 || c.bmc_retries > 10) {
    refuse("power.timeout_ms must be >= 100 and power.retries 0-10");
  }
  if (c.power.written_deadline.count() < 0 || c.power.booted_deadline.count() < 0 ||
      c.power.deadline_retries < 0 || c.power.deadline_retries > 10) {
    refuse("boot.deadlines: written_s and booted_s must be >= 0, retries 0-10");
  }
  if (c.dhcp.new_lease_rate != 0 && c.dhcp.new_lease_burst < 1) {
    refuse("dhcp.new_lease_burst must be >= 1 (or dhcp.new_lease_rate 0: unlimited)");
  }
  if (!c.api.mirrors.empty() && c.api.chunks_require_token) {
    refuse(
        "images.mirrors cannot serve private chunks (images.chunks_require_token): a cache "
        "holds no session token; drop one of them");
  }
  for (const auto& p : c.cluster.peers) {
    auto u = parse_http_url(p);
    if (!u) refuse("cluster.peers: '" + p + "' is not an http(s)://host[:port] URL");
  }
  if (!c.cluster.upstream.empty()) {
    auto u = parse_http_url(c.cluster.upstream);
    if (!u) refuse("cluster.upstream must be an http(s)://host[:port] URL");
  }
  if (!c.cluster.peers.empty() && c.cluster_token_file.empty()) {
    refuse("cluster.peers needs cluster.token_file (the secret the instances share)");
  }
  if (c.cluster.timeout.count() < 100) refuse("cluster.fetch_timeout_ms must be >= 100");
  const auto& b = c.dhcp.boot;
  if (!b.https_base.empty() && !b.https_base.starts_with("https://")) {
    refuse("dhcp.boot.https_base must be an https:// URL (or \"\" for no HTTPS boot)");
  }
  if (b.https_required && b.https_base.empty()) {
    refuse("dhcp.boot.https_required needs dhcp.boot.https_base");
  }
}

const ConfigField* find_field(std::string_view key) {
  for (const auto& f : config_fields()) {
    if (f.key == key) return &f;
  }
  return nullptr;
}

bool is_section(std::string_view path) {
  for (const auto& f : config_fields()) {
    if (f.key.size() > path.size() && f.key.starts_with(path) && f.key[path.size()] == '.') {
      return true;
    }
  }
  return false;
}

// Every key of `j` (the object at `prefix`) is a field or a section of fields.
void check_keys(const json& j, const std::string& prefix) {
  for (const auto& [k, v] : j.items()) {
    const std::string path = prefix + k;
    if (find_field(path)) continue;
    if (!is_section(path)) refuse("unknown key '" + path + "'");
    if (!v.is_object()) wrong_type(path, "an object", v);
    check_keys(v, path + ".");
  }
}

// The value at dotted `key` in `j`, or null when absent.
const json* lookup(const json& j, std::string_view key) {
  const json* at = &j;
  while (true) {
    const auto dot = key.find('.');
    auto it = at->find(std::string(key.substr(0, dot)));
    if (it == at->end()) return nullptr;
    at = &*it;
    if (dot == std::string_view::npos) return at;
    key.remove_prefix(dot + 1);
  }
}

// `value` as the example file writes it after `"key": ` (multi-line for lists of objects).
std::string example_value(const json& v, const std::string& indent) {
  const bool objects = v.is_array() && !v.empty() && v.front().is_object();
  if (!objects) return v.dump();
  std::string out = "[";
  for (std::size_t i = 0; i < v.size(); ++i) {
    out += "\n" + indent + "  " + v[i].dump() + (i + 1 < v.size() ? "," : "");
  }
  return out + "\n" + indent + "]";
}

// Appends the lines of the object at `prefix` (fields in table order) to `out`.
void write_example(std::string& out, const std::string& prefix, const std::string& indent) {
  for (const auto& d : section_docs()) {
    if (prefix == (d.section.empty() ? "" : std::string(d.section) + ".")) {
      for (auto l : d.lines) out += indent + "// " + std::string(l) + "\n";
    }
  }
  // The entries of this object: fields directly in it and its sub-sections, first-seen order.
  std::vector<std::string> names;
  for (const auto& f : config_fields()) {
    if (!f.key.starts_with(prefix)) continue;
    auto rest = f.key.substr(prefix.size());
    auto name = std::string(rest.substr(0, rest.find('.')));
    if (std::find(names.begin(), names.end(), name) == names.end()) names.push_back(name);
  }
  static const Config kDefaults;
  for (std::size_t i = 0; i < names.size(); ++i) {
    const std::string comma = i + 1 < names.size() ? "," : "";
    const std::string key = prefix + names[i];
    const ConfigField* f = find_field(key);
    if (!f) {
      out += indent + "\"" + names[i] + "\": {\n";
      write_example(out, key + ".", indent + "  ");
      out += indent + "}" + comma + "\n";
      continue;
    }
    const json def = f->dump(kDefaults);
    const json shown = f->example.is_null() ? def : f->example;
    std::string doc(f->doc);
    if (shown != def && !f->derived_default) doc += "; default " + def.dump();
    std::string text = example_value(shown, indent);
    // The comment goes on the entry's first line; a multi-line value gets its comma last.
    const auto nl = text.find('\n');
    std::string first = indent + "\"" + names[i] + "\": " + text.substr(0, nl);
    if (nl == std::string::npos) first += comma;
    constexpr std::size_t kCommentColumn = 40;
    first.resize(std::max(first.size() + 1, kCommentColumn), ' ');
    out += first + "// " + doc + "\n";
    if (nl != std::string::npos) out += text.substr(nl + 1) + comma + "\n";
  }
}

}  // namespace

const std::vector<ConfigField>& config_fields() {
  static const std::vector<ConfigField> kFields = make_fields();
  return kFields;
}

Result<Config> parse_config(std::string_view text, Config c) {
  const json j = json::parse(text, nullptr, false, /*ignore_comments=*/true);
  if (j.is_discarded() || !j.is_object()) {
    return make_error(Errc::kBadRequest, "not a JSON object");
  }
  try {
    check_keys(j, "");
    for (const auto& f : config_fields()) {
      if (const json* v = lookup(j, f.key)) f.parse(*v, c);
    }
    check(c);
  } catch (const std::exception& e) {
    return make_error(Errc::kInvalid, e.what());
  }
  return c;
}

Result<Config> load_config_file(const std::string& path, Config base) {
  std::ifstream in(path);
  if (!in) return make_error(Errc::kInvalid, "cannot read config file " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  auto c = parse_config(ss.str(), std::move(base));
  if (!c && c.error().code == Errc::kBadRequest) {
    return make_error(Errc::kInvalid, "config file " + path + " is not a JSON object");
  }
  if (!c) return make_error(Errc::kInvalid, "config file " + path + ": " + c.error().message);
  return c;
}

Status apply_flag(const ConfigField& field, const std::string& text, Config& c) {
  json v = text;
  if (field.flag_clears) {
    v = false;
  } else if (field.type == "an integer") {
    std::int64_t n = 0;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
    if (ec != std::errc() || end != text.data() + text.size()) {
      return make_error(Errc::kInvalid, "'" + text + "' is not an integer");
    }
    v = n;
  }
  try {
    field.parse(v, c);
  } catch (const std::exception& e) {
    return make_error(Errc::kInvalid, e.what());
  }
  return ok_status();
}

std::string dump_config(const Config& c) {
  json j = json::object();
  for (const auto& f : config_fields()) {
    std::string pointer = "/" + std::string(f.key);
    std::replace(pointer.begin(), pointer.end(), '.', '/');
    j[json::json_pointer(pointer)] = f.dump(c);
  }
  return j.dump(2);
}

std::string example_config() {
  std::string out = "{\n";
  write_example(out, "", "  ");
  return out + "}\n";
}

}  // namespace kiln::daemon
