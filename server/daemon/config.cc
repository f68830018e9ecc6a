#include "daemon/config.h"

#include <arpa/inet.h>

#include <charconv>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

namespace kiln::daemon {

using json = nlohmann::json;

std::string Config::effective_db_path() const {
  return db_path.empty() ? data_dir + "/kiln.db" : db_path;
}
std::string Config::effective_images_dir() const {
  return images_dir.empty() ? data_dir + "/images" : images_dir;
}
std::string Config::effective_files_dir() const {
  return files_dir.empty() ? data_dir + "/files" : files_dir;
}

namespace {
Status parse_host_port(const std::string& listen, std::string& host_out, std::uint16_t& port_out) {
  auto colon = listen.rfind(':');
  if (colon == std::string::npos || colon == 0) {
    return make_error(Errc::kInvalid, "listen must be host:port, got '" + listen + "'");
  }
  std::string host = listen.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  unsigned port = 0;
  auto p = listen.substr(colon + 1);
  auto [end, ec] = std::from_chars(p.data(), p.data() + p.size(), port);
  if (ec != std::errc() || end != p.data() + p.size() || port > 65535) {
    return make_error(Errc::kInvalid, "bad port in listen '" + listen + "'");
  }
  host_out = host;
  port_out = static_cast<std::uint16_t>(port);
  return ok_status();
}
}  // namespace

Status parse_listen(const std::string& listen, http::ServerOptions& out) {
  return parse_host_port(listen, out.address, out.port);
}
Status parse_listen(const std::string& listen, tftp::ServerOptions& out) {
  return parse_host_port(listen, out.address, out.port);
}

namespace {

void check_keys(const json& j, const std::string& where, std::set<std::string> allowed) {
  for (const auto& [k, _] : j.items()) {
    if (!allowed.count(k)) throw std::runtime_error("unknown key '" + where + k + "'");
  }
}

template <typename T>
void get(const json& j, const char* key, T& out) {
  if (auto it = j.find(key); it != j.end()) out = it->get<T>();
}

}  // namespace

Result<Config> load_config_file(const std::string& path, Config c) {
  std::ifstream in(path);
  if (!in) return make_error(Errc::kInvalid, "cannot read config file " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  json j = json::parse(ss.str(), nullptr, false, /*ignore_comments=*/true);
  if (j.is_discarded() || !j.is_object()) {
    return make_error(Errc::kInvalid, "config file " + path + " is not a JSON object");
  }
  try {
    check_keys(j, "",
               {"data_dir", "db_path", "files_dir", "threads", "log_level", "shutdown_grace_ms",
                "ready_file", "store", "http", "api", "images", "boot", "tftp", "dhcp", "ra"});
    get(j, "data_dir", c.data_dir);
    get(j, "db_path", c.db_path);
    get(j, "files_dir", c.files_dir);
    get(j, "threads", c.threads);
    get(j, "log_level", c.log_level);
    get(j, "shutdown_grace_ms", c.shutdown_grace_ms);
    get(j, "ready_file", c.ready_file);
    if (auto s = j.find("store"); s != j.end()) {
      check_keys(*s, "store.", {"synchronous", "busy_timeout_ms"});
      std::string sync = c.db_synchronous_full ? "full" : "normal";
      get(*s, "synchronous", sync);
      if (sync != "full" && sync != "normal")
        throw std::runtime_error("store.synchronous must be full or normal");
      c.db_synchronous_full = sync == "full";
      get(*s, "busy_timeout_ms", c.db_busy_timeout_ms);
    }
    if (auto im = j.find("images"); im != j.end()) {
      check_keys(*im, "images.", {"dir", "trusted_keys", "max_upload_bytes"});
      get(*im, "dir", c.images_dir);
      get(*im, "trusted_keys", c.trusted_keys);
      get(*im, "max_upload_bytes", c.http.upload.limit);
    }
    if (auto h = j.find("http"); h != j.end()) {
      check_keys(*h, "http.",
                 {"listen", "body_limit", "header_limit", "read_timeout_ms", "write_timeout_ms",
                  "max_connections", "tls_cert", "tls_key"});
      if (auto l = h->find("listen"); l != h->end()) {
        if (auto st = parse_listen(l->get<std::string>(), c.http); !st) return st.error();
      }
      get(*h, "body_limit", c.http.body_limit);
      get(*h, "header_limit", c.http.header_limit);
      if (auto t = h->find("read_timeout_ms"); t != h->end())
        c.http.read_timeout = std::chrono::milliseconds(t->get<int>());
      if (auto t = h->find("write_timeout_ms"); t != h->end())
        c.http.write_timeout = std::chrono::milliseconds(t->get<int>());
      get(*h, "max_connections", c.http.max_connections);
      get(*h, "tls_cert", c.http.tls_cert_file);
      get(*h, "tls_key", c.http.tls_key_file);
    }
    if (auto b = j.find("boot"); b != j.end()) {
      check_keys(
          *b, "boot.",
          {"roots", "server_url", "kernel", "initrd", "cmdline", "disk", "after", "after_discover",
           "localboot_bios", "localboot_efi", "poll_s", "retry_s", "retries", "discover_unknown",
           "max_discovered", "scripts_dir", "token_ttl_s", "bind_to_lease", "max_agent_boots"});
      get(*b, "roots", c.boot_roots);
      get(*b, "server_url", c.boot.server_url);
      while (!c.boot.server_url.empty() && c.boot.server_url.back() == '/') {
        c.boot.server_url.pop_back();
      }
      get(*b, "kernel", c.boot.kernel);
      get(*b, "initrd", c.boot.initrd);
      get(*b, "cmdline", c.boot.cmdline);
      get(*b, "disk", c.boot.disk);
      get(*b, "after", c.boot.after);
      get(*b, "after_discover", c.boot.after_discover);
      for (auto [key, out] : {std::pair{"localboot_bios", &c.boot.local_bios},
                              std::pair{"localboot_efi", &c.boot.local_efi}}) {
        if (auto v = b->find(key); v != b->end()) {
          auto lb = boot::parse_local_boot(v->get<std::string>());
          if (!lb) {
            return make_error(Errc::kInvalid,
                              std::string("boot.") + key + " must be sanboot or exit");
          }
          *out = *lb;
        }
      }
      get(*b, "poll_s", c.boot.poll_s);
      get(*b, "retry_s", c.boot.retry_s);
      get(*b, "retries", c.boot.retries);
      get(*b, "discover_unknown", c.boot.discover_unknown);
      get(*b, "max_discovered", c.boot.max_discovered);
      get(*b, "scripts_dir", c.boot.scripts_dir);
      get(*b, "bind_to_lease", c.boot.bind_to_lease);
      get(*b, "max_agent_boots", c.boot.max_agent_boots);
      if (auto t = b->find("token_ttl_s"); t != b->end()) {
        c.boot.token_ttl = std::chrono::seconds(t->get<int>());
      }
    }
    if (auto r = j.find("ra"); r != j.end()) {
      check_keys(*r, "ra.", {"interfaces", "router_lifetime_s", "prefixes", "max_per_second"});
      get(*r, "interfaces", c.ra.interfaces);
      get(*r, "router_lifetime_s", c.ra.router_lifetime_s);
      get(*r, "max_per_second", c.ra.max_per_second);
      for (const auto& p : r->value("prefixes", std::vector<std::string>{})) {
        auto parsed = dhcp::parse_ra_prefix(p);
        if (!parsed) return parsed.error();
        c.ra.prefixes.push_back(*parsed);
      }
    }
    if (auto t = j.find("tftp"); t != j.end()) {
      check_keys(
          *t, "tftp.",
          {"listen", "threads", "max_transfers", "max_per_client", "max_blksize", "max_windowsize",
           "initial_rto_ms", "min_rto_ms", "max_rto_ms", "max_retries", "netascii_max_bytes"});
      if (auto l = t->find("listen"); l != t->end()) {
        const auto listen = l->get<std::string>();
        c.tftp_enabled = !listen.empty();
        if (c.tftp_enabled) {
          if (auto st = parse_listen(listen, c.tftp); !st) return st.error();
        }
      }
      get(*t, "threads", c.tftp.threads);
      get(*t, "max_transfers", c.tftp.max_transfers);
      get(*t, "max_per_client", c.tftp.max_per_client);
      get(*t, "max_blksize", c.tftp.limits.max_blksize);
      if (auto w = t->find("max_windowsize"); w != t->end()) {
        const auto v = w->get<std::int64_t>();
        if (v < 1 || v > 65535)
          throw std::runtime_error("tftp.max_windowsize must be within 1..65535");
        c.tftp.limits.max_window = static_cast<std::uint16_t>(v);
      }
      get(*t, "initial_rto_ms", c.tftp.initial_rto_ms);
      get(*t, "min_rto_ms", c.tftp.min_rto_ms);
      get(*t, "max_rto_ms", c.tftp.max_rto_ms);
      get(*t, "max_retries", c.tftp.max_retries);
      get(*t, "netascii_max_bytes", c.tftp.netascii_max_bytes);
      if (c.tftp.limits.max_blksize < 512 || c.tftp.limits.max_blksize > 65464)
        throw std::runtime_error("tftp.max_blksize must be within 512..65464");
      if (c.tftp.limits.max_window < 1)
        throw std::runtime_error("tftp.max_windowsize must be >= 1");
      if (c.tftp.min_rto_ms < 1 || c.tftp.min_rto_ms > c.tftp.max_rto_ms)
        throw std::runtime_error("tftp: need 1 <= min_rto_ms <= max_rto_ms");
      if (c.tftp.max_transfers < 1 || c.tftp.max_per_client < 1 || c.tftp.max_retries < 0)
        throw std::runtime_error(
            "tftp: max_transfers and max_per_client must be >= 1, max_retries >= 0");
    }
    if (auto d = j.find("dhcp"); d != j.end()) {
      check_keys(*d, "dhcp.",
                 {"mode", "interfaces", "server_address", "port", "subnets", "boot", "offer_ttl_s",
                  "decline_quarantine_s"});
      get(*d, "mode", c.dhcp_mode);
      if (c.dhcp_mode != "off" && c.dhcp_mode != "authoritative" && c.dhcp_mode != "proxy")
        throw std::runtime_error("dhcp.mode must be off, authoritative or proxy");
      c.dhcp.proxy = c.dhcp_mode == "proxy";
      get(*d, "interfaces", c.dhcp.interfaces);
      get(*d, "server_address", c.dhcp.server_address);
      get(*d, "port", c.dhcp.server_port);
      get(*d, "offer_ttl_s", c.dhcp.offer_ttl_s);
      get(*d, "decline_quarantine_s", c.dhcp.decline_quarantine_s);
      if (auto subs = d->find("subnets"); subs != d->end()) {
        for (const auto& sj : *subs) {
          check_keys(sj, "dhcp.subnets[].",
                     {"subnet", "pool", "router", "dns", "domain", "lease_time_s"});
          dhcp::Subnet sn;
          const auto cidr = sj.at("subnet").get<std::string>();
          if (!dhcp::parse_cidr(cidr, sn.network, sn.prefix))
            throw std::runtime_error("dhcp: bad subnet '" + cidr + "' (want a.b.c.d/n)");
          const auto pool = sj.at("pool").get<std::string>();
          const auto dash = pool.find('-');
          auto first = dhcp::parse_ipv4(pool.substr(0, dash));
          auto last =
              dash == std::string::npos ? std::nullopt : dhcp::parse_ipv4(pool.substr(dash + 1));
          if (!first || !last || dhcp::to_u32(*last) < dhcp::to_u32(*first) ||
              !sn.contains(*first) || !sn.contains(*last))
            throw std::runtime_error("dhcp: pool '" + pool + "' must be first-last inside " + cidr);
          sn.pool_first = *first;
          sn.pool_last = *last;
          if (auto r = sj.find("router"); r != sj.end()) {
            auto ip = dhcp::parse_ipv4(r->get<std::string>());
            if (!ip) throw std::runtime_error("dhcp: bad router in " + cidr);
            sn.router = *ip;
          }
          for (const auto& dn : sj.value("dns", std::vector<std::string>{})) {
            auto ip = dhcp::parse_ipv4(dn);
            if (!ip) throw std::runtime_error("dhcp: bad dns server '" + dn + "'");
            sn.dns.push_back(*ip);
          }
          sn.domain = sj.value("domain", std::string());
          sn.lease_time_s = sj.value("lease_time_s", sn.lease_time_s);
          if (sn.lease_time_s < 60) throw std::runtime_error("dhcp: lease_time_s must be >= 60");
          c.dhcp.subnets.push_back(sn);
        }
      }
      if (auto b = d->find("boot"); b != d->end()) {
        check_keys(*b, "dhcp.boot.",
                   {"bios_file", "efi_x64_file", "efi_ia32_file", "efi_arm64_file", "boot_unknown",
                    "http_base"});
        get(*b, "bios_file", c.dhcp.boot.bios_file);
        get(*b, "efi_x64_file", c.dhcp.boot.efi_x64_file);
        get(*b, "efi_ia32_file", c.dhcp.boot.efi_ia32_file);
        get(*b, "efi_arm64_file", c.dhcp.boot.efi_arm64_file);
        get(*b, "boot_unknown", c.dhcp.boot.boot_unknown);
        get(*b, "http_base", c.dhcp.boot.http_base);
      }
      if (c.dhcp_mode != "off" && c.dhcp.interfaces.empty())
        throw std::runtime_error("dhcp.interfaces must name the interfaces to serve");
    }
    if (auto a = j.find("api"); a != j.end()) {
      check_keys(*a, "api.", {"auth", "metrics_public", "max_wait_ms", "agent_token_ttl_s"});
      get(*a, "auth", c.api.auth_required);
      get(*a, "metrics_public", c.api.metrics_public);
      if (auto t = a->find("max_wait_ms"); t != a->end())
        c.api.max_wait = std::chrono::milliseconds(t->get<int>());
      if (auto t = a->find("agent_token_ttl_s"); t != a->end())
        c.api.agent_token_ttl = std::chrono::seconds(t->get<int>());
    }
  } catch (const std::exception& e) {
    return make_error(Errc::kInvalid, "config file " + path + ": " + e.what());
  }
  return c;
}

std::string dump_config(const Config& c) {
  json j = {
      {"data_dir", c.data_dir},
      {"db_path", c.effective_db_path()},
      {"files_dir", c.effective_files_dir()},
      {"threads", c.threads},
      {"log_level", c.log_level},
      {"shutdown_grace_ms", c.shutdown_grace_ms},
      {"ready_file", c.ready_file},
      {"store",
       {{"synchronous", c.db_synchronous_full ? "full" : "normal"},
        {"busy_timeout_ms", c.db_busy_timeout_ms}}},
      {"images",
       {{"dir", c.effective_images_dir()},
        {"trusted_keys", c.trusted_keys},
        {"max_upload_bytes", c.http.upload.limit}}},
      {"http",
       {{"listen", c.http.address + ":" + std::to_string(c.http.port)},
        {"body_limit", c.http.body_limit},
        {"header_limit", c.http.header_limit},
        {"read_timeout_ms", c.http.read_timeout.count()},
        {"write_timeout_ms", c.http.write_timeout.count()},
        {"max_connections", c.http.max_connections},
        {"tls_cert", c.http.tls_cert_file},
        {"tls_key", c.http.tls_key_file}}},
      {"boot",
       {{"roots", c.boot_roots},
        {"server_url", c.boot.server_url},
        {"kernel", c.boot.kernel},
        {"initrd", c.boot.initrd},
        {"cmdline", c.boot.cmdline},
        {"disk", c.boot.disk},
        {"after", c.boot.after},
        {"after_discover", c.boot.after_discover},
        {"localboot_bios", c.boot.local_bios == boot::LocalBoot::kSanboot ? "sanboot" : "exit"},
        {"localboot_efi", c.boot.local_efi == boot::LocalBoot::kSanboot ? "sanboot" : "exit"},
        {"poll_s", c.boot.poll_s},
        {"retry_s", c.boot.retry_s},
        {"retries", c.boot.retries},
        {"discover_unknown", c.boot.discover_unknown},
        {"max_discovered", c.boot.max_discovered},
        {"scripts_dir", c.boot.scripts_dir},
        {"bind_to_lease", c.boot.bind_to_lease},
        {"max_agent_boots", c.boot.max_agent_boots},
        {"token_ttl_s",
         std::chrono::duration_cast<std::chrono::seconds>(c.boot.token_ttl).count()}}},
      {"dhcp",
       {{"mode", c.dhcp_mode},
        {"interfaces", c.dhcp.interfaces},
        {"server_address", c.dhcp.server_address},
        {"port", c.dhcp.server_port},
        {"offer_ttl_s", c.dhcp.offer_ttl_s},
        {"decline_quarantine_s", c.dhcp.decline_quarantine_s},
        {"subnets",
         [&] {
           json a = json::array();
           for (const auto& sn : c.dhcp.subnets) {
             json dns = json::array();
             for (const auto& d : sn.dns) dns.push_back(dhcp::to_string(d));
             a.push_back(
                 {{"subnet", dhcp::to_string(sn.network) + "/" + std::to_string(sn.prefix)},
                  {"pool", dhcp::to_string(sn.pool_first) + "-" + dhcp::to_string(sn.pool_last)},
                  {"router", sn.router ? dhcp::to_string(*sn.router) : ""},
                  {"dns", dns},
                  {"domain", sn.domain},
                  {"lease_time_s", sn.lease_time_s}});
           }
           return a;
         }()},
        {"boot",
         {{"bios_file", c.dhcp.boot.bios_file},
          {"efi_x64_file", c.dhcp.boot.efi_x64_file},
          {"efi_ia32_file", c.dhcp.boot.efi_ia32_file},
          {"efi_arm64_file", c.dhcp.boot.efi_arm64_file},
          {"boot_unknown", c.dhcp.boot.boot_unknown},
          {"http_base", c.dhcp.boot.http_base}}}}},
      {"ra",
       {{"interfaces", c.ra.interfaces},
        {"router_lifetime_s", c.ra.router_lifetime_s},
        {"max_per_second", c.ra.max_per_second},
        {"prefixes",
         [&] {
           json a = json::array();
           for (const auto& p : c.ra.prefixes) {
             char buf[INET6_ADDRSTRLEN];
             ::inet_ntop(AF_INET6, p.prefix.data(), buf, sizeof buf);
             a.push_back(std::string(buf) + "/" + std::to_string(p.length));
           }
           return a;
         }()}}},
      {"tftp",
       {{"listen", c.tftp_enabled
                       ? (c.tftp.address.find(':') != std::string::npos ? "[" + c.tftp.address + "]"
                                                                        : c.tftp.address) +
                             ":" + std::to_string(c.tftp.port)
                       : ""},
        {"threads", c.tftp.threads},
        {"max_transfers", c.tftp.max_transfers},
        {"max_per_client", c.tftp.max_per_client},
        {"max_blksize", c.tftp.limits.max_blksize},
        {"max_windowsize", c.tftp.limits.max_window},
        {"initial_rto_ms", c.tftp.initial_rto_ms},
        {"min_rto_ms", c.tftp.min_rto_ms},
        {"max_rto_ms", c.tftp.max_rto_ms},
        {"max_retries", c.tftp.max_retries},
        {"netascii_max_bytes", c.tftp.netascii_max_bytes}}},
      {"api",
       {{"auth", c.api.auth_required},
        {"metrics_public", c.api.metrics_public},
        {"max_wait_ms", c.api.max_wait.count()},
        {"agent_token_ttl_s",
         std::chrono::duration_cast<std::chrono::seconds>(c.api.agent_token_ttl).count()}}},
  };
  return j.dump(2);
}

}  // namespace kiln::daemon
