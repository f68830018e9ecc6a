#include "images/chunk_store.h"

#include <fcntl.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <fstream>
#include <set>

#include "core/hex.h"
#include "core/io.h"
#include "core/unique_fd.h"

namespace kiln::images {

namespace fs = std::filesystem;
using proto::image::ChunkKind;

namespace {

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

}  // namespace

Result<std::unique_ptr<ChunkStore>> ChunkStore::open(const fs::path& root) {
  std::error_code ec;
  for (const char* d : {"chunks", "manifests", "tmp"}) {
    fs::create_directories(root / d, ec);
    if (ec)
      return make_error(Errc::kInternal,
                        "cannot create " + (root / d).string() + ": " + ec.message());
  }
  // Leftovers of imports interrupted by a crash.
  for (const auto& e : fs::directory_iterator(root / "tmp", ec)) fs::remove(e.path(), ec);
  return std::unique_ptr<ChunkStore>(new ChunkStore(root));
}

fs::path ChunkStore::chunk_path(const std::string& sha, ChunkKind kind) const {
  return root_ / "chunks" / sha.substr(0, 2) / (sha + (kind == ChunkKind::kData ? ".zst" : ".raw"));
}

fs::path ChunkStore::manifest_path(const std::string& name, const std::string& version) const {
  return root_ / "manifests" / name / (version + ".json");
}

Status ChunkStore::write_atomically(const fs::path& dest, std::string_view bytes) {
  static std::atomic<std::uint64_t> counter{0};
  const fs::path tmp =
      root_ / "tmp" / (std::to_string(::getpid()) + "." + std::to_string(counter++));
  UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
  if (!fd) {
    return make_error(Errc::kInternal,
                      "cannot create " + tmp.string() + ": " + std::strerror(errno));
  }
  if (auto st = write_full(fd.get(), bytes); !st) {
    ::unlink(tmp.c_str());
    return make_error(Errc::kInternal, tmp.string() + ": " + st.error().message);
  }
  const bool synced = ::fsync(fd.get()) == 0;
  fd.reset();
  std::error_code ec;
  fs::create_directories(dest.parent_path(), ec);
  if (!synced || ::rename(tmp.c_str(), dest.c_str()) != 0) {
    ::unlink(tmp.c_str());
    return make_error(Errc::kInternal, "cannot store " + dest.string());
  }
  return ok_status();
}

std::optional<ChunkFile> ChunkStore::chunk_file(const std::string& sha) const {
  if (!is_sha256_hex(sha)) return std::nullopt;
  for (ChunkKind k : {ChunkKind::kData, ChunkKind::kRaw}) {
    auto p = chunk_path(sha, k);
    std::error_code ec;
    if (fs::is_regular_file(p, ec)) return ChunkFile{p, k};
  }
  return std::nullopt;
}

Status ChunkStore::put_chunk(const std::string& sha, ChunkKind kind, std::string_view payload) {
  if (!is_sha256_hex(sha) || !proto::image::has_payload(kind)) {
    return make_error(Errc::kInvalid, "not a chunk hash or payload kind");
  }
  if (chunk_file(sha)) return ok_status();
  return write_atomically(chunk_path(sha, kind), payload);
}

Status ChunkStore::put_manifest(const std::string& name, const std::string& version,
                                std::string_view manifest, std::string_view signature) {
  const fs::path mpath = manifest_path(name, version);
  std::error_code ec;
  if (fs::exists(mpath, ec)) {
    if (read_file(mpath) == manifest) return ok_status();
    return make_error(Errc::kConflict,
                      "a different manifest is stored for " + name + ":" + version);
  }
  // The signature first: a manifest is visible only with its signature in place.
  if (!signature.empty()) {
    auto sig = mpath;
    sig.replace_extension(".sig");
    if (auto s = write_atomically(sig, signature); !s) return s.error();
  }
  return write_atomically(mpath, manifest);
}

Result<ImportReport> ChunkStore::import(const proto::image::PackedImage& image,
                                        const std::vector<proto::image::Key>& trusted, int threads,
                                        const std::atomic<bool>* stop) {
  const auto stopped = [stop] { return stop && stop->load(); };
  const auto cancelled = [] { return make_error(Errc::kUnavailable, "import cancelled"); };
  // Everything is verified before the first byte is stored.
  auto verified = proto::image::verify_image(image, trusted, threads, stop);
  if (stopped()) return cancelled();
  if (!verified) return verified.error();
  const auto& m = image.manifest();
  std::lock_guard lock(mu_);
  ImportReport r;
  const fs::path mpath = manifest_path(m.name, m.version);
  std::error_code ec;
  if (fs::exists(mpath, ec)) {
    if (read_file(mpath) != image.manifest_bytes()) {
      return make_error(Errc::kConflict, "image version " + m.name + ":" + m.version +
                                             " already exists with different content");
    }
    r.already_present = true;
  }
  std::set<std::string> seen;
  for (std::size_t i = 0; i < m.chunks.size(); ++i) {
    const auto& c = m.chunks[i];
    if (!proto::image::has_payload(c.kind)) continue;
    if (stopped()) return cancelled();
    ++r.chunks;
    if (!seen.insert(c.sha256).second || chunk_file(c.sha256)) continue;
    auto payload = image.read_payload(i);
    if (!payload) return payload.error();
    if (auto s = write_atomically(chunk_path(c.sha256, c.kind), *payload); !s) return s.error();
    ++r.new_chunks;
    r.new_bytes += payload->size();
  }
  if (!r.already_present) {
    // The manifest goes last: a version is visible only once all its chunks are in place.
    if (!image.signature().empty()) {
      auto sig = mpath;
      sig.replace_extension(".sig");
      if (auto s = write_atomically(sig, image.signature()); !s) return s.error();
    }
    if (auto s = write_atomically(mpath, image.manifest_bytes()); !s) return s.error();
  }
  return r;
}

Result<std::string> ChunkStore::manifest(const std::string& name,
                                         const std::string& version) const {
  const auto p = manifest_path(name, version);
  std::error_code ec;
  if (!fs::is_regular_file(p, ec)) {
    return make_error(Errc::kNotFound, "no stored manifest for " + name + ":" + version);
  }
  return read_file(p);
}

Result<std::string> ChunkStore::signature(const std::string& name,
                                          const std::string& version) const {
  auto p = manifest_path(name, version);
  std::error_code ec;
  if (!fs::is_regular_file(p, ec)) {
    return make_error(Errc::kNotFound, "no stored manifest for " + name + ":" + version);
  }
  p.replace_extension(".sig");
  if (!fs::is_regular_file(p, ec)) return std::string();
  return read_file(p);
}

Status ChunkStore::remove(const std::string& name, const std::string& version) {
  std::lock_guard lock(mu_);
  auto p = manifest_path(name, version);
  std::error_code ec;
  if (!fs::remove(p, ec))
    return make_error(Errc::kNotFound, "no stored manifest for " + name + ":" + version);
  p.replace_extension(".sig");
  fs::remove(p, ec);
  return ok_status();
}

namespace {

// Every regular file under `dir`, or an error if any part of the tree cannot be listed
// (missing, not a directory, no permission, no descriptors): callers must not mistake a
// listing they could not make for an empty one.
Result<std::vector<fs::path>> list_files(const fs::path& dir) {
  const auto failed = [&](const std::error_code& ec) {
    return make_error(Errc::kInternal, "cannot list " + dir.string() + ": " + ec.message());
  };
  std::error_code ec;
  fs::recursive_directory_iterator it(dir, ec);
  if (ec) return failed(ec);
  std::vector<fs::path> out;
  for (; it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (ec) return failed(ec);
    const bool regular = it->is_regular_file(ec);
    if (ec) return failed(ec);
    if (regular) out.push_back(it->path());
  }
  if (ec) return failed(ec);
  return out;
}

}  // namespace

Result<GcReport> ChunkStore::collect_garbage() {
  std::lock_guard lock(mu_);
  // Listing first, deleting after: a collection that cannot see every manifest removes
  // nothing (it would take every chunk for garbage).
  auto manifests = list_files(root_ / "manifests");
  if (!manifests) return manifests.error();
  std::set<std::string> live;
  for (const auto& path : *manifests) {
    if (path.extension() != ".json") continue;
    auto m = proto::image::parse_manifest(read_file(path));
    if (!m) {
      // Never collect on the strength of a manifest we cannot read.
      return make_error(Errc::kInternal,
                        "unreadable manifest " + path.string() + ": " + m.error().message);
    }
    for (const auto& c : m->chunks) {
      if (proto::image::has_payload(c.kind)) live.insert(c.sha256);
    }
  }
  auto chunks = list_files(root_ / "chunks");
  if (!chunks) return chunks.error();
  GcReport r;
  for (const auto& path : *chunks) {
    if (live.count(path.stem().string())) continue;
    std::error_code ec;
    const auto size = fs::file_size(path, ec);
    if (!ec && fs::remove(path, ec)) {
      ++r.removed_chunks;
      r.removed_bytes += size;
    }
  }
  return r;
}

Result<FilesystemSpace> filesystem_space(const fs::path& dir) {
  struct statvfs st {};
  if (::statvfs(dir.c_str(), &st) != 0) {
    return make_error(Errc::kInternal,
                      "cannot statvfs " + dir.string() + ": " + std::strerror(errno));
  }
  return FilesystemSpace{static_cast<std::uint64_t>(st.f_blocks) * st.f_frsize,
                         static_cast<std::uint64_t>(st.f_bavail) * st.f_frsize};
}

std::uint64_t chunk_file_bytes(const fs::path& root) {
  std::uint64_t n = 0;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(root / "chunks", ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    std::error_code fe;
    if (it->is_regular_file(fe)) {
      const auto size = it->file_size(fe);
      if (!fe) n += size;
    }
  }
  return n;
}

Result<std::uint64_t> ChunkStore::available_bytes() const {
  auto space = filesystem_space(root_);
  if (!space) return space.error();
  return space->available;
}

std::uint64_t ChunkStore::chunk_bytes() const { return chunk_file_bytes(root_); }

}  // namespace kiln::images
