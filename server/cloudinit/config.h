// cloudinit/config.h — a machine's cloud-init configuration (docs/config.md): the document an
// operator sets on a machine or a profile, its validation, the merge of profiles and machine
// into the effective configuration a deployment snapshots, and what cloud-init reads from it:
// the NoCloud files (meta-data, user-data, vendor-data, network-config; the config drive and
// the metadata service serve the same bytes) and an EC2-compatible meta-data tree.
//
// Pure functions over values: no store, no sockets, no secrets key (callers seal and open).
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.h"
#include "proto/api_types.h"

namespace kiln::cloudinit {

// One configuration document. Every field is optional: an absent field leaves the value of a
// profile merged before it (or the default) in place.
struct Config {
  std::optional<std::string> hostname;  // an RFC 1123 label, lower case
  std::optional<std::string> fqdn;      // hostname.domain (its first label is the hostname)
  std::optional<std::vector<std::string>> ssh_authorized_keys;  // OpenSSH public key lines
  std::optional<std::string> user_data;                         // cloud-config or script; secret
  std::optional<std::string> vendor_data;                       // likewise
  std::optional<nlohmann::json> network_config;                 // network config version 2
  std::map<std::string, std::string> metadata;                  // free key/value metadata
  std::optional<bool> config_drive;  // write the config drive (default true)
  bool operator==(const Config&) const = default;
};

struct Limits {
  std::size_t max_user_data_bytes = 64 * 1024;  // user_data and vendor_data, each
};

// The document from its JSON form (an object with only the fields above). A wrong type is
// kBadRequest, a bad value kInvalid; either message starts with the field's name
// ("user_data: ...").
Result<Config> parse_config(const nlohmann::json& j, const Limits& limits = {});
// The JSON form. Without `secrets`, user_data, vendor_data and network_config are shown as
// {"bytes": N} (read-only callers never see them). metadata is not secret.
nlohmann::json to_json(const Config& c, bool secrets = true);
// The canonical serialization (sorted keys, no whitespace) and its SHA-256: equal hashes mean
// equal documents.
std::string canonical(const Config& c);
std::string config_sha256(const Config& c);

// A profile: a document applied to every machine whose labels match its selector.
struct Profile {
  std::string name;
  proto::Selector selector;  // empty: every machine
  int priority = 0;
  Config config;
};
// Profile names: 1-63 chars of [a-z0-9._-], starting with a letter or digit.
Status validate_profile_name(std::string_view name);
bool selects(const proto::Selector& selector, const std::map<std::string, std::string>& labels);

// The effective configuration of a machine: the profiles that select it in (priority, name)
// order, then the machine's own document. Scalars and documents (hostname, fqdn, user_data,
// vendor_data, network_config, config_drive) are replaced by later ones; SSH keys accumulate
// (duplicates dropped, first position kept); metadata merges key by key. `sources` lists what
// applied ("profile:<name>", "machine").
struct Effective {
  Config config;
  std::vector<std::string> sources;
};
Effective merge(const std::vector<Profile>& profiles,
                const std::map<std::string, std::string>& labels,
                const std::optional<Config>& machine);

// What a deployed instance is: fills the identity cloud-init sees.
struct Instance {
  std::int64_t deployment_id = 0;
  std::int64_t machine_id = 0;
  std::string machine_name;  // default hostname when the configuration names none
  std::string image;         // "name:version"
  std::string local_ipv4;    // "" when unknown
  // kilnd's boot confirmation URL for cloud-init's phone_home (carries the instance
  // credential); "" = no phone_home in the vendor-data.
  std::string phone_home_url;
};

// cloud-init's instance-id for a deployment: a new one for every deployment, so cloud-init
// runs its per-instance modules again after every redeploy and rollback.
std::string instance_id(std::int64_t deployment_id);
// The hostname cloud-init gets: the configured one, else the machine's name when it is a
// valid label, else "machine-<id>".
std::string hostname_of(const Config& c, const Instance& i);

// What the NoCloud files of `c` take at most on a config drive (bytes), to refuse at assignment
// a configuration the agent could not write (its drive holds 1 MiB of files).
std::size_t rendered_size(const Config& c);
inline constexpr std::size_t kMaxRenderedBytes = 1024 * 1024 - 64 * 1024;

// The NoCloud files. meta-data and vendor-data always exist; user-data is "" when none is
// configured (cloud-init then has nothing to run); network-config is nullopt when none is.
struct NoCloudFiles {
  std::string meta_data;
  std::string user_data;
  std::string vendor_data;
  std::optional<std::string> network_config;
};
NoCloudFiles render_nocloud(const Config& c, const Instance& i);

// The EC2 instance metadata tree under /<version>/meta-data/: `path` is the segments below it
// (empty: the root listing). A directory answers its listing (one entry per line, directories
// with a trailing '/'), a leaf its value; nullopt: no such entry.
std::optional<std::string> ec2_meta_data(const Config& c, const Instance& i,
                                         const std::vector<std::string>& path);

}  // namespace kiln::cloudinit
