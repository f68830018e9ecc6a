#include "cloudinit/config.h"

#include <algorithm>
#include <set>

#include "core/crypto.h"

namespace kiln::cloudinit {
namespace {

using json = nlohmann::json;

Error bad_type(std::string_view field, std::string_view want) {
  return {Errc::kBadRequest, std::string(field) + ": must be " + std::string(want)};
}
Error invalid(std::string_view field, std::string_view why) {
  return {Errc::kInvalid, std::string(field) + ": " + std::string(why)};
}

bool is_label(std::string_view s) {
  if (s.empty() || s.size() > 63 || s.front() == '-' || s.back() == '-') return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
  });
}

bool valid_utf8(std::string_view s) {
  for (std::size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    const std::size_t n = c < 0x80             ? 0
                          : (c & 0xe0) == 0xc0 ? 1
                          : (c & 0xf0) == 0xe0 ? 2
                          : (c & 0xf8) == 0xf0 ? 3
                                               : 4;
    if (n == 4 || (n > 0 && i + n >= s.size())) return false;
    for (std::size_t k = 1; k <= n; ++k) {
      if ((static_cast<unsigned char>(s[i + k]) & 0xc0) != 0x80) return false;
    }
    i += n + 1;
  }
  return true;
}

// The part types cloud-init recognizes by a document's first line.
constexpr std::pair<std::string_view, std::string_view> kStarts[] = {
    {"#cloud-config-archive", "text/cloud-config-archive"},
    {"#cloud-config", "text/cloud-config"},
    {"#cloud-boothook", "text/cloud-boothook"},
    {"#include", "text/x-include-url"},
    {"#part-handler", "text/part-handler"},
    {"## template: jinja", "text/jinja2"},
    {"#!", "text/x-shellscript"},
    {"Content-Type:", "multipart"},
};

std::optional<std::string_view> part_type(std::string_view doc) {
  for (const auto& [start, type] : kStarts) {
    if (doc.substr(0, start.size()) == start) return type;
  }
  return std::nullopt;
}

Result<std::string> user_document(const json& v, std::string_view field, const Limits& limits) {
  if (!v.is_string()) return bad_type(field, "a string");
  auto s = v.get<std::string>();
  if (s.size() > limits.max_user_data_bytes) {
    return invalid(field, std::to_string(s.size()) + " bytes; at most " +
                              std::to_string(limits.max_user_data_bytes) + " are accepted");
  }
  if (s.find('\0') != std::string::npos || !valid_utf8(s)) {
    return invalid(field, "must be UTF-8 text without NUL bytes");
  }
  if (!part_type(s)) {
    return invalid(field,
                   "must start with #cloud-config, #!, #include, #cloud-boothook, "
                   "#cloud-config-archive, #part-handler, '## template: jinja' or a MIME "
                   "Content-Type: header (cloud-init ignores anything else)");
  }
  return s;
}

constexpr std::string_view kKeyTypes[] = {"ssh-ed25519",
                                          "ssh-rsa",
                                          "ecdsa-sha2-nistp256",
                                          "ecdsa-sha2-nistp384",
                                          "ecdsa-sha2-nistp521",
                                          "sk-ssh-ed25519@openssh.com",
                                          "sk-ecdsa-sha2-nistp256@openssh.com"};

// An authorized_keys line without options: "<type> <base64> [comment]".
Status check_key(std::string_view key) {
  if (key.size() > 16 * 1024) return make_error(Errc::kInvalid, "longer than 16 KiB");
  if (key.find_first_of("\r\n") != std::string_view::npos || key.find('\0') != key.npos) {
    return make_error(Errc::kInvalid, "must be one line");
  }
  const auto sp = key.find(' ');
  const auto type = key.substr(0, sp);
  if (std::find(std::begin(kKeyTypes), std::end(kKeyTypes), type) == std::end(kKeyTypes)) {
    return make_error(Errc::kInvalid, "'" + std::string(type.substr(0, 40)) +
                                          "' is not an OpenSSH public key type (ssh-ed25519, "
                                          "ssh-rsa, ecdsa-sha2-*, sk-*)");
  }
  if (sp == std::string_view::npos) return make_error(Errc::kInvalid, "has no key data");
  auto data = key.substr(sp + 1);
  data = data.substr(0, data.find(' '));
  const bool b64 = !data.empty() && std::all_of(data.begin(), data.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '+' || c == '/' || c == '=';
  });
  if (!b64) return make_error(Errc::kInvalid, "its key data is not base64");
  return Unit{};
}

bool metadata_key_ok(std::string_view k) {
  if (k.empty() || k.size() > 63) return false;
  return std::all_of(k.begin(), k.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.';
  });
}

std::string sha256_of(std::string_view s) { return sha256_hex(s); }

}  // namespace

Result<Config> parse_config(const json& j, const Limits& limits) {
  if (!j.is_object()) return bad_type("config", "a JSON object");
  static const std::set<std::string> kKnown = {"hostname",  "fqdn",        "ssh_authorized_keys",
                                               "user_data", "vendor_data", "network_config",
                                               "metadata",  "config_drive"};
  for (const auto& [k, v] : j.items()) {
    if (!kKnown.count(k)) {
      return make_error(Errc::kBadRequest,
                        k + ": unknown field (known: hostname, fqdn, ssh_authorized_keys, "
                            "user_data, vendor_data, network_config, metadata, config_drive)");
    }
  }
  Config c;
  auto has = [&](const char* k) { return j.contains(k) && !j.at(k).is_null(); };
  if (has("hostname")) {
    const auto& v = j.at("hostname");
    if (!v.is_string()) return bad_type("hostname", "a string");
    auto h = v.get<std::string>();
    if (!is_label(h)) {
      return invalid("hostname",
                     "must be 1-63 characters of a-z, 0-9 and '-', not starting or ending with "
                     "'-' (RFC 1123)");
    }
    c.hostname = h;
  }
  if (has("fqdn")) {
    const auto& v = j.at("fqdn");
    if (!v.is_string()) return bad_type("fqdn", "a string");
    auto f = v.get<std::string>();
    if (!f.empty() && f.back() == '.') f.pop_back();
    if (f.size() > 253 || f.find('.') == std::string::npos) {
      return invalid("fqdn", "must be a host name with a domain (at most 253 characters)");
    }
    std::size_t start = 0;
    while (start <= f.size()) {
      auto dot = f.find('.', start);
      auto label = f.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
      if (!is_label(label)) {
        return invalid("fqdn", "label '" + label.substr(0, 63) + "' is not a valid DNS label");
      }
      if (dot == std::string::npos) break;
      start = dot + 1;
    }
    if (c.hostname && f.substr(0, f.find('.')) != *c.hostname) {
      return invalid("fqdn", "must start with the hostname '" + *c.hostname + "'");
    }
    c.fqdn = f;
  }
  if (has("ssh_authorized_keys")) {
    const auto& v = j.at("ssh_authorized_keys");
    if (!v.is_array()) return bad_type("ssh_authorized_keys", "an array of strings");
    if (v.size() > 100) return invalid("ssh_authorized_keys", "at most 100 keys");
    std::vector<std::string> keys;
    for (std::size_t i = 0; i < v.size(); ++i) {
      const std::string field = "ssh_authorized_keys[" + std::to_string(i) + "]";
      if (!v[i].is_string()) return bad_type(field, "a string");
      auto k = v[i].get<std::string>();
      while (!k.empty() && (k.back() == ' ' || k.back() == '\t')) k.pop_back();
      if (auto st = check_key(k); !st) return invalid(field, st.error().message);
      keys.push_back(std::move(k));
    }
    c.ssh_authorized_keys = std::move(keys);
  }
  if (has("user_data")) {
    auto s = user_document(j.at("user_data"), "user_data", limits);
    if (!s) return s.error();
    c.user_data = std::move(*s);
  }
  if (has("vendor_data")) {
    auto s = user_document(j.at("vendor_data"), "vendor_data", limits);
    if (!s) return s.error();
    c.vendor_data = std::move(*s);
  }
  if (has("network_config")) {
    const auto& v = j.at("network_config");
    if (!v.is_object()) return bad_type("network_config", "an object (network config version 2)");
    const json& body = v.contains("network") ? v.at("network") : v;
    if (!body.is_object() || !body.contains("version") || body.at("version") != 2) {
      return invalid("network_config", "must be network config version 2 (\"version\": 2)");
    }
    for (const auto& [k, _] : body.items()) {
      static const std::set<std::string> kV2 = {"version", "ethernets", "bonds",   "bridges",
                                                "vlans",   "wifis",     "renderer"};
      if (!kV2.count(k)) {
        return invalid("network_config", "unknown version 2 section '" + k.substr(0, 63) + "'");
      }
    }
    if (v.dump().size() > limits.max_user_data_bytes) {
      return invalid("network_config", "too large");
    }
    c.network_config = v;
  }
  if (has("metadata")) {
    const auto& v = j.at("metadata");
    if (!v.is_object()) return bad_type("metadata", "an object of strings");
    if (v.size() > 64) return invalid("metadata", "at most 64 keys");
    for (const auto& [k, val] : v.items()) {
      if (!metadata_key_ok(k)) {
        return invalid("metadata", "key '" + k.substr(0, 63) +
                                       "' must be 1-63 characters of A-Z, a-z, 0-9, '_', '-', '.'");
      }
      if (!val.is_string()) return bad_type("metadata." + k, "a string");
      auto s = val.get<std::string>();
      if (s.size() > 1024 || !valid_utf8(s) || s.find('\0') != std::string::npos) {
        return invalid("metadata." + k, "must be UTF-8 text of at most 1024 bytes");
      }
      c.metadata[k] = s;
    }
  }
  if (has("config_drive")) {
    const auto& v = j.at("config_drive");
    if (!v.is_boolean()) return bad_type("config_drive", "a boolean");
    c.config_drive = v.get<bool>();
  }
  return c;
}

json to_json(const Config& c, bool secrets) {
  json j = json::object();
  if (c.hostname) j["hostname"] = *c.hostname;
  if (c.fqdn) j["fqdn"] = *c.fqdn;
  if (c.ssh_authorized_keys) j["ssh_authorized_keys"] = *c.ssh_authorized_keys;
  // Read tokens learn only that a document is there and its size: no hash (a hash of a short
  // secret is a guessing oracle), and network_config may hold Wi-Fi passwords.
  auto secret = [&](const std::string& s) -> json {
    if (secrets) return s;
    return {{"bytes", s.size()}};
  };
  if (c.user_data) j["user_data"] = secret(*c.user_data);
  if (c.vendor_data) j["vendor_data"] = secret(*c.vendor_data);
  if (c.network_config) {
    j["network_config"] = secrets ? *c.network_config : secret(c.network_config->dump());
  }
  if (!c.metadata.empty()) j["metadata"] = c.metadata;
  if (c.config_drive) j["config_drive"] = *c.config_drive;
  return j;
}

std::string canonical(const Config& c) { return to_json(c, true).dump(); }
std::string config_sha256(const Config& c) { return sha256_of(canonical(c)); }

Status validate_profile_name(std::string_view name) {
  const bool ok =
      !name.empty() && name.size() <= 63 && std::isalnum(static_cast<unsigned char>(name[0])) &&
      std::all_of(name.begin(), name.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
      });
  if (!ok) {
    return make_error(Errc::kInvalid,
                      "profile names are 1-63 characters of a-z, 0-9, '.', '_', '-', starting "
                      "with a letter or digit");
  }
  return Unit{};
}

bool selects(const proto::Selector& selector, const std::map<std::string, std::string>& labels) {
  for (const auto& t : selector) {
    auto it = labels.find(t.key);
    switch (t.op) {
      case proto::LabelTerm::Op::kEquals:
        if (it == labels.end() || it->second != t.value) return false;
        break;
      case proto::LabelTerm::Op::kNotEquals:
        if (it != labels.end() && it->second == t.value) return false;
        break;
      case proto::LabelTerm::Op::kExists:
        if (it == labels.end()) return false;
        break;
      case proto::LabelTerm::Op::kNotExists:
        if (it != labels.end()) return false;
        break;
    }
  }
  return true;
}

namespace {

void apply(Config& out, const Config& in) {
  if (in.hostname) out.hostname = in.hostname;
  if (in.fqdn) {
    out.fqdn = in.fqdn;
    // An FQDN names its host: a later document's FQDN wins over an earlier hostname.
    if (!in.hostname) out.hostname = in.fqdn->substr(0, in.fqdn->find('.'));
  }
  if (in.ssh_authorized_keys) {
    if (!out.ssh_authorized_keys) out.ssh_authorized_keys.emplace();
    for (const auto& k : *in.ssh_authorized_keys) {
      auto& keys = *out.ssh_authorized_keys;
      if (std::find(keys.begin(), keys.end(), k) == keys.end()) keys.push_back(k);
    }
  }
  if (in.user_data) out.user_data = in.user_data;
  if (in.vendor_data) out.vendor_data = in.vendor_data;
  if (in.network_config) out.network_config = in.network_config;
  for (const auto& [k, v] : in.metadata) out.metadata[k] = v;
  if (in.config_drive) out.config_drive = in.config_drive;
}

}  // namespace

Effective merge(const std::vector<Profile>& profiles,
                const std::map<std::string, std::string>& labels,
                const std::optional<Config>& machine) {
  std::vector<const Profile*> order;
  for (const auto& p : profiles) {
    if (selects(p.selector, labels)) order.push_back(&p);
  }
  std::sort(order.begin(), order.end(), [](const Profile* a, const Profile* b) {
    return a->priority != b->priority ? a->priority < b->priority : a->name < b->name;
  });
  Effective e;
  for (const auto* p : order) {
    apply(e.config, p->config);
    e.sources.push_back("profile:" + p->name);
  }
  if (machine) {
    apply(e.config, *machine);
    e.sources.emplace_back("machine");
  }
  // A hostname from one document and an FQDN from another must still agree.
  if (e.config.hostname && e.config.fqdn &&
      e.config.fqdn->substr(0, e.config.fqdn->find('.')) != *e.config.hostname) {
    e.config.fqdn = *e.config.hostname + e.config.fqdn->substr(e.config.fqdn->find('.'));
  }
  return e;
}

std::string instance_id(std::int64_t deployment_id) {
  return "kiln-" + std::to_string(deployment_id);
}

std::string hostname_of(const Config& c, const Instance& i) {
  if (c.hostname) return *c.hostname;
  if (c.fqdn) return c.fqdn->substr(0, c.fqdn->find('.'));
  if (is_label(i.machine_name)) return i.machine_name;
  return "machine-" + std::to_string(i.machine_id);
}

namespace {

std::string local_hostname(const Config& c, const Instance& i) {
  if (c.fqdn) return *c.fqdn;
  return hostname_of(c, i);
}

// kiln's own vendor-data: the boot confirmation through cloud-init's phone_home module (runs
// at the end of the final stage, so "booted" means cloud-init finished).
std::string kiln_vendor_part(const Instance& i) {
  json cfg = {{"phone_home",
               {{"url", i.phone_home_url}, {"post", {"instance_id", "hostname"}}, {"tries", 10}}}};
  return "#cloud-config\n" + cfg.dump() + "\n";
}

}  // namespace

NoCloudFiles render_nocloud(const Config& c, const Instance& i) {
  NoCloudFiles f;
  json md = {{"instance-id", instance_id(i.deployment_id)},
             {"local-hostname", local_hostname(c, i)}};
  if (c.ssh_authorized_keys && !c.ssh_authorized_keys->empty()) {
    md["public-keys"] = *c.ssh_authorized_keys;
  }
  md["kiln"] = {{"deployment_id", i.deployment_id},
                {"machine_id", i.machine_id},
                {"machine", i.machine_name},
                {"image", i.image},
                {"metadata", c.metadata}};
  // ASCII only (\u escapes): cloud-init's YAML loader refuses some raw code points (C1).
  f.meta_data = md.dump(2, ' ', true) + "\n";
  f.user_data = c.user_data.value_or("");
  // The operator's vendor-data and kiln's phone_home, as one MIME multipart document when
  // there are both (cloud-init runs every part).
  const bool phone = !i.phone_home_url.empty();
  if (!c.vendor_data) {
    f.vendor_data = phone ? kiln_vendor_part(i) : "";
  } else if (!phone || *part_type(*c.vendor_data) == "multipart") {
    f.vendor_data = *c.vendor_data;  // a MIME document is passed on as is (no phone_home)
  } else {
    const std::string ours = kiln_vendor_part(i);
    std::string boundary = "kiln-" + sha256_of(ours + *c.vendor_data).substr(0, 24);
    std::string out =
        "Content-Type: multipart/mixed; boundary=\"" + boundary + "\"\nMIME-Version: 1.0\n\n";
    auto part = [&](std::string_view type, std::string_view body) {
      out += "--" + boundary + "\nContent-Type: " + std::string(type) +
             "; charset=\"utf-8\"\nMIME-Version: 1.0\n\n" + std::string(body);
      if (out.back() != '\n') out += '\n';
    };
    part("text/cloud-config", ours);
    part(*part_type(*c.vendor_data), *c.vendor_data);
    out += "--" + boundary + "--\n";
    f.vendor_data = std::move(out);
  }
  if (c.network_config) f.network_config = c.network_config->dump(2, ' ', true) + "\n";
  return f;
}

std::size_t rendered_size(const Config& c) {
  Instance i{1, 1, std::string(63, 'm'), std::string(257, 'i'), "", std::string(512, 'u')};
  const auto f = render_nocloud(c, i);
  return f.meta_data.size() + f.user_data.size() + f.vendor_data.size() +
         (f.network_config ? f.network_config->size() : 0);
}

std::optional<std::string> ec2_meta_data(const Config& c, const Instance& i,
                                         const std::vector<std::string>& path) {
  const auto& keys = c.ssh_authorized_keys ? *c.ssh_authorized_keys : std::vector<std::string>{};
  std::map<std::string, std::string> leaves = {
      {"instance-id", instance_id(i.deployment_id)},
      {"hostname", local_hostname(c, i)},
      {"local-hostname", local_hostname(c, i)},
      {"instance-type", "bare-metal"},
      {"ami-id", i.image},
  };
  if (!i.local_ipv4.empty()) leaves["local-ipv4"] = i.local_ipv4;
  auto listing = [](const std::vector<std::string>& entries) {
    std::string out;
    for (const auto& e : entries) out += (out.empty() ? "" : "\n") + e;
    return out;
  };
  if (path.empty()) {
    std::vector<std::string> entries;
    for (const auto& [k, _] : leaves) entries.push_back(k);
    if (!keys.empty()) entries.emplace_back("public-keys/");
    if (!c.metadata.empty()) entries.emplace_back("tags/");
    std::sort(entries.begin(), entries.end());
    return listing(entries);
  }
  if (path.size() == 1) {
    if (auto it = leaves.find(path[0]); it != leaves.end()) return it->second;
  }
  if (path[0] == "public-keys" && !keys.empty()) {
    if (path.size() == 1) {
      std::vector<std::string> entries;
      for (std::size_t k = 0; k < keys.size(); ++k) {
        entries.push_back(std::to_string(k) + "=key-" + std::to_string(k));
      }
      return listing(entries);
    }
    std::size_t k = 0;
    const auto& n = path[1];
    if (n.empty() || n.size() > 3 || !std::all_of(n.begin(), n.end(), ::isdigit)) {
      return std::nullopt;
    }
    k = std::stoul(n);
    if (k >= keys.size()) return std::nullopt;
    if (path.size() == 2) return std::string("openssh-key");
    if (path.size() == 3 && path[2] == "openssh-key") return keys[k] + "\n";
    return std::nullopt;
  }
  if (path[0] == "tags" && !c.metadata.empty()) {
    if (path.size() == 1) return std::string("instance/");
    if (path[1] != "instance") return std::nullopt;
    if (path.size() == 2) {
      std::vector<std::string> entries;
      for (const auto& [k, _] : c.metadata) entries.push_back(k);
      return listing(entries);
    }
    if (path.size() == 3) {
      if (auto it = c.metadata.find(path[2]); it != c.metadata.end()) return it->second;
    }
  }
  return std::nullopt;
}

}  // namespace kiln::cloudinit
