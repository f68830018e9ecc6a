#include "images/builder.h"

#include <archive.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_future.hpp>
#include <cstring>
#include <deque>
#include <future>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "core/clock.h"
#include "core/crypto.h"
#include "core/io.h"
#include "core/time.h"
#include "core/unique_fd.h"
#include "images/qcow2.h"

namespace kiln::images {

namespace img = proto::image;

namespace {

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

// Where the input's bytes come from.
class Input {
 public:
  virtual ~Input() = default;
  // Fills `buf` with up to `n` bytes; fewer only at the end of the input.
  virtual Result<std::size_t> read(char* buf, std::size_t n) = 0;
  // True if [offset, offset+len) is entirely a hole of a sparse file.
  virtual bool is_hole(std::uint64_t, std::uint64_t) { return false; }
  // When the next min(n, what is left) bytes are a hole, moves past them without reading them
  // and returns how many; 0 otherwise (and at the end).
  virtual std::size_t skip_hole(std::size_t) { return 0; }
  virtual std::optional<std::uint64_t> size() const { return std::nullopt; }
};

class RawInput : public Input {
 public:
  RawInput(UniqueFd fd, std::uint64_t size, bool regular)
      : fd_(std::move(fd)), size_(size), regular_(regular) {}
  Result<std::size_t> read(char* buf, std::size_t n) override {
    const auto want = static_cast<std::size_t>(std::min<std::uint64_t>(n, size_ - off_));
    auto got = pread_full(fd_.get(), buf, want, off_);
    if (!got) return got.error();
    if (*got < want) return make_error(Errc::kInternal, "input shrank while reading");
    off_ += *got;
    return *got;
  }
  std::size_t skip_hole(std::size_t n) override {
    const auto want = static_cast<std::size_t>(std::min<std::uint64_t>(n, size_ - off_));
    if (want == 0 || !is_hole(off_, want)) return 0;
    off_ += want;
    return want;
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

// A qcow2 image (images/qcow2.h), read in virtual-disk order; its unallocated and zero
// clusters are holes.
class QcowInput : public Input {
 public:
  explicit QcowInput(std::unique_ptr<Qcow2Reader> r) : r_(std::move(r)) {}
  Result<std::size_t> read(char* buf, std::size_t n) override {
    const auto want = static_cast<std::size_t>(std::min<std::uint64_t>(n, r_->size() - off_));
    if (auto s = r_->read(off_, buf, want); !s) return s.error();
    off_ += want;
    return want;
  }
  bool is_hole(std::uint64_t offset, std::uint64_t len) override {
    return r_->is_hole(offset, len);
  }
  std::size_t skip_hole(std::size_t n) override {
    const auto want = static_cast<std::size_t>(std::min<std::uint64_t>(n, r_->size() - off_));
    if (want == 0 || !r_->is_hole(off_, want)) return 0;
    off_ += want;
    return want;
  }
  std::optional<std::uint64_t> size() const override { return r_->size(); }

 private:
  std::unique_ptr<Qcow2Reader> r_;
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
  ArchiveInput(const ArchiveInput&) = delete;
  ArchiveInput& operator=(const ArchiveInput&) = delete;
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
  UniqueFd f(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!f) return make_error(Errc::kInvalid, "cannot open " + path + ": " + std::strerror(errno));
  const int fd = f.get();
  unsigned char magic[6] = {};
  const auto read = pread_full(fd, magic, sizeof magic, 0);
  const std::size_t m = read ? *read : 0;  // unreadable: not compressed, fails below
  struct stat st {};
  if (::fstat(fd, &st) != 0) return make_error(Errc::kInvalid, "cannot stat " + path);
  if (m >= 4 && is_qcow2(std::string_view(reinterpret_cast<const char*>(magic), m)) &&
      S_ISREG(st.st_mode)) {
    auto q = Qcow2Reader::open(std::move(f), static_cast<std::uint64_t>(st.st_size), path);
    if (!q) return q.error();
    return std::unique_ptr<Input>(new QcowInput(std::move(*q)));
  }
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
Result<std::vector<img::Region>> find_partition_tables(std::string_view head, std::uint64_t size,
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
    std::vector<img::Region> out;
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
    return std::vector<img::Region>{{0, 512}};
  }
  return std::vector<img::Region>{};
}

}  // namespace

Result<BuildReport> build_image(const BuildOptions& o, const ProgressFn& progress) {
  if (!img::is_valid_chunk_size(o.chunk_size)) {
    return make_error(Errc::kInvalid, "chunk size must be a power of two from 256 KiB to 64 MiB");
  }
  if (o.sector_size && !img::is_valid_sector_size(o.sector_size)) {
    return make_error(Errc::kInvalid, "sector size must be 512 or 4096");
  }
  std::optional<img::Key> key;
  if (!o.sign_key.empty()) {
    auto k = img::Key::load_private(o.sign_key);
    if (!k) return k.error();
    key.emplace(std::move(*k));
  }
  auto input = open_input(o.input);
  if (!input) return input.error();
  // A size known up front (a qcow2 header's virtual size can say anything up to 64 TiB) that
  // needs more chunks than the largest manifest lists, even all UNMAPPED (`["U"],`: 6 bytes),
  // is refused now rather than after reading it all.
  if (const auto size = (*input)->size()) {
    const std::uint64_t chunks = (*size + o.chunk_size - 1) / o.chunk_size;
    if (chunks > img::kMaxManifestSize / 6) {
      return make_error(Errc::kInvalid, "the manifest would exceed 64 MiB (" +
                                            std::to_string(chunks) +
                                            " chunks); use a larger --chunk-size");
    }
  }
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

  img::Manifest m;
  m.name = o.name;
  m.version = o.version;
  m.chunk_size = o.chunk_size;
  m.created_at = o.created_at.empty() ? format_rfc3339_ms(SystemClock().now_ms()) : o.created_at;
  m.labels = o.labels;
  m.boot = o.boot;
  std::uint32_t sector_size = o.sector_size;

  if (auto s = write_full(out.get(), img::encode_header()); !s) return s.error();
  std::uint64_t written = img::kHeaderSize;

  const int threads = o.threads > 0
                          ? o.threads
                          : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  boost::asio::thread_pool pool(threads);
  const int level = o.level;
  std::deque<std::future<img::EncodedChunk>> window;
  Sha256 whole;
  Progress p;
  p.total = (*input)->size();

  auto flush_one = [&]() -> Status {
    img::EncodedChunk e = window.front().get();
    window.pop_front();
    if (!e.payload.empty()) {
      if (auto s = write_full(out.get(), e.payload); !s) return s;
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
    const std::uint64_t offset = m.size;
    // A hole (of a sparse file; a qcow2 image's unallocated or zero clusters) reads as zeros,
    // so it is not read at all: UNMAPPED if holes are free space (--free-holes), else ZERO, as
    // the encoder would find.
    std::shared_ptr<std::string> buf;
    Result<std::size_t> n = (*input)->skip_hole(o.chunk_size);
    const bool hole = *n > 0;
    if (!hole) {
      buf = buffers->get(o.chunk_size);
      n = (*input)->read(buf->data(), buf->size());
      if (!n) return n.error();
      if (*n == 0) break;
      buf->resize(*n);
    }
    if (offset == 0) {
      head = hole ? std::string(std::min<std::size_t>(*n, 8192), '\0')
                  : buf->substr(0, std::min<std::size_t>(buf->size(), 8192));
    }
    if (hole) {
      whole.update_zeros(*n);
      std::promise<img::EncodedChunk> ready;
      img::EncodedChunk e;
      e.chunk.kind = o.free_holes ? img::ChunkKind::kUnmapped : img::ChunkKind::kZero;
      ready.set_value(std::move(e));
      window.push_back(ready.get_future());
    } else {
      whole.update(buf->data(), buf->size());
      window.push_back(boost::asio::post(pool, boost::asio::use_future([buf, level] {
                                           thread_local std::unique_ptr<img::ChunkEncoder> enc;
                                           thread_local int enc_level = -1000;
                                           if (!enc || enc_level != level) {
                                             enc = std::make_unique<img::ChunkEncoder>(level);
                                             enc_level = level;
                                           }
                                           return enc->encode(*buf);
                                         })));
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
  m.sha256 = whole.hex_digest();
  auto tables = find_partition_tables(head, m.size, sector_size);
  if (!tables) return tables.error();
  m.partition_tables = std::move(*tables);
  m.sector_size = sector_size;

  std::string manifest;
  try {
    manifest = img::to_canonical_json(m);
  } catch (const std::exception&) {
    return make_error(Errc::kInvalid, "labels and boot hints must be valid UTF-8");
  }
  if (manifest.size() > img::kMaxManifestSize) {
    return make_error(Errc::kInvalid, "the manifest would exceed 64 MiB (" +
                                          std::to_string(m.chunks.size()) +
                                          " chunks); use a larger --chunk-size");
  }
  img::Trailer t;
  t.manifest_offset = written;
  t.manifest_length = manifest.size();
  if (auto s = write_full(out.get(), manifest); !s) return s.error();
  written += manifest.size();
  t.signature_offset = written;
  std::string signature;
  if (key) {
    auto sig = key->sign(manifest);
    if (!sig) return sig.error();
    signature = std::move(*sig);
    if (auto s = write_full(out.get(), signature); !s) return s.error();
    written += signature.size();
    t.signature_length = signature.size();
  }
  t.manifest_digest = img::manifest_digest(img::encode_header(), manifest, signature);
  const std::string trailer = img::encode_trailer(t);
  if (auto s = write_full(out.get(), trailer); !s) return s.error();
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

}  // namespace kiln::images
