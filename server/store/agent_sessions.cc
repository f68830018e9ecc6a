// Store: agent credentials, bound at first use (docs/security.md).
//
// A deployment has a boot ticket, printed into its iPXE script, stable for the deployment (a
// second script fetch does not change it) and not a secret. The ticket opens an agent session:
// the first session binds the deployment to its source address; a later one (the machine
// booted again) must come from the same address and replaces the session token, and each one
// counts as an agent boot. The session token is shown once and stored as a hash.
#include <algorithm>

#include "core/crypto.h"
#include "store/internal.h"

namespace kiln::store {

using namespace internal;  // NOLINT: the shared implementation helpers

namespace {

Error not_active(std::int64_t id, const Deployment& d, std::string_view what) {
  return make_error(Errc::kConflict, "deployment " + std::to_string(id) + " is " +
                                         proto::to_string(d.status) + "; no " + std::string(what));
}

}  // namespace

Result<std::string> Store::agent_ticket(std::int64_t deployment_id, std::int64_t expires_at_ms) {
  std::lock_guard lock(write_mu_);
  Db& db = *writer_;
  Transaction tx(db);
  auto d = load_deployment(db, deployment_id);
  if (!d) {
    return deployment_not_found(deployment_id);
  }
  if (!proto::is_active(d->status)) return not_active(deployment_id, *d, "boot ticket");
  auto s = db.prepare(
      "SELECT agent_ticket, agent_ticket_expires_at FROM deployments WHERE id = ? AND "
      "agent_ticket IS NOT NULL");
  s.bind(1, deployment_id);
  if (s.step() && s.int64(1) > clock_.now_ms()) return s.text(0);
  std::string ticket = "kilnticket_" + random_hex(20);
  db.prepare("UPDATE deployments SET agent_ticket = ?, agent_ticket_expires_at = ? WHERE id = ?")
      .bind(1, ticket)
      .bind(2, expires_at_ms)
      .bind(3, deployment_id)
      .run();
  tx.commit();
  return ticket;
}

Result<std::string> Store::reissue_agent_ticket(std::int64_t deployment_id,
                                                std::int64_t expires_at_ms,
                                                const std::string& who) {
  std::lock_guard lock(write_mu_);
  Db& db = *writer_;
  const auto now = clock_.now_ms();
  Transaction tx(db);
  auto d = load_deployment(db, deployment_id);
  if (!d) {
    return deployment_not_found(deployment_id);
  }
  if (!proto::is_active(d->status)) return not_active(deployment_id, *d, "agent ticket");
  std::string ticket = "kilnticket_" + random_hex(20);
  // A new ticket unbinds the deployment: the running session (if any) ends, and the next
  // session may come from any address.
  db.prepare(
        "UPDATE deployments SET agent_ticket = ?, agent_ticket_expires_at = ?, "
        "agent_token_hash = NULL, agent_token_expires_at = NULL, agent_address = NULL, "
        "agent_boots = 0 "
        "WHERE id = ?")
      .bind(1, ticket)
      .bind(2, expires_at_ms)
      .bind(3, deployment_id)
      .run();
  append_event(db, now, "agent.ticket_reissued", d->machine_id, deployment_id, {{"by", who}});
  tx.commit();
  return ticket;
}

Result<AgentSession> Store::open_agent_session(const std::string& ticket,
                                               const std::string& address, int max_boots,
                                               std::int64_t expires_at_ms, LeaseRule leases) {
  std::unique_lock lock(write_mu_);
  Db& db = *writer_;
  const auto now = clock_.now_ms();
  Transaction tx(db);
  auto s = db.prepare(std::string("SELECT id, agent_ticket_expires_at, agent_address, "
                                  "agent_boots FROM deployments WHERE agent_ticket = ? AND "
                                  "status IN ") +
                      kActive);
  s.bind(1, ticket);
  if (!s.step() || s.int64(1) <= now) {
    return make_error(Errc::kUnauthorized, "unknown, expired or finished boot ticket");
  }
  const std::int64_t id = s.int64(0);
  const auto bound = s.opt_text(2);
  const std::int64_t boots = s.int64(3) + 1;
  auto d = load_deployment(db, id);
  if (leases != LeaseRule::kIgnore) {
    // The addresses the machine's MACs hold bound leases on (as the boot service checks).
    auto l = db.prepare(
        "SELECT l.ip FROM dhcp_leases l JOIN machine_macs mm ON mm.mac = l.mac "
        "WHERE mm.machine_id = ? AND l.state = 'bound' AND l.expires_at > ?");
    l.bind(1, d->machine_id).bind(2, now);
    std::vector<std::string> leased;
    while (l.step()) leased.push_back(l.text(0));
    const bool free_pass = leased.empty() && leases == LeaseRule::kIfLeased;
    if (!free_pass && std::find(leased.begin(), leased.end(), address) == leased.end()) {
      const std::string why = leased.empty()
                                  ? "the machine holds no lease from kilnd (boot.require_lease)"
                                  : "not an address kilnd leased to this machine";
      append_event(db, now, "agent.session_refused", d->machine_id, id,
                   {{"address", address}, {"reason", why}});
      tx.commit();
      return make_error(Errc::kForbidden, why);
    }
  }
  if (bound && *bound != address) {
    append_event(db, now, "agent.session_refused", d->machine_id, id,
                 {{"address", address}, {"bound_address", *bound}});
    tx.commit();
    return make_error(Errc::kForbidden, "deployment " + std::to_string(id) +
                                            " is bound to the agent at another address");
  }
  if (boots > max_boots) {
    tx.commit();  // nothing written
    lock.unlock();
    AgentReport r;
    r.result = DeploymentStatus::kFailed;
    r.reason = "the agent booted " + std::to_string(max_boots) +
               " times without finishing this deployment";
    auto failed = report_progress(id, r);
    if (!failed) return failed.error();
    return make_error(Errc::kConflict, "deployment " + std::to_string(id) + " failed: " + r.reason);
  }
  std::string token = "kilnagent_" + random_hex(20);
  db.prepare(
        "UPDATE deployments SET agent_token_hash = ?, agent_token_expires_at = ?, "
        "agent_address = ?, agent_boots = ?, manifest_served_at = NULL WHERE id = ?")
      .bind(1, sha256_hex(token))
      .bind(2, expires_at_ms)
      .bind(3, address)
      .bind(4, boots)
      .bind(5, id)
      .run();
  append_event(db, now, "agent.session_opened", d->machine_id, id,
               {{"address", address}, {"boot", boots}});
  tx.commit();
  return AgentSession{std::move(*d), std::move(token), static_cast<int>(boots)};
}

Result<Deployment> Store::authenticate_agent(const std::string& token, const std::string& address) {
  auto db = reader();
  auto s = db->prepare(std::string("SELECT id, agent_token_expires_at, agent_address FROM "
                                   "deployments WHERE agent_token_hash = ? AND status IN ") +
                       kActive);
  s.bind(1, sha256_hex(token));
  if (!s.step() || s.int64(1) <= clock_.now_ms()) {
    return make_error(Errc::kUnauthorized, "unknown, expired or finished agent session");
  }
  if (s.opt_text(2).value_or(address) != address) {
    return make_error(Errc::kForbidden, "this agent session is bound to another address");
  }
  return std::move(*load_deployment(*db, s.int64(0)));
}

Status Store::mark_manifest_served(std::int64_t deployment_id) {
  std::lock_guard lock(write_mu_);
  Db& db = *writer_;
  db.prepare(
        "UPDATE deployments SET manifest_served_at = ? WHERE id = ? AND manifest_served_at IS "
        "NULL")
      .bind(1, clock_.now_ms())
      .bind(2, deployment_id)
      .run();
  return ok_status();
}

Status Store::record_refused_result(std::int64_t deployment_id, const std::string& address,
                                    const std::string& why) {
  std::lock_guard lock(write_mu_);
  Db& db = *writer_;
  Transaction tx(db);
  auto d = load_deployment(db, deployment_id);
  if (!d) {
    return deployment_not_found(deployment_id);
  }
  append_event(db, clock_.now_ms(), "deployment.result_refused", d->machine_id, deployment_id,
               {{"address", address}, {"reason", why}});
  tx.commit();
  return ok_status();
}

bool Store::manifest_served(std::int64_t deployment_id) {
  auto db = reader();
  auto s = db->prepare("SELECT manifest_served_at IS NOT NULL FROM deployments WHERE id = ?");
  s.bind(1, deployment_id);
  return s.step() && s.int64(0) != 0;
}

}  // namespace kiln::store
