#include "daemon/cluster.h"

#include <spdlog/spdlog.h>

#include <fstream>
#include <sstream>

#include "core/crypto.h"
#include "proto/api_types.h"

namespace kiln::daemon {

namespace {

Result<std::string> read_token(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return make_error(Errc::kNotFound, "cannot read cluster.token_file " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string t = ss.str();
  while (!t.empty() && std::isspace(static_cast<unsigned char>(t.back()))) t.pop_back();
  while (!t.empty() && std::isspace(static_cast<unsigned char>(t.front()))) t.erase(0, 1);
  if (t.size() < 16) {
    return make_error(Errc::kInvalid,
                      "cluster.token_file " + path + " must hold at least 16 characters");
  }
  return t;
}

}  // namespace

Result<Cluster> wire_cluster(const Config& cfg, images::ChunkStore& chunks,
                             images::ImageService& images, store::Store& store, Metrics& metrics,
                             http::ServerOptions& hopts, std::shared_ptr<spdlog::logger> log) {
  Cluster c;
  if (!cfg.cluster_token_file.empty()) {
    auto t = read_token(cfg.cluster_token_file);
    if (!t) return t.error();
    c.token = std::move(*t);
  }
  if (!cfg.cluster.peers.empty() || !cfg.cluster.upstream.empty()) {
    images::PeerFetchOptions o = cfg.cluster;
    o.token = c.token;
    // Its own copy of the trusted keys (loaded again: a Key is not copyable).
    std::vector<proto::image::Key> trusted;
    for (const auto& path : cfg.trusted_keys) {
      auto key = proto::image::Key::load_public(path);
      if (!key) return key.error();
      trusted.push_back(std::move(*key));
    }
    auto f = images::PeerFetcher::create(
        chunks, std::move(o), std::move(trusted),
        [&store](const std::string& name,
                 const std::string& version) -> std::optional<std::string> {
          auto v = store.get_image_version(name, version);
          if (!v || v->format != "kiln") return std::nullopt;
          return v->sha256;
        },
        metrics, log);
    if (!f) return f.error();
    c.fetcher = std::move(*f);
    if (!cfg.trusted_keys.empty()) {
      images.set_fallback(c.fetcher.get());
    } else {
      // A manifest is the list of chunks a machine gets: from another host it is taken only
      // when signed by a trusted key (a chunk proves itself by its hash; a manifest's own
      // image hash is just a field in it, so an unsigned one from a peer proves nothing).
      log->warn(
          "event=cluster.manifest_fetch_off msg=\"images.trusted_keys is empty: manifests are "
          "not fetched from peers, so an image is served only by the instances it was pushed "
          "to\"");
    }
  }
  for (auto& m : hopts.mounts) {
    if (m.prefix != "/v1/chunks/") continue;
    if (c.fetcher) {
      m.on_miss = [f = c.fetcher.get()](const std::string& rel, const http::RequestHeader& req,
                                        std::function<void()> done) {
        // Another instance's fetch: answer with what this one has (no loops between peers).
        if (req.find(images::kClusterFetchHeader) != req.end()) return done();
        f->fetch_chunk_async(rel, [done = std::move(done)](bool) { done(); });
      };
    }
    if (m.authorize && !c.token.empty()) {
      m.authorize = [prev = std::move(m.authorize), token = c.token](const std::string& t,
                                                                     const std::string& peer) {
        return constant_time_equal(t, token) || prev(t, peer);
      };
    }
  }
  if (!c.token.empty()) {
    // Manifests for the peers only: an instance that lacks one fetches it with the token.
    http::FileMount mm;
    mm.prefix = "/v1/manifests/";
    mm.root = std::filesystem::path(cfg.effective_images_dir()) / "manifests";
    mm.immutable = true;
    mm.resolve = [](std::string_view rel) -> std::vector<std::string> {
      const auto slash = rel.find('/');
      if (slash == std::string_view::npos) return {};
      const std::string name(rel.substr(0, slash));
      std::string file(rel.substr(slash + 1));
      for (std::string_view ext : {".json", ".sig"}) {
        if (file.size() > ext.size() && file.ends_with(ext)) {
          const std::string version = file.substr(0, file.size() - ext.size());
          if (proto::validate_image_name(name) && proto::validate_image_version(version)) {
            return {name + "/" + file};
          }
        }
      }
      return {};
    };
    mm.authorize = [token = c.token](const std::string& t, const std::string&) {
      return constant_time_equal(t, token);
    };
    hopts.mounts.push_back(std::move(mm));
  }
  log->info("event=daemon.cluster peers={} upstream=\"{}\" token={}", cfg.cluster.peers.size(),
            cfg.cluster.upstream, c.token.empty() ? "none" : "set");
  return c;
}

std::vector<std::string> agent_servers(const Config& cfg, const std::string& self) {
  std::vector<std::string> out;
  auto add = [&out](std::string u) {
    while (!u.empty() && u.back() == '/') u.pop_back();
    if (u.empty()) return;
    for (const auto& x : out)
      if (x == u) return;
    out.push_back(std::move(u));
  };
  add(self);
  for (const auto& p : cfg.cluster.peers) add(p);
  return out;
}

}  // namespace kiln::daemon
