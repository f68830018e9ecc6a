// proto/resources.h — the REST API's resources as plain value types: Machine, ImageVersion,
// Deployment, AgentReport, Token, Event. kilnd's store persists them, the API renders them,
// the CLI and the agent parse them, all through the JSON codecs declared here, so the three
// programs read and write the same shapes (proto/openapi.yaml's schemas; a unit test checks
// the two agree). Times are milliseconds since the Unix epoch (UTC), rendered as RFC 3339.
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "core/result.h"
#include "proto/api_types.h"

namespace kiln::proto {

struct VersionRef {
  std::int64_t id = 0;
  std::string name;
  std::string version;
};

struct Machine {
  std::int64_t id = 0;
  std::string name;
  std::vector<std::string> macs;  // canonical lower-case, first one is the primary
  std::optional<std::string> uuid;
  std::optional<std::string> ipv4;  // reserved address (dotted quad), for DHCP
  proto::MachineState state = proto::MachineState::kDiscovered;
  std::string state_reason;
  // false: registered by its first PXE boot under boot.discovery = approve, waiting for an
  // operator (it boots nothing until approved).
  bool approved = true;
  std::map<std::string, std::string> labels;
  std::string inventory_json = "{}";          // a JSON object, as stored (validated on write)
  std::optional<VersionRef> current_version;  // what its disk holds (last succeeded deploy)
  std::optional<std::int64_t> active_deployment_id;
  std::optional<VersionRef> assigned_version;  // target of the active deployment
  std::optional<std::string> bmc_driver;       // "redfish" | "ipmi" when it has a BMC
  std::int64_t created_at = 0;
  std::int64_t updated_at = 0;
};

struct ImageVersion {
  std::int64_t id = 0;
  std::string name;
  std::string version;
  std::int64_t size_bytes = 0;
  std::string sha256;
  std::string format = "kiln";
  std::optional<std::string> source_url;
  // External images: the Ed25519 signature (hex) over proto::image::external_signing_message
  // by a trusted key; none when registered unsigned.
  std::optional<std::string> signature;
  std::string description;
  nlohmann::json labels = nlohmann::json::object();
  std::string created_by;
  std::int64_t created_at = 0;
};

struct Deployment {
  std::int64_t id = 0;
  std::int64_t machine_id = 0;
  std::optional<VersionRef> from_version;
  VersionRef to_version;
  std::string kind;  // "assign" | "rollback"
  std::string requested_by;
  std::int64_t created_at = 0;
  proto::DeploymentStatus status = proto::DeploymentStatus::kPending;
  std::string status_reason;
  std::string stage;
  std::int64_t bytes_done = 0;
  std::int64_t bytes_total = 0;
  std::optional<std::int64_t> started_at;
  std::optional<std::int64_t> finished_at;
  bool reboot = false;                      // kilnd power-cycles the machine through its BMC for it
  std::optional<std::int64_t> written_at;   // the agent's verified success
  std::optional<std::int64_t> powered_at;   // kilnd's last power-on/reset of the machine for it
  std::optional<std::int64_t> booted_at;    // the deployed OS confirmed its boot
  std::optional<std::int64_t> deadline_at;  // the current stage's deadline
  int deadline_misses = 0;                  // deadlines missed so far (each power-cycles)
  // The SHA-256 of the configuration snapshot it applies (docs/config.md); nullopt: none.
  std::optional<std::string> config_sha256;
};
// Milliseconds from kilnd's power-on (or, without one, the image written) to the confirmed
// boot; nullopt before the boot is confirmed.
std::optional<std::int64_t> boot_ms(const Deployment& d);

// What an agent reports while it works and when it is done.
// Fields left unset keep their previous values.
// What a success report proves (docs/security.md): figures kilnd checks against what it
// served. A .kiln image: the SHA-256 of the manifest the agent verified, and the image bytes it
// settled by kind (written from fetched or local chunks, skipped because the disk held them,
// zeroed, unmapped): kilnd recomputes the image size and the zero/unmapped bytes from the same
// manifest. An external image: the SHA-256 and size of the stream the agent verified.
struct SuccessProof {
  std::string manifest_sha256;  // .kiln images
  std::string image_sha256;     // external images
  std::int64_t image_bytes = 0;
  std::int64_t written_bytes = 0, skipped_bytes = 0, zeroed_bytes = 0, unmapped_bytes = 0;
};

struct AgentReport {
  std::optional<std::string> stage;
  std::optional<std::int64_t> bytes_done;
  std::optional<std::int64_t> bytes_total;
  // Set on the final report: succeeded or failed (with reason).
  std::optional<proto::DeploymentStatus> result;
  std::string reason;
  nlohmann::json detail = nlohmann::json::object();  // rate, eta, stage timings, ...
  std::optional<SuccessProof> proof;                 // required on a succeeded result
};

struct Token {
  std::int64_t id = 0;
  std::string name;
  proto::Scope scope = proto::Scope::kRead;
  std::int64_t created_at = 0;
  std::optional<std::int64_t> revoked_at;
};

struct Event {
  std::int64_t id = 0;
  std::int64_t created_at = 0;
  std::string type;
  std::optional<std::int64_t> machine_id;
  std::optional<std::int64_t> deployment_id;
  nlohmann::json data = nlohmann::json::object();
};

// --- JSON codecs (the wire shapes of proto/openapi.yaml) ------------------------------------
// Encoders produce exactly the schema's properties (nlohmann's sorted key order). Decoders
// accept what the encoders produce, ignore unknown properties (a newer server may add some),
// and fail naming the first bad property: kBadRequest for a wrong type or a missing required
// property, kInvalid for a value out of range. Times travel as RFC 3339 UTC with milliseconds.

nlohmann::json to_json(const VersionRef& v);  // {"image","version"}
nlohmann::json to_json(const Machine& m);
// The same text as to_json(m).dump(), appended without building a DOM (machine lists hold
// thousands of machines).
void append_json(std::string& out, const Machine& m);
nlohmann::json to_json(const Deployment& d);
nlohmann::json to_json(const ImageVersion& v);
nlohmann::json to_json(const Token& t);
nlohmann::json to_json(const Event& e);
// An agent's progress report, or its result when `r.result` is set (AgentProgress/AgentResult).
nlohmann::json to_json(const AgentReport& r);

Result<VersionRef> version_ref_from_json(const nlohmann::json& j);
Result<Machine> machine_from_json(const nlohmann::json& j);
Result<Deployment> deployment_from_json(const nlohmann::json& j);
Result<ImageVersion> image_version_from_json(const nlohmann::json& j);
Result<Token> token_from_json(const nlohmann::json& j);
Result<Event> event_from_json(const nlohmann::json& j);
// Checks types and ranges only (stage <= 64 chars, 0 <= bytes_done <= bytes_total, detail an
// object); size limits on detail are the receiver's.
Result<AgentReport> agent_report_from_json(const nlohmann::json& j);

}  // namespace kiln::proto
