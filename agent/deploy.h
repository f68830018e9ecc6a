// agent/deploy.h — writes a verified image onto a disk: the agent's pipeline.
//
// Workers (one HTTP connection each, to each base URL) take chunks in offset order. For each
// DATA/RAW chunk a worker first checks what the disk already holds there (delta / resume): the
// chunk's probe block (one 4 KiB read) rules out most disks that differ; otherwise the chunk is
// read back and hashed, and a SHA-256 match is skipped. Otherwise it fetches the chunk by hash (mirrors first, then the server),
// decodes it into an aligned buffer and checks its SHA-256; only then is it written (O_DIRECT).
// Failures of one chunk (transport, HTTP status, bad bytes) are retried for that chunk alone
// with backoff; after the bound the deployment fails naming the chunk. A source whose request
// failed is skipped by every worker for a cool-down (agent/sources.h), so a dead mirror costs
// one failed request, not one per chunk. ZERO chunks are punched out where the device
// deallocates; elsewhere a range that already reads as zeroes is left alone and the rest is
// zeroed. UNMAPPED chunks are skipped.
//
// Commit order: the partition-table regions of the manifest (and the disk's last 64 KiB, where
// an old backup GPT may live) are zeroed and flushed first, so a half-written disk never boots
// the old or a half-new system; the image is written with those regions still zeroed; after a
// flush the partition tables are written (a GPT's backup moved to the end of a larger disk),
// flushed again, and the kernel re-reads them.
// Memory is bounded: the agent and its manifests (about 8 MiB + 256 bytes per chunk), then
// workers x (chunk buffer + payload), all within DeployOptions::memory_budget (--memory); a
// budget that cannot hold one worker fails the deployment before anything is written.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "agent/disk.h"
#include "core/result.h"
#include "proto/image_format.h"

namespace kiln::agent {

struct DeployOptions {
  std::vector<std::string> chunk_bases;  // base URLs tried in order for each chunk
  std::string chunks_path = "/v1/chunks/";
  std::string chunk_token;  // sent as a bearer token with chunk requests (private chunk stores)
  int workers = 0;          // 0: from cores and the memory budget
  std::uint64_t memory_budget = 256ull << 20;
  int retries = 8;  // attempts per chunk after the first
  std::chrono::milliseconds timeout{30'000};
  std::chrono::milliseconds backoff{200};            // doubles per attempt, capped at 16x
  bool delta = true;                                 // hash the disk before fetching
  std::function<void(const std::string&)> on_retry;  // told why a chunk is tried again
  // A chunk source that fails is skipped this long (doubling while it keeps failing), then
  // probed again (agent/sources.h); on_source is told when one goes down or comes back.
  std::chrono::milliseconds source_cooldown{10'000};
  std::function<void(const std::string&)> on_source;
  // The manifest of the version the disk held before (if known): a chunk it placed elsewhere
  // is copied locally, after its hash is checked, instead of fetched.
  const proto::image::Manifest* previous = nullptr;
};

// Live counters (read by the progress reporter while deploy() runs).
struct DeployCounters {
  std::atomic<std::uint64_t> done{0};       // image bytes settled (written, skipped, zeroed)
  std::atomic<std::uint64_t> fetched{0};    // payload bytes received
  std::atomic<std::uint64_t> written{0};    // bytes written from fetched chunks
  std::atomic<std::uint64_t> skipped{0};    // bytes the disk already held (delta)
  std::atomic<std::uint64_t> zeroed{0};     // ZERO chunks settled: zeroed, or found zero
  std::atomic<std::uint64_t> zero_kept{0};  // of those, bytes that read as zeroes already
  std::atomic<std::uint64_t> unmapped{0};
  std::atomic<std::uint64_t> retries{0};
  std::atomic<std::uint64_t> hashed{0};  // bytes read back from the disk for the delta check
  std::atomic<std::uint64_t> copied{0};  // bytes copied from elsewhere on the disk
};

struct DeployResult {
  double invalidate_s = 0, write_s = 0, commit_s = 0;
  int workers = 0;
  bool direct = false;
  std::string reread;          // BLKRRPART outcome ("" = ok)
  bool gpt_relocated = false;  // backup GPT moved to the end of a larger disk
};

// Checks the disk can take the image (sector size, capacity) without touching it.
Status preflight(const proto::image::Manifest& m, const Disk& disk);

Result<DeployResult> deploy(const proto::image::Manifest& m, const Disk& disk,
                            const DeployOptions& options, DeployCounters& counters);

}  // namespace kiln::agent
