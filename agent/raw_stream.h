// agent/raw_stream.h — the compatibility path: an external raw / raw.gz / raw.xz / raw.zst image
// registered by URL + SHA-256 (of the uncompressed disk image) + size, streamed from its URL,
// decoded through libarchive's raw format and filters, hashed inline and written in order.
//
// There are no per-chunk hashes, so nothing can be known good before the end: the first and
// last MiB of the image (where MBR/GPT live) are held back in memory and the disk's own first
// and last MiB are zeroed before anything else, so the disk cannot boot unless the whole stream
// hashed to the expected value and the held-back bytes were written last. A mismatch fails
// the deployment with the disk left unbootable. Not resumable (a stream cannot skip ahead):
// a transport failure restarts the stream, a bounded number of times.
#pragma once

#include <string>

#include "agent/deploy.h"

namespace kiln::agent {

struct RawSource {
  std::string url;     // http://...
  std::string format;  // raw, raw.gz, raw.xz, raw.zst
  std::string sha256;  // of the uncompressed image
  std::uint64_t size = 0;
};

Result<DeployResult> deploy_raw(const RawSource& src, const Disk& disk,
                                const DeployOptions& options, DeployCounters& counters);

}  // namespace kiln::agent
