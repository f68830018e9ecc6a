// Store: image versions (the catalogue; bytes live in server/images).
#include "store/internal.h"

namespace kiln::store {

using namespace internal;  // NOLINT: the shared implementation helpers

// --- image versions --------------------------------------------------------------------------

Result<std::pair<ImageVersion, bool>> Store::register_image_version(const ImageVersion& v) {
  std::lock_guard lock(write_mu_);
  Db& db = *writer_;
  const auto now = clock_.now_ms();
  Transaction tx(db);
  if (auto existing = load_image_version(db, v.name, v.version)) {
    if (existing->size_bytes == v.size_bytes && existing->sha256 == v.sha256 &&
        existing->format == v.format && existing->source_url == v.source_url) {
      return std::make_pair(std::move(*existing), false);
    }
    return make_error(Errc::kConflict, "image version " + v.name + ":" + v.version +
                                           " already exists with different content; versions "
                                           "are immutable, register a new version instead");
  }
  db.prepare(
        "INSERT INTO image_versions (name, version, size_bytes, sha256, format, source_url, "
        "description, labels, created_by, created_at, signature) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
      .bind(1, v.name)
      .bind(2, v.version)
      .bind(3, v.size_bytes)
      .bind(4, v.sha256)
      .bind(5, v.format)
      .bind(6, v.source_url)
      .bind(7, v.description)
      .bind(8, v.labels.dump())
      .bind(9, v.created_by)
      .bind(10, now)
      .bind(11, v.signature)
      .run();
  append_event(db, now, "image.registered", std::nullopt, std::nullopt,
               {{"image", v.name}, {"version", v.version}, {"by", v.created_by}});
  auto out = load_image_version(db, v.name, v.version);
  tx.commit();
  return std::make_pair(std::move(*out), true);
}

std::vector<ImageVersion> Store::list_image_versions(const std::optional<std::string>& name) {
  auto db = reader();
  auto s = db->prepare(std::string(kImageSelect) + (name ? "AND name = ? " : "") +
                       "ORDER BY name, created_at, id");
  if (name) s.bind(1, *name);
  std::vector<ImageVersion> out;
  while (s.step()) out.push_back(image_from_row(s));
  return out;
}

Result<ImageVersion> Store::get_image_version(const std::string& name, const std::string& version) {
  auto db = reader();
  auto v = load_image_version(*db, name, version);
  if (!v) return image_not_found(name, version);
  return std::move(*v);
}

Status Store::delete_image_version(const std::string& name, const std::string& version,
                                   const std::string& who) {
  std::lock_guard lock(write_mu_);
  Db& db = *writer_;
  const auto now = clock_.now_ms();
  Transaction tx(db);
  auto v = load_image_version(db, name, version);
  if (!v) return image_not_found(name, version);
  auto held = db.prepare(
      "SELECT count(*) FROM machines WHERE current_version_id = ? AND deleted_at IS NULL");
  held.bind(1, v->id);
  held.step();
  auto pending = db.prepare(std::string("SELECT count(*) FROM deployments WHERE to_version_id = ? "
                                        "AND status IN ") +
                            kActive);
  pending.bind(1, v->id);
  pending.step();
  // A rollout that may still deploy it, or roll machines back to it, holds it too.
  auto rolling = db.prepare(
      "SELECT count(*) FROM rollouts WHERE state IN ('pending', 'running', 'paused', "
      "'rolling_back') AND (image_version_id = ? OR id IN (SELECT rollout_id FROM "
      "rollout_machines WHERE previous_version_id = ?))");
  rolling.bind(1, v->id).bind(2, v->id);
  rolling.step();
  if (rolling.int64(0) > 0) {
    return make_error(Errc::kConflict, "image version " + name + ":" + version + " is in use by " +
                                           std::to_string(rolling.int64(0)) +
                                           " unfinished rollout(s) (as target or as the version "
                                           "to roll back to)");
  }
  if (held.int64(0) > 0 || pending.int64(0) > 0) {
    return make_error(Errc::kConflict,
                      "image version " + name + ":" + version + " is in use: deployed on " +
                          std::to_string(held.int64(0)) + " machine(s), target of " +
                          std::to_string(pending.int64(0)) + " active deployment(s)");
  }
  db.prepare("UPDATE image_versions SET deleted_at = ? WHERE id = ?")
      .bind(1, now)
      .bind(2, v->id)
      .run();
  append_event(db, now, "image.deleted", std::nullopt, std::nullopt,
               {{"image", name}, {"version", version}, {"by", who}});
  tx.commit();
  return ok_status();
}

}  // namespace kiln::store
