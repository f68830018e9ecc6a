// store/store.h — kiln's persistent state: machines, image versions, deployments, API tokens
// and events, in one SQLite database (WAL mode, foreign keys on) or in PostgreSQL, shared by
// several kilnd (StoreOptions::url; the same SQL over store/db.h's two backends).
//
// Store is the only module that talks SQL. It keeps one writer connection (every change goes
// through it, serialized by a mutex, each change in one write transaction together with the
// event that records it: SQLite's BEGIN IMMEDIATE, PostgreSQL's transaction advisory lock that
// also serializes the writers of every other kilnd on the database) and a small pool of reader
// connections, so reads proceed while a write is in progress. All methods are thread-safe. Expected
// failures (unknown machine, MAC already registered, deployment in progress, ...) are returned as
// `Result`s; database failures (disk full, I/O error, corruption, connection lost) throw `DbError`.
//
// Implementation: one file per resource (machines.cc, images.cc, deployments.cc, tokens.cc,
// leases.cc, events.cc) over the shared helpers of store/internal.h; store.cc opens the
// database, pools readers, and holds the event subscriptions and leaderships; db.h is the
// connection layer, sqlite.* and pg.* its backends.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/clock.h"
#include "core/result.h"
#include "proto/api_types.h"
#include "proto/dhcp_lease.h"
#include "proto/resources.h"
#include "proto/rollout.h"
#include "store/migrations.h"

namespace kiln::store {

class Db;
class PgListener;

// The API resources are proto's value types (proto/resources.h); the store persists them.
using proto::AgentReport;
using proto::Deployment;
using proto::DhcpLease;  // a DHCP lease row (proto/dhcp_lease.h)
using proto::Event;
using proto::ImageVersion;
using proto::Machine;
using proto::Token;
using proto::VersionRef;

struct NewMachine {
  std::vector<std::string> macs;  // at least one; normalized by the caller
  std::optional<std::string> uuid;
  std::optional<std::string> ipv4;  // validated dotted quad
  std::string name;
  std::map<std::string, std::string> labels;
  proto::MachineState state = proto::MachineState::kReady;
  bool approved = true;
};

// Whether an agent session must come from an address the machine leased from kilnd's DHCP.
enum class LeaseRule { kIgnore, kIfLeased, kRequired };

struct AgentSession {
  Deployment deployment;
  std::string token;  // the session's bearer token, shown once
  int boot = 0;       // which agent boot of the deployment this is (1 = first)
};

struct MachineFilter {
  proto::Selector selector;  // empty: all machines
  std::optional<proto::MachineState> state;
  std::int64_t after_id = 0;  // pagination cursor: machines with id > after_id
  int limit = 1000;
};

struct MachinePage {
  std::vector<Machine> items;
  std::optional<std::int64_t> next_after;  // set when more machines may follow
};

// A label patch: a value sets the label, nullopt removes it.
using LabelPatch = std::map<std::string, std::optional<std::string>>;

// An event that ends a stage of a deployment (deployment.progress, .succeeded, .failed, .booted,
// .superseded) with that deployment's timestamps as they are now (ms since the epoch), for the
// stage-duration histograms of /metrics.
struct DeploymentMilestone {
  std::int64_t event_id = 0;
  std::int64_t event_at = 0;
  std::string type;
  std::int64_t deployment_id = 0;
  std::int64_t created_at = 0;
  std::optional<std::int64_t> started_at, written_at, booted_at, finished_at;
};

// A sealed configuration document (the store never sees the plaintext) and the SHA-256 of its
// canonical plaintext.
struct ConfigRecord {
  std::string sealed;
  std::string sha256;
  std::int64_t updated_at = 0;
};
struct ProfileRecord {
  std::int64_t id = 0;
  std::string name;
  std::string selector;  // label selector text ("" = every machine)
  int priority = 0;
  ConfigRecord config;
  std::int64_t created_at = 0;
};
// What a deployment's configuration snapshot is made of, read inside the assignment's
// transaction: the machine (its name and labels) and every document that may apply to it.
struct ConfigInputs {
  Machine machine;
  std::optional<ConfigRecord> machine_config;
  std::vector<ProfileRecord> profiles;
  // A rollout's configuration layer (docs/rollouts.md): applied like a profile above every
  // other profile, below the machine's own document.
  std::optional<ConfigRecord> layer;
};
// Makes the snapshot (sealed) from the inputs; nullopt: nothing to apply (no document). With
// no source at all (no machine config, no profile, no layer) it must give nullopt: a bulk
// assignment does not call it then.
using ConfigSnapshotter =
    std::function<Result<std::optional<ConfigRecord>>(const ConfigInputs& inputs)>;

struct AssignRequest {
  std::string image;
  std::string version;
  std::string requested_by;
  bool force = false;  // supersede an active deployment to another version
  // kilnd power-cycles the machine through its BMC: recorded when the machine has a BMC; a
  // machine without one is refused when `reboot_required` (else recorded as no reboot).
  bool reboot = false;
  bool reboot_required = false;
  // With a recorded reboot: the image must be written by then (ms), in case the power-on
  // never happens (the BMC fails, kilnd stops first); kilnd's power-on sets a fresh one.
  std::optional<std::int64_t> deadline_at;
  // The deployment's configuration snapshot, made in the transaction (unset: none). Rollback
  // and retry copy the snapshot of the deployment they repeat instead.
  ConfigSnapshotter config;
  std::optional<ConfigRecord> config_layer;  // ConfigInputs::layer (a rollout's)
};

// A rollout as asked for (POST /api/v1/rollouts, docs/rollouts.md), validated by the caller.
struct NewRollout {
  proto::Selector selector;
  std::string image;
  std::string version;
  std::optional<int> batch_count;    // one of the two
  std::optional<int> batch_percent;  // 1..100
  int canary = 0;
  std::optional<int> max_unavailable;  // default: the batch size
  int max_failures = 0;
  std::string on_failure = "pause";
  std::string gate = "booted";
  int gate_timeout_s = 1800;
  int pause_between_s = 0;
  std::optional<std::string> spread_by;
  std::optional<ConfigRecord> config;  // sealed layer
  std::string requested_by;
};
enum class RolloutAction { kPause, kResume, kAbort, kRollback };
// A deployment a rollout started (or rolled back) for one of its machines.
struct RolloutStart {
  std::int64_t machine_id = 0;
  std::optional<Deployment> deployment;  // nullopt: not started, `error` says why (skipped)
  std::string error;
};

// A machine's BMC. `credentials` is sealed by the caller (the store keeps only ciphertext),
// as JSON {"username","password"} under the additional data bmc_credentials_aad(record): the
// machine and where (and how) the credentials may be sent, so that changing the address or the
// TLS settings in the database alone makes them unusable rather than sends them elsewhere.
struct BmcRecord;
std::string bmc_credentials_aad(const BmcRecord& r);
struct BmcRecord {
  std::int64_t machine_id = 0;
  std::string driver;  // "redfish" | "ipmi"
  std::string address;
  std::string credentials;  // sealed {"username","password"}
  std::string ca_file;
  bool insecure = false;
  std::string system_id;
  std::string boot_mode = "auto";  // auto | uefi | legacy
  std::int64_t updated_at = 0;
};
inline std::string bmc_credentials_aad(const BmcRecord& r) {
  return "kiln-bmc:" + std::to_string(r.machine_id) + ":" + r.driver + ":" + r.address + ":" +
         (r.insecure ? "insecure" : "verify") + ":" + r.ca_file;
}

struct AssignOutcome {
  Deployment deployment;
  bool created = true;  // false: the same version was already being deployed (idempotent)
  std::optional<std::int64_t> superseded_id;
};

struct BulkOutcome {
  std::vector<std::pair<std::int64_t, AssignOutcome>> results;  // machine id -> outcome
};

struct StoreOptions {
  std::string path = "var/kiln.db";  // the SQLite file when `url` is empty
  // The database: empty or a file path = SQLite; "postgresql://...", "postgres://..." or a
  // libpq conninfo ("host=/run/pg dbname=kiln") = PostgreSQL, shared by every kilnd using it.
  std::string url;
  int busy_timeout_ms = 5000;
  // FULL: every commit is fsynced (survives power loss); NORMAL: survives process crashes.
  bool synchronous_full = true;
  int readers = 4;  // size of the reader connection pool
};

class Store {
 public:
  // Opens the database, applies pending migrations (empty: the embedded set of the backend).
  // Fails (without touching the database) if its schema is newer than `migrations` or a
  // migration fails.
  static Result<std::unique_ptr<Store>> open(const StoreOptions& options, const Clock& clock,
                                             std::span<const Migration> migrations = {});
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  int schema_version();
  // "ok" or SQLite's list of problems.
  std::string integrity_check();

  // --- machines ---
  Result<Machine> create_machine(const NewMachine& m, const std::string& who);
  Result<Machine> get_machine(std::int64_t id);
  Result<Machine> find_machine_by_mac(const std::string& mac);
  MachinePage list_machines(const MachineFilter& filter);
  Result<Machine> patch_machine_labels(std::int64_t id, const LabelPatch& patch,
                                       const std::string& who);
  // Refuses (conflict) while a deployment is active unless `force`, which supersedes it.
  // The machine's history stays; its MACs are released for re-registration.
  Status delete_machine(std::int64_t id, bool force, const std::string& who);

  // --- image versions ---
  // Registers metadata for a new version. Re-registering identical metadata is idempotent
  // (returns the existing version, created = false); different metadata is a conflict.
  Result<std::pair<ImageVersion, bool>> register_image_version(const ImageVersion& v);
  std::vector<ImageVersion> list_image_versions(const std::optional<std::string>& name);
  Result<ImageVersion> get_image_version(const std::string& name, const std::string& version);
  // Conflict while a machine holds it or an active deployment targets it.
  Status delete_image_version(const std::string& name, const std::string& version,
                              const std::string& who);

  // --- deployments ---
  Result<AssignOutcome> assign(std::int64_t machine_id, const AssignRequest& req);
  // All-or-nothing: every machine matching `selector` gets the version, or none does.
  Result<BulkOutcome> assign_bulk(const proto::Selector& selector, const AssignRequest& req);
  // Reassigns the most recent version whose deployment on this machine was confirmed booted
  // and that differs from the machine's latest assignment; supersedes an active deployment.
  // A machine that never confirmed a boot (its images have no confirmation hook) falls back to
  // the most recent written (succeeded) version, unless `booted_only`. Conflict when there is
  // none. `req` gives who, reboot and the deadline (its image/version are ignored).
  Result<AssignOutcome> rollback(std::int64_t machine_id, const AssignRequest& req,
                                 bool booted_only = false);
  Result<AssignOutcome> rollback(std::int64_t machine_id, const std::string& who) {
    AssignRequest req;
    req.requested_by = who;
    return rollback(machine_id, req);
  }
  Result<std::vector<Deployment>> list_deployments(std::int64_t machine_id);
  Result<Deployment> get_deployment(std::int64_t id);
  // --- agent sessions (agent_sessions.cc) ---
  // The boot ticket of an active deployment, printed into its iPXE script: the same ticket for
  // every fetch while it is valid (minted now, valid until `expires_at_ms`, when there is none).
  Result<std::string> agent_ticket(std::int64_t deployment_id, std::int64_t expires_at_ms);
  // An operator's fresh ticket: replaces the old one, ends the running agent session,
  // unbinds the deployment from its address and restarts its count of agent boots (recorded
  // as agent.ticket_reissued).
  Result<std::string> reissue_agent_ticket(std::int64_t deployment_id, std::int64_t expires_at_ms,
                                           const std::string& who);
  // Opens an agent session with a boot ticket from `address`: the first one binds the
  // deployment to that address; later ones must come from it (forbidden otherwise, recorded as
  // agent.session_refused) and replace the session token. Each counts as an agent boot; past
  // `max_boots` the deployment is failed instead (conflict). Unauthorized: an unknown,
  // expired or finished ticket.
  // `leases`: kIfLeased also refuses an address that is not one the machine holds a bound
  // DHCP lease on, when it holds any (kRequired: also when it holds none).
  Result<AgentSession> open_agent_session(const std::string& ticket, const std::string& address,
                                          int max_boots, std::int64_t expires_at_ms,
                                          LeaseRule leases = LeaseRule::kIgnore);
  // The active deployment an agent session token belongs to: unauthorized if unknown, expired
  // or ended; forbidden from another address than the session's.
  Result<Deployment> authenticate_agent(const std::string& token, const std::string& address);
  // Notes that the deployment's manifest was served to its current session; manifest_served()
  // says whether it was (a success report without it is no proof).
  Status mark_manifest_served(std::int64_t deployment_id);
  bool manifest_served(std::int64_t deployment_id);
  // Records a success report refused for want of proof (deployment.result_refused).
  Status record_refused_result(std::int64_t deployment_id, const std::string& address,
                               const std::string& why);
  // A success sets written_at and the boot deadline `booted_deadline_at` (none: unwatched).
  Result<Deployment> report_progress(std::int64_t deployment_id, const AgentReport& report,
                                     std::optional<std::int64_t> booted_deadline_at = {});

  // --- BMCs and confirmed boots (power.cc) ---
  // Sets (replaces) machine `r.machine_id`'s BMC (event machine.bmc_set, without credentials).
  Result<BmcRecord> put_bmc(const BmcRecord& r, const std::string& who);
  Result<BmcRecord> get_bmc(std::int64_t machine_id);  // kNotFound: none
  Status delete_bmc(std::int64_t machine_id, const std::string& who);
  std::int64_t count_bmcs();
  // A fresh instance credential for the active deployment `deployment_id` (the previous one
  // stops working): the deployed OS confirms its boot with it. Stored as a hash.
  Result<std::string> mint_instance_token(std::int64_t deployment_id);
  // The deployed OS's boot confirmation: the deployment holding `token` becomes booted (once;
  // again: the same answer, no new event). Unauthorized: unknown credential; conflict: the
  // deployment is not the machine's latest, or is not succeeded (not written yet, or failed).
  Result<Deployment> confirm_boot(const std::string& token, const std::string& address);
  // kilnd powered the machine on / reset it for deployment `deployment_id`: powered_at = now
  // and, when given, a new deadline for the current stage.
  Status mark_powered(std::int64_t deployment_id, std::optional<std::int64_t> deadline_at);
  // A deadline for a pending or running deployment that has none (else nothing changes).
  Status watch_deployment(std::int64_t deployment_id, std::int64_t deadline_at);
  // Deployments whose deadline passed at `now` (pending, running, or succeeded awaiting boot).
  std::vector<Deployment> overdue_deployments(std::int64_t now, int limit);
  // A missed deadline that is retried: counts it, sets the next deadline (event
  // deployment.deadline_missed with `why`). Conflict when the deployment moved on meanwhile.
  Result<Deployment> miss_deadline(std::int64_t deployment_id, std::int64_t expected_deadline,
                                   std::int64_t next_deadline, const std::string& why);
  // A counted miss whose power-cycle never ran (the instance lost the engine lease before its
  // turn): the miss is given back and the deadline set to `now`, so whoever leads handles it
  // at its next pass (event deployment.deadline_returned with `why`). Conflict when the
  // deployment moved on (its deadline is no longer `expected_deadline`).
  Result<Deployment> return_miss(std::int64_t deployment_id, std::int64_t expected_deadline,
                                 const std::string& why);
  // A missed deadline past its retries: the deployment (pending, running or succeeded) fails
  // with `why`, and so does the machine. Conflict when it moved on meanwhile.
  Result<Deployment> fail_overdue(std::int64_t deployment_id, std::int64_t expected_deadline,
                                  const std::string& why);
  // Records an event (power steps, refusals) in the history.
  void record_event(std::string_view type, std::optional<std::int64_t> machine_id,
                    std::optional<std::int64_t> deployment_id, const nlohmann::json& data);

  // --- configuration (configs.cc) ---
  // Creates or replaces the profile `p.name` (event profile.set, without the document).
  Result<ProfileRecord> put_profile(const ProfileRecord& p, const std::string& who);
  Result<ProfileRecord> get_profile(const std::string& name);  // kNotFound: none
  std::vector<ProfileRecord> list_profiles();
  Status delete_profile(const std::string& name, const std::string& who);
  Result<ConfigRecord> put_machine_config(std::int64_t machine_id, const ConfigRecord& c,
                                          const std::string& who);
  Result<ConfigRecord> get_machine_config(std::int64_t machine_id);  // kNotFound: none
  Status delete_machine_config(std::int64_t machine_id, const std::string& who);
  // A deployment's snapshot (kNotFound: no such deployment; nullopt: it has none).
  Result<std::optional<ConfigRecord>> deployment_config(std::int64_t deployment_id);
  // The deployment a deployed OS speaks for, for the metadata service: by its instance
  // credential, or by the source address of a bound, unexpired DHCP lease of one of the
  // machine's MACs. Only the machine's latest deployment, and only once written (succeeded or
  // booted): an unknown caller, an older deployment or one not written yet is kNotFound.
  Result<Deployment> instance_by_token(const std::string& token);
  Result<Deployment> instance_by_address(const std::string& address);
  // The deployed OS of deployment `deployment_id` proved it is up (a metadata fetch, phone_home):
  // as confirm_boot, `via` names how (in the event).
  Result<Deployment> confirm_instance_boot(std::int64_t deployment_id, const std::string& address,
                                           const std::string& via);

  // --- rollouts (rollouts.cc, docs/rollouts.md) ---
  // Resolves the selector and fixes the plan: batches, the canary batch, machines reported as
  // skipped (no BMC, failed before, deploying already). Conflict when a matched machine is in
  // another rollout that is not finished; not found when nothing matches.
  Result<proto::Rollout> create_rollout(const NewRollout& r);
  Result<proto::Rollout> get_rollout(std::int64_t id);
  // Newest first; `limit` at most.
  std::vector<proto::Rollout> list_rollouts(std::optional<proto::RolloutState> state, int limit);
  // Rollouts the engine drives (pending, running, paused, rolling_back).
  std::vector<std::int64_t> active_rollout_ids();
  // An operator's action; conflict when the rollout's state does not allow it.
  Result<proto::Rollout> rollout_action(std::int64_t id, RolloutAction action,
                                        const std::string& who);
  // The engine's pass: machines deploying or rolling back move on from their deployments
  // (booted, or written under gate "written": done; failed, superseded or past the gate's
  // timeout: failed), each move recorded; returns the rollout as it is now.
  // `timeouts` false: no machine fails for its gate's timeout in this pass (kilnd has just
  // started: confirmations that could not arrive while it was down get a chance first).
  Result<proto::Rollout> sync_rollout(std::int64_t id, bool timeouts = true);
  // Moves the rollout from `from` to `to` (conflict when it is not in `from` any more).
  // Entering rolling_back, aborted or failed marks its pending machines skipped.
  // `seen_at`: the rollout's updated_at the decision was made on (conflict when it changed).
  Result<proto::Rollout> transition_rollout(std::int64_t id, proto::RolloutState from,
                                            proto::RolloutState to, const std::string& reason,
                                            std::optional<std::int64_t> seen_at = std::nullopt);
  // Starts pending machines of a running rollout: each one's deployment (with reboot, the
  // rollout's configuration layer over its own; `base` gives who, the deadline and the
  // snapshotter) in this transaction. A machine that cannot be assigned now is marked skipped
  // with the reason. Conflict when the rollout is not running.
  Result<std::vector<RolloutStart>> start_rollout_machines(
      std::int64_t id, const std::vector<std::int64_t>& machines, const AssignRequest& base);
  // Rolls machines of a rolling_back rollout back to their previous version (Store::rollback,
  // with reboot); a machine without one is marked rollback_failed.
  Result<std::vector<RolloutStart>> roll_back_rollout_machines(
      std::int64_t id, const std::vector<std::int64_t>& machines, const AssignRequest& base);
  // The rollout's deployments recorded with a reboot that kilnd has not powered yet (pending,
  // powered_at unset): the engine asks the power service for them after a restart.
  std::vector<std::pair<std::int64_t, std::int64_t>> unpowered_rollout_deployments(std::int64_t id);

  // --- the boot path ---
  // The machine that owns `mac`; an unknown MAC is registered as `discovered` (no name, no
  // labels) by `who`, waiting for approval unless `approved`. Returns the machine and whether
  // it was created now.
  Result<std::pair<Machine, bool>> discover_machine(const std::string& mac, const std::string& who,
                                                    bool approved = true);
  // Approves a machine registered under boot.discovery = approve (idempotent).
  Result<Machine> approve_machine(std::int64_t id, const std::string& who);
  // Stores what the discovery agent found (a JSON object) and moves a `discovered` machine to
  // `ready`. In any other state the report is refused (conflict): it is not authenticated.
  // `other_macs` (the machine's other NICs, canonical) are added to the machine, so it is
  // recognized whichever NIC it boots from next; a report claiming a MAC another machine owns
  // is refused whole (conflict) and recorded as a machine.inventory_refused event. A machine
  // awaiting approval takes no inventory (conflict).
  Result<Machine> record_inventory(const std::string& mac, const nlohmann::json& inventory,
                                   const std::vector<std::string>& other_macs = {});
  // Retries a failed machine: when its latest deployment failed and fewer than
  // `max_attempts` deployments of that version failed in a row (counting back to the last one
  // not requested by `who`), creates a new deployment of the same version, requested by
  // `who`. Conflict when there is nothing to retry or the attempts are used up (the reason
  // says which).
  Result<AssignOutcome> retry_failed(std::int64_t machine_id, int max_attempts,
                                     const std::string& who);

  // --- API tokens ---
  // Returns the token record and the clear token (shown once, stored only as a hash).
  Result<std::pair<Token, std::string>> create_token(const std::string& name, proto::Scope scope);
  std::optional<Token> authenticate(const std::string& clear_token);
  std::vector<Token> list_tokens();
  Status revoke_token(std::int64_t id, const std::string& who);

  // --- events ---
  std::vector<Event> events_since(std::int64_t cursor, int limit,
                                  std::optional<std::int64_t> machine_id);
  std::int64_t last_event_id();

  // --- DHCP leases ---
  std::vector<DhcpLease> load_dhcp_leases();
  // The lease row of address `ip` (nullopt: none).
  std::optional<DhcpLease> load_dhcp_lease(const std::string& ip);
  // Writes the leases in one transaction (one commit, with synchronous=FULL one fsync, for a
  // whole batch). A lease overwrites an address's row only when the same client holds it, or
  // its lease expired, or it was released or declined: another instance sharing the database
  // may have handed the address out meanwhile. Returns the addresses REFUSED (their rows left
  // as they were: the caller must not ACK them); the rest of the batch is committed. Throws on
  // a database error.
  [[nodiscard]] std::vector<std::string> save_dhcp_leases(const std::vector<DhcpLease>& leases);
  // The addresses `mac` holds a bound, unexpired lease on (committed before its ACK was sent).
  std::vector<std::string> bound_lease_addresses(const std::string& mac);
  // Every live machine's MACs with its reserved address, if any (for the DHCP server's
  // "known machine" check and reservations).
  std::vector<std::pair<std::string, std::optional<std::string>>> list_machine_macs();

  // --- aggregates for /metrics ---
  std::map<std::string, std::int64_t> count_machines_by_state();
  std::map<std::string, std::int64_t> count_deployments_by_status();
  // The stage-ending events after event `cursor`, oldest first, at most `limit`.
  std::vector<DeploymentMilestone> deployment_milestones_since(std::int64_t cursor, int limit);
  // The creation time (ms) of the oldest pending and of the oldest running deployment.
  std::map<std::string, std::optional<std::int64_t>> oldest_active_deployments();
  // Rollouts by state (every state present, 0 when none).
  std::map<std::string, std::int64_t> count_rollouts_by_state();
  // The live machines with a BMC configured.
  std::vector<std::int64_t> bmc_machine_ids();

  // --- several kilnd on one database ---
  // `fn(last_id)` is called after every committed write transaction that appended events: by
  // this Store's writes (SQLite and PostgreSQL) and, on PostgreSQL, by every other process
  // sharing the database (LISTEN/NOTIFY on a connection of its own, reconnected if it drops;
  // after a reconnect `fn` gets the latest id, covering notifications missed meanwhile). Ids
  // only grow: a call with an id not above the last one delivered is skipped. `fn` runs on the
  // writing thread (with the store's write lock held) or on the listener thread: it must be
  // quick, must not write to the Store and must not end a subscription. The subscription ends when
  // the returned handle is destroyed; once its destructor returns, `fn` is not running and will not
  // be called. The handle must not outlive the Store.
  class Subscription;
  [[nodiscard]] std::unique_ptr<Subscription> subscribe_events(
      std::function<void(std::int64_t last_id)> fn);

  // Leadership of once-only work named `name` (e.g. "rollouts"). PostgreSQL: a session
  // advisory lock on a dedicated connection, released by the server when the holder's
  // connection dies (process killed, network lost), so another instance takes over. SQLite:
  // an in-process lock (one holder per name and database per process; several kilnd on one
  // SQLite file is unsupported). Never blocks.
  class Leadership {
   public:
    virtual ~Leadership() = default;
    // Re-checks a held lease (PostgreSQL: one round trip) or tries to take it. Cheap enough
    // to call on every tick; thread-safe.
    virtual bool held() = 0;
  };
  std::unique_ptr<Leadership> try_lead(std::string_view name);

 private:
  Store(const StoreOptions& options, const Clock& clock);
  class ReaderLease;
  ReaderLease reader();

  const StoreOptions options_;
  const Clock& clock_;
  std::mutex write_mu_;  // the one writer path
  std::unique_ptr<Db> writer_;
  std::mutex readers_mu_;
  std::vector<std::unique_ptr<Db>> idle_readers_;

  std::unique_ptr<Db> connect(bool writer);
  void deliver_events(std::int64_t id);
  std::string url_;  // resolved: options_.url or options_.path
  bool postgres_ = false;
  std::mutex subs_mu_;  // guards subs_ and serializes deliveries
  std::vector<Subscription*> subs_;
  std::int64_t delivered_id_ = 0;
  std::unique_ptr<class PgListener> listener_;  // PostgreSQL, while anyone subscribes
};

class Store::Subscription {
 public:
  ~Subscription();
  Subscription(const Subscription&) = delete;
  Subscription& operator=(const Subscription&) = delete;

 private:
  friend class Store;
  Subscription(Store& s, std::function<void(std::int64_t)> fn) : store_(s), fn_(std::move(fn)) {}
  Store& store_;
  std::function<void(std::int64_t)> fn_;
};

}  // namespace kiln::store
