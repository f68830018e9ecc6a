// daemon/cluster.h — wiring one kilnd into a cluster of instances (cluster.* settings): the
// chunk and manifest misses filled from peers (images/peer_fetch.h), the cluster token that
// lets a peer read private chunks and manifests, and the servers handed to agents.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/metrics.h"
#include "core/result.h"
#include "daemon/config.h"
#include "http/server.h"
#include "images/chunk_store.h"
#include "images/image_service.h"
#include "images/peer_fetch.h"
#include "store/store.h"

namespace spdlog {
class logger;
}

namespace kiln::daemon {

struct Cluster {
  std::unique_ptr<images::PeerFetcher> fetcher;  // null: no peers and no upstream
  std::string token;                             // "" without cluster.token_file
};

// Reads cluster.token_file (its content, trimmed; at least 16 characters; never logged),
// builds the fetcher over `chunks` (manifests are checked against the shared catalogue in
// `store`), sets it as `images`' manifest fallback, and adapts `hopts`' /v1/chunks/ mount: a
// miss is fetched from the peers (not for a peer's own fetch), and the cluster token reads
// private chunks. With a token, /v1/manifests/<name>/<version>.json|.sig is mounted for the
// peers (the token only). Call before the HTTP server starts.
Result<Cluster> wire_cluster(const Config& cfg, images::ChunkStore& chunks,
                             images::ImageService& images, store::Store& store, Metrics& metrics,
                             http::ServerOptions& hopts, std::shared_ptr<spdlog::logger> log);

// The servers an agent may use, in order: `self` (the URL the boot path hands it), then every
// cluster peer (cluster.peers), without duplicates.
std::vector<std::string> agent_servers(const Config& cfg, const std::string& self);

}  // namespace kiln::daemon
