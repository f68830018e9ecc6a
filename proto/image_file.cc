#include "proto/image_file.h"

#include <archive.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <openssl/evp.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <condition_variable>
#include <cstring>
#include <deque>
#include <filesystem>
#include <future>
#include <mutex>
#include <queue>
#include <thread>

#include "core/clock.h"
#include "core/crypto.h"
#include "core/time.h"

namespace kiln::proto::image {
namespace {

// A fixed pool of worker threads running queued tasks. Destruction drains the queue.
class Pool {
 public:
  explicit Pool(int n) {
    for (int i = 0; i < n; ++i) threads_.emplace_back([this] { work(); });
  }
  ~Pool() {
    {
      std::lock_guard lock(mu_);
      done_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
  }
  template <typename F>
  auto submit(F f) -> std::future<decltype(f())> {
    auto task = std::make_shared<std::packaged_task<decltype(f())()>>(std::move(f));
    auto fut = task->get_future();
    {
      std::lock_guard lock(mu_);
      queue_.push([task] { (*task)(); });
    }
    cv_.notify_one();
    return fut;
  }

 private:
  void work() {
    while (true) {
      std::function<void()> job;
      {
        std::unique_lock lock(mu_);
        cv_.wait(lock, [this] { return done_ || !queue_.empty(); });
        if (queue_.empty()) return;
        job = std::move(queue_.front());
        queue_.pop();
      }
      job();
    }
  }
  std::mutex mu_;
  std::condition_variable cv_;
  std::queue<std::function<void()>> queue_;
  bool done_ = false;
  std::vector<std::thread> threads_;
};

// Chunk-sized read buffers, reused: a fresh 4 MiB allocation per chunk costs a zero-fill and
// page faults for every byte of the image. Buffers come back when the last user drops them.
class BufferPool : public std::enable_shared_from_this<BufferPool> {
 public:
  std::shared_ptr<std::string> get(std::size_t size) {
    std::unique_ptr<std::string> b;
    {
      std::lock_guard lock(mu_);
      if (!free_.empty()) {
        b = std::move(free_.back());
        free_.pop_back();
      }
    }
    if (!b) b = std::make_unique<std::string>();
    b->resize(size);
    auto self = shared_from_this();
    return std::shared_ptr<std::string>(b.release(), [self](std::string* p) {
      std::lock_guard lock(self->mu_);
      self->free_.emplace_back(p);
    });
  }

 private:
  std::mutex mu_;
  std::vector<std::unique_ptr<std::string>> free_;
};

int thread_count(int requested) {
  return requested > 0 ? requested : std::max(1u, std::thread::hardware_concurrency());
}

// Streaming SHA-256 (EVP), RAII.
class Sha256 {
 public:
  Sha256() : ctx_(EVP_MD_CTX_new()) { EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr); }
  ~Sha256() { EVP_MD_CTX_free(ctx_); }
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void update(const void* p, std::size_t n) { EVP_DigestUpdate(ctx_, p, n); }
  void update_zeros(std::uint64_t n) {
    static const std::string kZeros(1 << 20, '\0');
    while (n > 0) {
      const auto k = static_cast<std::size_t>(std::min<std::uint64_t>(n, kZeros.size()));
      update(kZeros.data(), k);
      n -= k;
    }
  }
  std::string hex() {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    EVP_DigestFinal_ex(ctx_, md, &len);
    static constexpr char kDigits[] = "0123456789abcdef";
    std::string out;
    for (unsigned i = 0; i < len; ++i) {
      out.push_back(kDigits[md[i] >> 4]);
      out.push_back(kDigits[md[i] & 0xf]);
    }
    return out;
  }

 private:
  EVP_MD_CTX* ctx_;
};

// Where the input's bytes come from.
class Input {
 public:
  virtual ~Input() = default;
  // Fills `buf` with up to `n` bytes; fewer only at the end of the input.
  virtual Result<std::size_t> read(char* buf, std::size_t n) = 0;
  // True if [offset, offset+len) is entirely a hole of a sparse file.
  virtual bool is_hole(std::uint64_t, std::uint64_t) { return false; }
  virtual std::optional<std::uint64_t> size() const { return std::nullopt; }
};

class RawInput : public Input {
 public:
  RawInput(UniqueFd fd, std::uint64_t size, bool regular)
      : fd_(std::move(fd)), size_(size), regular_(regular) {}
  Result<std::size_t> read(char* buf, std::size_t n) override {
    std::size_t got = 0;
    while (got < n && off_ < size_) {
      ssize_t r = ::pread(fd_.get(), buf + got, std::min<std::uint64_t>(n - got, size_ - off_),
                          static_cast<off_t>(off_));
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) return make_error(Errc::kInternal, std::string("read: ") + std::strerror(errno));
      if (r == 0) return make_error(Errc::kInternal, "input shrank while reading");
      got += static_cast<std::size_t>(r);
      off_ += static_cast<std::uint64_t>(r);
    }
    return got;
  }
  bool is_hole(std::uint64_t offset, std::uint64_t len) override {
    if (!regular_) return false;
    off_t data = ::lseek(fd_.get(), static_cast<off_t>(offset), SEEK_DATA);
    if (data < 0) return errno == ENXIO;  // no data at or after offset
    return static_cast<std::uint64_t>(data) >= offset + len;
  }
  std::optional<std::uint64_t> size() const override { return size_; }

 private:
  UniqueFd fd_;
  std::uint64_t size_;
  bool regular_;
  std::uint64_t off_ = 0;
};

std::string archive_error(archive* a) {
  const char* e = archive_error_string(a);
  return e ? e : "unknown libarchive error";
}

// A compressed raw image, decoded by libarchive's filters (gzip, xz, zstd, bzip2, ...).
class ArchiveInput : public Input {
 public:
  static Result<std::unique_ptr<ArchiveInput>> open(const std::string& path) {
    std::unique_ptr<ArchiveInput> in(new ArchiveInput);
    in->a_ = archive_read_new();
    archive_read_support_filter_all(in->a_);
    archive_read_support_format_raw(in->a_);
    archive_entry* entry = nullptr;
    if (archive_read_open_filename(in->a_, path.c_str(), 1 << 20) != ARCHIVE_OK ||
        archive_read_next_header(in->a_, &entry) != ARCHIVE_OK) {
      return make_error(Errc::kInvalid, path + ": " + archive_error(in->a_));
    }
    return in;
  }
  ~ArchiveInput() override {
    if (a_) archive_read_free(a_);
  }
  Result<std::size_t> read(char* buf, std::size_t n) override {
    std::size_t got = 0;
    while (got < n) {
      la_ssize_t r = archive_read_data(a_, buf + got, n - got);
      if (r < 0) return make_error(Errc::kInvalid, "decompress: " + archive_error(a_));
      if (r == 0) break;
      got += static_cast<std::size_t>(r);
    }
    return got;
  }

 private:
  ArchiveInput() = default;
  archive* a_ = nullptr;
};

Result<std::unique_ptr<Input>> open_input(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return make_error(Errc::kInvalid, "cannot open " + path + ": " + std::strerror(errno));
  UniqueFd f(fd);
  unsigned char magic[6] = {};
  const ssize_t m = ::pread(fd, magic, sizeof magic, 0);
  const bool compressed =
      m >= 4 && ((magic[0] == 0x1f && magic[1] == 0x8b) ||  // gzip
                 (m >= 6 && std::memcmp(magic,
                                        "\xfd"
                                        "7zXZ\0",
                                        6) == 0) ||  // xz
                 (magic[0] == 0x28 && magic[1] == 0xb5 && magic[2] == 0x2f && magic[3] == 0xfd) ||
                 (magic[0] == 'B' && magic[1] == 'Z' && magic[2] == 'h'));  // bzip2
  if (compressed) {
    auto a = ArchiveInput::open(path);
    if (!a) return a.error();
    return std::unique_ptr<Input>(std::move(*a));
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) return make_error(Errc::kInvalid, "cannot stat " + path);
  std::uint64_t size = static_cast<std::uint64_t>(st.st_size);
  if (S_ISBLK(st.st_mode)) {
    if (::ioctl(fd, BLKGETSIZE64, &size) != 0)
      return make_error(Errc::kInvalid, "cannot size " + path);
  } else if (!S_ISREG(st.st_mode)) {
    return make_error(Errc::kInvalid, path + " is neither a file nor a block device");
  }
  return std::unique_ptr<Input>(new RawInput(std::move(f), size, S_ISREG(st.st_mode)));
}

std::uint64_t le64(const char* p) {
  std::uint64_t v = 0;
  for (int i = 0; i < 8; ++i)
    v |= static_cast<std::uint64_t>(static_cast<unsigned char>(p[i])) << (8 * i);
  return v;
}
std::uint32_t le32(const char* p) { return static_cast<std::uint32_t>(le64(p) & 0xffffffffu); }

// Finds the partition tables from the image's first bytes (GPT at LBA 1 for 512 or 4096-byte
// sectors; else an MBR signature). Sets the sector size if it was not given.
Result<std::vector<Region>> find_partition_tables(std::string_view head, std::uint64_t size,
                                                  std::uint32_t& sector_size) {
  for (std::uint32_t ss : {512u, 4096u}) {
    if (head.size() < 2 * ss || std::memcmp(head.data() + ss, "EFI PART", 8) != 0) continue;
    if (sector_size && ss != sector_size) {
      return make_error(Errc::kInvalid, "the GPT says " + std::to_string(ss) +
                                            "-byte sectors, --sector-size says " +
                                            std::to_string(sector_size));
    }
    sector_size = ss;
    const char* h = head.data() + ss;
    const std::uint64_t sectors = size / ss;
    const std::uint64_t alternate_lba = le64(h + 32);
    const std::uint64_t entries_lba = le64(h + 72);
    const std::uint64_t entries_bytes = static_cast<std::uint64_t>(le32(h + 80)) * le32(h + 84);
    const std::uint64_t entry_sectors = (entries_bytes + ss - 1) / ss;
    if (entries_lba >= sectors || entry_sectors >= sectors) {
      return make_error(Errc::kInvalid, "the GPT header's entry array lies outside the image");
    }
    std::vector<Region> out;
    if (entries_lba + entry_sectors <= sectors)
      out.push_back({0, (entries_lba + entry_sectors) * ss});
    // The backup header sits where the primary says (not necessarily the image's last sector),
    // with its entries just before it.
    if (alternate_lba < sectors && alternate_lba > entry_sectors) {
      const std::uint64_t first = alternate_lba - entry_sectors;
      out.push_back({first * ss, (entry_sectors + 1) * ss});
    }
    return out;
  }
  if (!sector_size) sector_size = 512;
  if (head.size() >= 512 && static_cast<unsigned char>(head[510]) == 0x55 &&
      static_cast<unsigned char>(head[511]) == 0xaa) {
    return std::vector<Region>{{0, 512}};
  }
  return std::vector<Region>{};
}

Status write_all(int fd, const char* p, std::size_t n) {
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) return make_error(Errc::kInternal, std::string("write: ") + std::strerror(errno));
    p += w;
    n -= static_cast<std::size_t>(w);
  }
  return ok_status();
}

}  // namespace

Result<BuildReport> build_image(const BuildOptions& o, const ProgressFn& progress) {
  if (o.chunk_size < kMinChunkSize || o.chunk_size > kMaxChunkSize ||
      (o.chunk_size & (o.chunk_size - 1)) != 0) {
    return make_error(Errc::kInvalid, "chunk size must be a power of two from 256 KiB to 64 MiB");
  }
  if (o.sector_size && o.sector_size != 512 && o.sector_size != 4096) {
    return make_error(Errc::kInvalid, "sector size must be 512 or 4096");
  }
  std::optional<Key> key;
  if (!o.sign_key.empty()) {
    auto k = Key::load_private(o.sign_key);
    if (!k) return k.error();
    key.emplace(std::move(*k));
  }
  auto input = open_input(o.input);
  if (!input) return input.error();
  const std::string partial = o.output + ".partial." + std::to_string(::getpid());
  UniqueFd out(::open(partial.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (!out)
    return make_error(Errc::kInvalid, "cannot create " + partial + ": " + std::strerror(errno));
  struct Cleanup {
    const std::string& path;
    bool keep = false;
    ~Cleanup() {
      if (!keep) ::unlink(path.c_str());
    }
  } cleanup{partial};

  Manifest m;
  m.name = o.name;
  m.version = o.version;
  m.chunk_size = o.chunk_size;
  m.created_at = o.created_at.empty() ? format_rfc3339_ms(SystemClock().now_ms()) : o.created_at;
  m.labels = o.labels;
  m.boot = o.boot;
  std::uint32_t sector_size = o.sector_size;

  if (auto s = write_all(out.get(), encode_header().data(), kHeaderSize); !s) return s.error();
  std::uint64_t written = kHeaderSize;

  const int threads = thread_count(o.threads);
  Pool pool(threads);
  const int level = o.level;
  std::deque<std::future<EncodedChunk>> window;
  Sha256 whole;
  Progress p;
  p.total = (*input)->size();

  auto flush_one = [&]() -> Status {
    EncodedChunk e = window.front().get();
    window.pop_front();
    if (!e.payload.empty()) {
      if (auto s = write_all(out.get(), e.payload.data(), e.payload.size()); !s) return s;
      written += e.payload.size();
    }
    m.chunks.push_back(std::move(e.chunk));
    p.bytes_out = written;
    if (progress) progress(p);
    return ok_status();
  };

  std::string head;
  auto buffers = std::make_shared<BufferPool>();
  while (true) {
    auto buf = buffers->get(o.chunk_size);
    auto n = (*input)->read(buf->data(), buf->size());
    if (!n) return n.error();
    if (*n == 0) break;
    buf->resize(*n);
    const std::uint64_t offset = m.size;
    if (offset == 0) head = buf->substr(0, std::min<std::size_t>(buf->size(), 8192));
    if (o.free_holes && (*input)->is_hole(offset, *n)) {
      whole.update_zeros(*n);
      std::promise<EncodedChunk> ready;
      EncodedChunk e;
      e.chunk.kind = ChunkKind::kUnmapped;
      ready.set_value(std::move(e));
      window.push_back(ready.get_future());
    } else {
      whole.update(buf->data(), buf->size());
      window.push_back(pool.submit([buf, level] {
        thread_local std::unique_ptr<ChunkEncoder> enc;
        thread_local int enc_level = -1000;
        if (!enc || enc_level != level) {
          enc = std::make_unique<ChunkEncoder>(level);
          enc_level = level;
        }
        return enc->encode(*buf);
      }));
    }
    m.size += *n;
    p.bytes_in = m.size;
    while (window.size() > static_cast<std::size_t>(4 * threads)) {
      if (auto s = flush_one(); !s) return s.error();
    }
    if (*n < o.chunk_size) break;
  }
  while (!window.empty()) {
    if (auto s = flush_one(); !s) return s.error();
  }
  if (m.size == 0) return make_error(Errc::kInvalid, o.input + " is empty");
  m.sha256 = whole.hex();
  auto tables = find_partition_tables(head, m.size, sector_size);
  if (!tables) return tables.error();
  m.partition_tables = std::move(*tables);
  m.sector_size = sector_size;

  std::string manifest;
  try {
    manifest = to_canonical_json(m);
  } catch (const std::exception&) {
    return make_error(Errc::kInvalid, "labels and boot hints must be valid UTF-8");
  }
  if (manifest.size() > kMaxManifestSize) {
    return make_error(Errc::kInvalid, "the manifest would exceed 64 MiB (" +
                                          std::to_string(m.chunks.size()) +
                                          " chunks); use a larger --chunk-size");
  }
  Trailer t;
  t.manifest_offset = written;
  t.manifest_length = manifest.size();
  if (auto s = write_all(out.get(), manifest.data(), manifest.size()); !s) return s.error();
  written += manifest.size();
  t.signature_offset = written;
  std::string signature;
  if (key) {
    auto sig = key->sign(manifest);
    if (!sig) return sig.error();
    signature = std::move(*sig);
    if (auto s = write_all(out.get(), signature.data(), signature.size()); !s) return s.error();
    written += signature.size();
    t.signature_length = signature.size();
  }
  t.manifest_digest = manifest_digest(encode_header(), manifest, signature);
  const std::string trailer = encode_trailer(t);
  if (auto s = write_all(out.get(), trailer.data(), trailer.size()); !s) return s.error();
  written += trailer.size();
  if (::fsync(out.get()) != 0) return make_error(Errc::kInternal, "fsync failed");
  if (::rename(partial.c_str(), o.output.c_str()) != 0) {
    return make_error(Errc::kInternal,
                      "cannot rename to " + o.output + ": " + std::strerror(errno));
  }
  cleanup.keep = true;
  BuildReport r;
  r.manifest = std::move(m);
  r.output_bytes = written;
  r.signed_ = key.has_value();
  return r;
}

// --- reading ----------------------------------------------------------------------------------

namespace {
Result<std::string> pread_exact(int fd, std::uint64_t offset, std::uint64_t length) {
  std::string out(length, '\0');
  std::size_t got = 0;
  while (got < length) {
    ssize_t r = ::pread(fd, out.data() + got, length - got, static_cast<off_t>(offset + got));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return make_error(Errc::kInternal, std::string("read: ") + std::strerror(errno));
    if (r == 0) return make_error(Errc::kInvalid, "unexpected end of file");
    got += static_cast<std::size_t>(r);
  }
  return out;
}
}  // namespace

Result<PackedImage> PackedImage::open(const std::string& path, const std::vector<Key>& trusted) {
  PackedImage img;
  img.fd_ = UniqueFd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!img.fd_)
    return make_error(Errc::kInvalid, "cannot open " + path + ": " + std::strerror(errno));
  struct stat st {};
  if (::fstat(img.fd_.get(), &st) != 0) return make_error(Errc::kInvalid, "cannot stat " + path);
  img.file_size_ = static_cast<std::uint64_t>(st.st_size);
  if (img.file_size_ < kHeaderSize + kTrailerSize) {
    return make_error(Errc::kInvalid, path + ": too short to be a kiln image (truncated?)");
  }
  auto header = pread_exact(img.fd_.get(), 0, kHeaderSize);
  if (!header) return header.error();
  if (auto s = check_header(*header); !s)
    return make_error(s.error().code, path + ": " + s.error().message);
  auto tb = pread_exact(img.fd_.get(), img.file_size_ - kTrailerSize, kTrailerSize);
  if (!tb) return tb.error();
  auto t = decode_trailer(*tb, img.file_size_);
  if (!t) return make_error(t.error().code, path + ": " + t.error().message);
  auto mb = pread_exact(img.fd_.get(), t->manifest_offset, t->manifest_length);
  if (!mb) return mb.error();
  img.manifest_bytes_ = std::move(*mb);
  if (t->signature_length) {
    auto sig = pread_exact(img.fd_.get(), t->signature_offset, t->signature_length);
    if (!sig) return sig.error();
    img.signature_ = std::move(*sig);
  }
  if (manifest_digest(*header, img.manifest_bytes_, img.signature_) != t->manifest_digest) {
    return make_error(Errc::kInvalid,
                      path + ": header, manifest or signature damaged (checksum mismatch)");
  }
  if (auto s = verify_signature(img.manifest_bytes_, img.signature_, trusted); !s) {
    return make_error(s.error().code, path + ": " + s.error().message);
  }
  auto m = parse_manifest(img.manifest_bytes_);
  if (!m) return make_error(m.error().code, path + ": " + m.error().message);
  img.manifest_ = std::move(*m);
  std::uint64_t off = kHeaderSize;
  img.offsets_.reserve(img.manifest_.chunks.size());
  for (const auto& c : img.manifest_.chunks) {
    img.offsets_.push_back(off);
    off += c.payload_size;
  }
  if (off != t->manifest_offset) {
    return make_error(Errc::kInvalid, path + ": payloads end at " + std::to_string(off) +
                                          " but the manifest starts at " +
                                          std::to_string(t->manifest_offset));
  }
  return img;
}

Result<std::string> PackedImage::read_payload(std::size_t i) const {
  return pread_exact(fd_.get(), offsets_[i], manifest_.chunks[i].payload_size);
}

Result<VerifyReport> verify_image(const PackedImage& img, const std::vector<Key>& trusted,
                                  int threads) {
  const auto& m = img.manifest();
  VerifyReport r;
  if (auto s = verify_signature(img.manifest_bytes(), img.signature(), trusted); !s)
    return s.error();
  r.signature_checked = !trusted.empty();
  const int n = thread_count(threads);
  Pool pool(n);
  std::deque<std::future<Result<std::string>>> window;
  Sha256 whole;
  std::size_t next_out = 0;
  auto chunk_error = [&](std::size_t i, const std::string& what) {
    return make_error(Errc::kInvalid, "chunk " + std::to_string(i) + " (offset " +
                                          std::to_string(m.chunk_offset(i)) + "): " + what);
  };
  auto consume = [&]() -> Status {
    const std::size_t i = next_out++;
    auto data = window.front().get();
    window.pop_front();
    if (!data) return chunk_error(i, data.error().message);
    if (data->empty()) {
      whole.update_zeros(m.chunk_length(i));
    } else {
      whole.update(data->data(), data->size());
    }
    return ok_status();
  };
  for (std::size_t i = 0; i < m.chunks.size(); ++i) {
    const Chunk& c = m.chunks[i];
    const std::uint64_t len = m.chunk_length(i);
    if (!has_payload(c.kind)) {
      std::promise<Result<std::string>> ready;
      ready.set_value(std::string());
      window.push_back(ready.get_future());
    } else {
      window.push_back(pool.submit([&img, &c, i, len]() -> Result<std::string> {
        auto payload = img.read_payload(i);
        if (!payload) return payload.error();
        std::string out;
        if (auto s = decode_chunk(c, *payload, len, out); !s) return s.error();
        return out;
      }));
      r.payload_bytes += c.payload_size;
    }
    while (window.size() > static_cast<std::size_t>(2 * n)) {
      if (auto s = consume(); !s) {
        for (auto& f : window) f.wait();  // workers reference this frame: let them finish
        return s.error();
      }
    }
  }
  while (!window.empty()) {
    if (auto s = consume(); !s) {
      for (auto& f : window) f.wait();
      return s.error();
    }
  }
  if (whole.hex() != m.sha256) {
    return make_error(Errc::kInvalid,
                      "whole-image SHA-256 mismatch (manifest says " + m.sha256 + ")");
  }
  r.chunks = m.chunks.size();
  return r;
}

}  // namespace kiln::proto::image
