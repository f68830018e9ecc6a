// Store: API tokens (stored hashed).
#include "store/internal.h"

namespace kiln::store {

using namespace internal;  // NOLINT: the shared implementation helpers

// --- API tokens ------------------------------------------------------------------------------

Result<std::pair<Token, std::string>> Store::create_token(const std::string& name,
                                                          proto::Scope scope) {
  if (name.empty() || name.size() > 64) {
    return make_error(Errc::kInvalid, "token name must be 1-64 characters");
  }
  std::string clear = "kiln_" + random_hex(20);
  std::lock_guard lock(write_mu_);
  Db& db = *writer_;
  const auto now = clock_.now_ms();
  Transaction tx(db);
  auto ins = db.prepare(
      "INSERT INTO api_tokens (name, scope, token_hash, created_at) VALUES (?, ?, ?, ?) "
      "RETURNING id");
  ins.bind(1, name).bind(2, proto::to_string(scope)).bind(3, sha256_hex(clear)).bind(4, now);
  Token t{returning_id(ins), name, scope, now, std::nullopt};
  append_event(db, now, "token.created", std::nullopt, std::nullopt,
               {{"token_id", t.id}, {"name", name}, {"scope", proto::to_string(scope)}});
  tx.commit();
  return std::make_pair(t, clear);
}

std::optional<Token> Store::authenticate(const std::string& clear_token) {
  auto db = reader();
  auto s = db->prepare(
      "SELECT id, name, scope, created_at FROM api_tokens WHERE token_hash = ? AND "
      "revoked_at IS NULL");
  s.bind(1, sha256_hex(clear_token));
  if (!s.step()) return std::nullopt;
  return Token{s.int64(0), s.text(1), proto::parse_scope(s.text(2)).value_or(proto::Scope::kRead),
               s.int64(3), std::nullopt};
}

std::vector<Token> Store::list_tokens() {
  auto db = reader();
  auto s =
      db->prepare("SELECT id, name, scope, created_at, revoked_at FROM api_tokens ORDER BY id");
  std::vector<Token> out;
  while (s.step()) {
    out.push_back(Token{s.int64(0), s.text(1),
                        proto::parse_scope(s.text(2)).value_or(proto::Scope::kRead), s.int64(3),
                        s.opt_int64(4)});
  }
  return out;
}

Status Store::revoke_token(std::int64_t id, const std::string& who) {
  std::lock_guard lock(write_mu_);
  Db& db = *writer_;
  const auto now = clock_.now_ms();
  Transaction tx(db);
  db.prepare("UPDATE api_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL")
      .bind(1, now)
      .bind(2, id)
      .run();
  if (db.changes() == 0) {
    return make_error(Errc::kNotFound, "no active token with id " + std::to_string(id));
  }
  append_event(db, now, "token.revoked", std::nullopt, std::nullopt,
               {{"token_id", id}, {"by", who}});
  tx.commit();
  return ok_status();
}

}  // namespace kiln::store
