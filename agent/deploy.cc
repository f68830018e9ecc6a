#include "agent/deploy.h"

#include <zlib.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>

#include "agent/http.h"
#include "agent/sources.h"
#include "core/bytes.h"
#include "core/crypto.h"

namespace kiln::agent {

namespace img = proto::image;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

std::string where(const img::Manifest& m, std::size_t i) {
  return "chunk " + std::to_string(i) + " (offset " + std::to_string(m.chunk_offset(i)) + ")";
}

// The part of [a, a+alen) that [b, b+blen) covers, as an offset into the first range.
bool overlap(std::uint64_t a, std::uint64_t alen, std::uint64_t b, std::uint64_t blen,
             std::uint64_t& from, std::uint64_t& len) {
  const std::uint64_t lo = std::max(a, b), hi = std::min(a + alen, b + blen);
  if (lo >= hi) return false;
  from = lo - a;
  len = hi - lo;
  return true;
}

// A GPT image on a larger disk: the backup header and entries go to the disk's real end (as
// `sgdisk -e` does), the primary header points there and may use the space, the protective
// MBR covers the disk. `primary` is the image's first region (PMBR, header, entries), updated
// in place; returns the backup bytes to write at `backup_at`, or nothing when not applicable.
struct RelocatedGpt {
  std::string backup;
  std::uint64_t backup_at = 0;
};
std::optional<RelocatedGpt> relocate_gpt(std::string& primary, std::uint32_t ss,
                                         std::uint64_t disk_size) {
  if (primary.size() < 2ull * ss || std::memcmp(primary.data() + ss, "EFI PART", 8) != 0) {
    return std::nullopt;
  }
  char* h = primary.data() + ss;
  const std::uint32_t header_size = static_cast<std::uint32_t>(get_le(h + 12, 4));
  const std::uint64_t entries_lba = get_le(h + 72, 8);
  const std::uint64_t entries_bytes = get_le(h + 80, 4) * get_le(h + 84, 4);
  const std::uint64_t entry_sectors = (entries_bytes + ss - 1) / ss;
  if (header_size < 92 || header_size > ss || (entries_lba + entry_sectors) * ss > primary.size()) {
    return std::nullopt;
  }
  const std::uint64_t disk_sectors = disk_size / ss;
  const std::uint64_t alt = disk_sectors - 1;
  const std::uint64_t backup_entries = alt - entry_sectors;
  put_le(h + 32, alt, 8);
  put_le(h + 48, backup_entries - 1, 8);  // last usable LBA
  put_le(h + 16, 0, 4);
  put_le(h + 16, crc32(0, reinterpret_cast<const Bytef*>(h), header_size), 4);
  RelocatedGpt r;
  r.backup_at = backup_entries * ss;
  r.backup.assign((entry_sectors + 1) * ss, '\0');
  std::memcpy(r.backup.data(), primary.data() + entries_lba * ss, entries_bytes);
  char* b = r.backup.data() + entry_sectors * ss;
  std::memcpy(b, h, header_size);
  put_le(b + 24, alt, 8);             // my LBA
  put_le(b + 32, 1, 8);               // alternate: the primary
  put_le(b + 72, backup_entries, 8);  // entries just before the backup header
  put_le(b + 16, 0, 4);
  put_le(b + 16, crc32(0, reinterpret_cast<const Bytef*>(b), header_size), 4);
  // Protective MBR: one 0xEE partition covering the disk (capped at 2^32-1 sectors).
  if (static_cast<unsigned char>(primary[510]) == 0x55 &&
      static_cast<unsigned char>(primary[511]) == 0xaa &&
      static_cast<unsigned char>(primary[446 + 4]) == 0xee) {
    put_le(primary.data() + 446 + 12, std::min<std::uint64_t>(disk_sectors - 1, 0xffffffffu), 4);
  }
  return r;
}

}  // namespace

Status preflight(const img::Manifest& m, const Disk& disk) {
  if (disk.sector_size() != m.sector_size) {
    return make_error(Errc::kInvalid, "the image was built for " + std::to_string(m.sector_size) +
                                          "-byte sectors; " + disk.path() + " has " +
                                          std::to_string(disk.sector_size()) + "-byte sectors");
  }
  if (disk.size() < m.size) {
    return make_error(Errc::kInvalid, disk.path() + " holds " + std::to_string(disk.size()) +
                                          " bytes; the image needs " + std::to_string(m.size));
  }
  return ok_status();
}

Result<DeployResult> deploy(const img::Manifest& m, const Disk& disk, const DeployOptions& o,
                            DeployCounters& counters) {
  if (auto st = preflight(m, disk); !st) return st.error();
  if (o.chunk_bases.empty()) return make_error(Errc::kInvalid, "no chunk source URL");
  std::vector<HttpUrl> bases;
  for (const auto& b : o.chunk_bases) {
    auto u = parse_agent_url(b);
    if (!u) return u.error();
    bases.push_back(*u);
  }
  DeployResult result;
  result.direct = disk.direct();
  // --memory bounds the whole process, not only the chunk buffers: the agent itself (binary,
  // TLS, HTTP, about 8 MiB) and the manifests and chunk index (about 256 bytes per chunk), then
  // whole workers, each a chunk buffer and a payload. Checked before anything is written.
  const std::uint64_t per_worker = 2ull * m.chunk_size + (1 << 20);
  const std::uint64_t baseline =
      (8ull << 20) + 256ull * (m.chunks.size() + (o.previous ? o.previous->chunks.size() : 0));
  if (o.memory_budget < baseline + per_worker) {
    return make_error(Errc::kInvalid,
                      "a memory budget of " + std::to_string(o.memory_budget >> 20) +
                          " MiB cannot hold the agent and this image's manifest (" +
                          std::to_string((baseline + (1 << 20) - 1) >> 20) +
                          " MiB) and one write worker (" + std::to_string(per_worker >> 20) +
                          " MiB at " + std::to_string(m.chunk_size >> 20) +
                          " MiB chunks): raise --memory or build the image with smaller chunks");
  }

  // Regions written last: the image's partition tables, and wherever an old backup GPT may
  // sit at the end of a larger disk.
  std::vector<img::Region> late = m.partition_tables;
  const std::uint64_t tail = std::min<std::uint64_t>(64 << 10, disk.size());
  const img::Region disk_end{disk.size() - tail, tail};
  std::vector<std::string> late_bytes;
  for (const auto& r : late) late_bytes.emplace_back(r.length, '\0');

  // 1. Invalidate: nothing bootable remains until the end.
  auto t0 = Clock::now();
  {
    std::vector<img::Region> kill = late;
    if (disk.size() > m.size) kill.push_back(disk_end);
    for (const auto& r : kill) {
      if (auto st = disk.zero(r.offset, r.length); !st) return st.error();
    }
    if (auto st = disk.flush(); !st) return st.error();
  }
  result.invalidate_s = seconds_since(t0);

  // 2. Write every chunk, verified.
  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  int workers = o.workers > 0 ? o.workers : static_cast<int>(std::clamp(2 * cores, 4u, 16u));
  workers = static_cast<int>(std::clamp<std::uint64_t>(
      std::min<std::uint64_t>(workers, (o.memory_budget - baseline) / per_worker), 1,
      std::max<std::size_t>(m.chunks.size(), 1)));
  result.workers = workers;
  // Where each content already sits on the disk, as far as the manifests tell: the previous
  // version's chunks, and this image's own (duplicates are copied once the first is written).
  std::unordered_multimap<std::string, std::uint64_t> local;
  if (o.previous) {
    for (std::size_t j = 0; j < o.previous->chunks.size(); ++j) {
      const auto& pc = o.previous->chunks[j];
      if (img::has_payload(pc.kind)) local.emplace(pc.sha256, o.previous->chunk_offset(j));
    }
  }
  for (std::size_t j = 0; j < m.chunks.size(); ++j) {
    if (img::has_payload(m.chunks[j].kind)) local.emplace(m.chunks[j].sha256, m.chunk_offset(j));
  }
  // Mirrors first, kilnd last; a source that fails is skipped for a while (agent/sources.h).
  SourceHealth health(o.chunk_bases, o.source_cooldown, o.on_source);
  std::atomic<std::size_t> next{0};
  std::atomic<bool> failed{false};
  std::mutex mu;
  std::string failure;
  auto fail = [&](std::string msg) {
    std::lock_guard lock(mu);
    if (!failed.exchange(true)) failure = std::move(msg);
  };

  auto t1 = Clock::now();
  auto work_loop = [&] {
    std::vector<std::unique_ptr<HttpConnection>> conns;
    for (const auto& b : bases) conns.push_back(std::make_unique<HttpConnection>(b, o.timeout));
    img::ChunkDecoder decoder;
    AlignedBuffer buf(m.chunk_size);
    while (!failed) {
      const std::size_t i = next.fetch_add(1);
      if (i >= m.chunks.size()) break;
      const auto& c = m.chunks[i];
      const std::uint64_t off = m.chunk_offset(i);
      const std::size_t len = static_cast<std::size_t>(m.chunk_length(i));
      // Which partition-table bytes fall into this chunk.
      struct Cut {
        std::size_t region;
        std::uint64_t from, len, region_from;
      };
      std::vector<Cut> cuts;
      for (std::size_t r = 0; r < late.size(); ++r) {
        std::uint64_t from = 0, n = 0;
        if (overlap(off, len, late[r].offset, late[r].length, from, n)) {
          cuts.push_back({r, from, n, off + from - late[r].offset});
        }
      }
      if (c.kind == img::ChunkKind::kUnmapped) {
        counters.unmapped += len;
        counters.done += len;
        continue;
      }
      // Whether the disk holds only zeroes here: one block read settles most disks that do not.
      auto reads_zero = [&] {
        const std::size_t head = std::min<std::size_t>(img::kProbeBlock, len);
        if (!disk.read(off, buf.data(), head) || !is_all_zero(std::string_view(buf.data(), head)))
          return false;
        counters.hashed += len;
        return disk.read(off, buf.data(), len) && is_all_zero(std::string_view(buf.data(), len));
      };
      // Whether the disk at `at` may hold this chunk: false when the chunk's probe block differs
      // (one small read instead of reading and hashing the whole chunk). Only the SHA-256 of the
      // whole chunk ever proves that it matches.
      auto probe_matches = [&](std::uint64_t at) {
        if (c.probe.empty()) return true;
        const auto n = static_cast<std::size_t>(img::probe_length(len, c.probe_offset));
        if (!disk.read(at + c.probe_offset, buf.data(), n)) return false;
        return img::probe_hash(std::string_view(buf.data(), n)) == c.probe;
      };
      if (c.kind == img::ChunkKind::kZero) {
        // Where the device deallocates, zeroing costs next to nothing. Elsewhere zeroes are
        // written, and reading first is cheaper when the disk reads as zeroes already.
        if (disk.punch(off, len)) {
          counters.zeroed += len;
          counters.done += len;
          continue;
        }
        if (o.delta && reads_zero()) {
          counters.zeroed += len;
          counters.zero_kept += len;
          counters.done += len;
          continue;
        }
        if (auto st = disk.zero(off, len); !st)
          return fail(where(m, i) + ": " + st.error().message);
        counters.zeroed += len;
        counters.done += len;
        continue;
      }
      if (o.delta && cuts.empty() && probe_matches(off)) {
        // An all-zero region cannot hold a DATA/RAW chunk (the builder makes those ZERO), so a
        // wiped disk costs a compare, not a hash, even for a manifest without probes.
        if (disk.read(off, buf.data(), len) && !is_all_zero(std::string_view(buf.data(), len))) {
          counters.hashed += len;
          if (sha256_hex(std::string_view(buf.data(), len)) == c.sha256) {
            counters.skipped += len;
            counters.done += len;
            continue;
          }
        }
      }
      // The same content elsewhere on this disk (where the previous version had it, or a
      // duplicate chunk of this image already written): a local copy, verified by hash.
      bool ok = false;
      if (o.delta) {
        auto [lo, hi] = local.equal_range(c.sha256);
        int tries = 0;
        for (auto it = lo; it != hi && !ok && tries < 2; ++it) {
          if (it->second == off || it->second + len > disk.size()) continue;
          ++tries;
          if (!probe_matches(it->second)) continue;
          if (disk.read(it->second, buf.data(), len) &&
              !is_all_zero(std::string_view(buf.data(), len))) {
            counters.hashed += len;
            ok = sha256_hex(std::string_view(buf.data(), len)) == c.sha256;
          }
        }
        if (ok) counters.copied += len;
      }
      std::string last_error;
      for (int attempt = 0; attempt <= o.retries && !failed && !ok; ++attempt) {
        if (attempt > 0) {
          ++counters.retries;
          if (o.on_retry)
            o.on_retry(where(m, i) + " attempt " + std::to_string(attempt + 1) + ": " + last_error);
          const auto wait = o.backoff * (1 << std::min(attempt - 1, 4));
          std::this_thread::sleep_for(wait);
        }
        const std::size_t source = health.pick();
        auto& conn = *conns[source];
        auto reply = conn.request("GET", o.chunks_path + c.sha256, o.chunk_token, {},
                                  len + len / 64 + (64 << 10));
        if (!reply) {
          last_error = reply.error().message;
          health.failed(source, last_error);
          continue;
        }
        if (reply->status != 200) {
          last_error = conn.base().url + " answered HTTP " + std::to_string(reply->status);
          health.failed(source, last_error);
          continue;
        }
        counters.fetched += reply->body.size();
        auto kind = img::ChunkKind::kData;
        if (reply->content_type.rfind("application/zstd", 0) != 0 && reply->body.size() == len) {
          kind = img::ChunkKind::kRaw;
        }
        if (auto st = decoder.decode(kind, reply->body, c.sha256, len, buf.data()); !st) {
          last_error = "from " + conn.base().url + ": " + st.error().message;
          health.failed(source, last_error);
          continue;
        }
        health.succeeded(source);
        ok = true;
        break;
      }
      if (!ok) {
        return fail(where(m, i) + " failed after " + std::to_string(o.retries + 1) +
                    " attempts: " + last_error);
      }
      // Verified. Partition-table bytes are kept for the end and written as zeroes now.
      for (const auto& cut : cuts) {
        std::memcpy(late_bytes[cut.region].data() + cut.region_from, buf.data() + cut.from,
                    cut.len);
        std::memset(buf.data() + cut.from, 0, cut.len);
      }
      if (auto st = disk.write(off, buf.data(), len); !st) {
        return fail(where(m, i) + ": " + st.error().message);
      }
      counters.written += len;
      counters.done += len;
    }
  };
  // A worker's exception (an allocation that fails, a library that throws) fails the
  // deployment like any other error instead of terminating the agent.
  auto work = [&] {
    try {
      work_loop();
    } catch (const std::exception& e) {
      fail(std::string("a write worker failed: ") + e.what());
    } catch (...) {
      fail("a write worker failed: unknown exception");
    }
  };
  std::vector<std::thread> pool;
  for (int w = 0; w < workers; ++w) pool.emplace_back(work);
  for (auto& t : pool) t.join();
  if (failed) return make_error(Errc::kUnavailable, failure);
  result.write_s = seconds_since(t1);

  // 3. Commit: everything else is durable before the partition tables appear.
  auto t2 = Clock::now();
  if (auto st = disk.flush(); !st) return st.error();
  auto write_region = [&](std::uint64_t at, const std::string& bytes) -> Status {
    AlignedBuffer b(bytes.size());
    std::memcpy(b.data(), bytes.data(), bytes.size());
    return disk.write(at, b.data(), bytes.size());
  };
  std::optional<RelocatedGpt> moved;
  if (disk.size() > m.size && late.size() == 2) {
    moved = relocate_gpt(late_bytes[0], m.sector_size, disk.size());
  }
  for (std::size_t r = 0; r < late.size(); ++r) {
    if (moved && r == 1) continue;  // the backup lives at the disk's end instead
    if (auto st = write_region(late[r].offset, late_bytes[r]); !st) return st.error();
  }
  if (moved) {
    if (auto st = write_region(moved->backup_at, moved->backup); !st) return st.error();
    result.gpt_relocated = true;
  }
  if (auto st = disk.flush(); !st) return st.error();
  result.reread = disk.reread_partitions();
  result.commit_s = seconds_since(t2);
  return result;
}

}  // namespace kiln::agent
