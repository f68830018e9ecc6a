// proto/image_format.h — the kiln image format (proto/image-format.md is the normative spec):
// manifests and their canonical JSON, chunk encoding and verified decoding, the packed-file
// header and trailer, and Ed25519 signatures.
//
// Pure codec: no file or network I/O except loading key files. Shared by kilnd, the agent and
// the CLI so that all three accept and refuse exactly the same bytes. Thread-safety: free
// functions are reentrant; ChunkEncoder is one per thread.
#pragma once

#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.h"

namespace kiln::proto::image {

inline constexpr int kFormatVersion = 1;
inline constexpr std::uint32_t kMinChunkSize = 256 * 1024;
inline constexpr std::uint32_t kMaxChunkSize = 64 * 1024 * 1024;
inline constexpr std::uint32_t kDefaultChunkSize = 4 * 1024 * 1024;
inline constexpr std::size_t kHeaderSize = 64;
inline constexpr std::size_t kTrailerSize = 64;
inline constexpr std::size_t kSignatureSize = 64;  // Ed25519
// A manifest is held in memory (and in the agent's RAM) whole: 64 MiB holds ~600,000 chunks,
// a 2.4 TiB image at 4 MiB chunks. Larger images use larger chunks.
inline constexpr std::uint64_t kMaxManifestSize = 64ull << 20;
// The chunk sizes the format allows: a power of two from kMinChunkSize to kMaxChunkSize.
constexpr bool is_valid_chunk_size(std::uint64_t n) {
  return n >= kMinChunkSize && n <= kMaxChunkSize && (n & (n - 1)) == 0;
}
// The sector sizes the format allows (a manifest's sector_size).
constexpr bool is_valid_sector_size(std::uint64_t n) { return n == 512 || n == 4096; }

enum class ChunkKind : char { kData = 'D', kRaw = 'R', kZero = 'Z', kUnmapped = 'U' };
inline bool has_payload(ChunkKind k) { return k == ChunkKind::kData || k == ChunkKind::kRaw; }

// A DATA/RAW chunk's probe: where its first non-zero 4 KiB block lies and a short hash of that
// block, so a writer can tell with one small read that a disk does not hold the chunk. A probe
// only ever proves a difference; that a disk holds a chunk is proved by the SHA-256 alone.
inline constexpr std::uint32_t kProbeBlock = 4096;

struct Chunk {
  ChunkKind kind = ChunkKind::kZero;
  std::string sha256;              // of the uncompressed bytes (DATA, RAW only)
  std::uint64_t payload_size = 0;  // bytes stored (DATA: frame size; RAW: chunk length)
  std::uint32_t probe_offset = 0;  // multiple of kProbeBlock, inside the chunk
  std::string probe;               // 16 hex digits; empty in manifests built without probes
  bool operator==(const Chunk&) const = default;
};

// The probe of the chunk bytes `data` (DATA/RAW content, not all zero): sets probe_offset and
// probe on `c`.
void set_probe(Chunk& c, std::string_view data);
// The probe hash of the block a writer read at probe_offset: the first 8 bytes of its SHA-256,
// in hex. `block` is min(kProbeBlock, chunk length - probe_offset) bytes.
std::string probe_hash(std::string_view block);
// The length of the probe block of chunk `length` bytes long at `probe_offset`.
inline std::uint64_t probe_length(std::uint64_t length, std::uint32_t probe_offset) {
  return std::min<std::uint64_t>(kProbeBlock, length - probe_offset);
}

struct Region {
  std::uint64_t offset = 0;
  std::uint64_t length = 0;
  bool operator==(const Region&) const = default;
};

struct BootHints {
  int partition = 0;
  std::string kernel;
  std::string initrd;
  std::string cmdline;
  bool operator==(const BootHints&) const = default;
};

struct Manifest {
  int format = kFormatVersion;
  std::string name;
  std::string version;
  std::string created_at;  // RFC 3339
  std::uint64_t size = 0;
  std::uint32_t chunk_size = kDefaultChunkSize;
  std::uint32_t sector_size = 512;
  std::string sha256;  // whole image, ZERO and UNMAPPED read as zeroes
  std::vector<Chunk> chunks;
  std::vector<Region> partition_tables;
  std::optional<BootHints> boot;
  std::map<std::string, std::string> labels;

  std::uint64_t chunk_offset(std::size_t i) const {
    return static_cast<std::uint64_t>(i) * chunk_size;
  }
  std::uint64_t chunk_length(std::size_t i) const;
  // Bytes of payload stored for the whole image (sum of DATA and RAW payload sizes).
  std::uint64_t payload_bytes() const;
  bool operator==(const Manifest&) const = default;
};

// Canonical JSON bytes (sorted keys, no whitespace): what is signed and stored.
std::string to_canonical_json(const Manifest& m);
// Strict parse: unknown keys, wrong types, inconsistent sizes and unknown format versions are
// refused with a message naming what is wrong.
Result<Manifest> parse_manifest(std::string_view bytes);
std::uint64_t chunk_count(std::uint64_t size, std::uint32_t chunk_size);

// --- chunks ---------------------------------------------------------------------------------

struct EncodedChunk {
  Chunk chunk;
  std::string payload;  // empty for ZERO/UNMAPPED
};

// Compresses chunks; owns a zstd compression context. Not thread-safe: one per thread.
class ChunkEncoder {
 public:
  explicit ChunkEncoder(int level);
  ~ChunkEncoder();
  ChunkEncoder(const ChunkEncoder&) = delete;
  ChunkEncoder& operator=(const ChunkEncoder&) = delete;
  // All-zero data becomes ZERO; data whose frame would not be smaller becomes RAW.
  EncodedChunk encode(std::string_view data);

 private:
  struct Ctx;
  std::unique_ptr<Ctx> ctx_;
  int level_;
  std::string scratch_;  // compressBound-sized output buffer, reused across chunks
};

// Decodes a DATA/RAW payload into `out` (resized to `length`) and checks it against the chunk:
// exactly one complete zstd frame of exactly `length` bytes, whose SHA-256 matches. The error
// message starts with what failed; callers prefix the chunk index.
Status decode_chunk(const Chunk& chunk, std::string_view payload, std::uint64_t length,
                    std::string& out);

// Decodes a payload as a chunk store serves it: a DATA frame or RAW bytes, whichever the store
// holds (it may differ from the manifest's payload for the same content, so the payload size
// is not compared), into `out` (exactly `length` bytes, caller-allocated, e.g. aligned for
// O_DIRECT), and checks the SHA-256 of the result. Owns a zstd decompression context: one per
// thread.
class ChunkDecoder {
 public:
  ChunkDecoder();
  ~ChunkDecoder();
  ChunkDecoder(const ChunkDecoder&) = delete;
  ChunkDecoder& operator=(const ChunkDecoder&) = delete;
  Status decode(ChunkKind payload_kind, std::string_view payload, const std::string& sha256,
                std::uint64_t length, char* out);

 private:
  void* dctx_;  // ZSTD_DCtx*
};

// --- packed file ----------------------------------------------------------------------------

struct Trailer {
  std::uint64_t manifest_offset = 0;
  std::uint64_t manifest_length = 0;
  std::uint64_t signature_offset = 0;
  std::uint64_t signature_length = 0;
  std::string manifest_digest;  // 8 bytes: SHA-256(header + manifest + signature) prefix
  bool operator==(const Trailer&) const = default;
};
// The 8-byte digest a trailer carries over the header, the manifest and the signature.
std::string manifest_digest(std::string_view header, std::string_view manifest,
                            std::string_view signature);

std::string encode_header();
Status check_header(std::string_view bytes);
std::string encode_trailer(const Trailer& t);
// Checks magic, checksum and that every region lies inside a file of `file_size` bytes.
Result<Trailer> decode_trailer(std::string_view bytes, std::uint64_t file_size);

// --- signatures -------------------------------------------------------------------------------

// An Ed25519 key (private or public) loaded from PEM. Owns an EVP_PKEY.
class Key {
 public:
  ~Key();
  Key(Key&& o) noexcept : pkey_(o.pkey_) { o.pkey_ = nullptr; }
  Key(const Key&) = delete;
  Key& operator=(const Key&) = delete;
  static Result<Key> load_private(const std::string& pem_path);
  static Result<Key> load_public(const std::string& pem_path);
  // Writes a new key pair: `private_path` (mode 0600) and `public_path`.
  static Status generate(const std::string& private_path, const std::string& public_path);

  Result<std::string> sign(std::string_view message) const;  // needs a private key
  bool verify(std::string_view message, std::string_view signature) const;

 private:
  explicit Key(void* pkey) : pkey_(pkey) {}
  void* pkey_;  // EVP_PKEY*
};

// What an external (raw URL) image's signature covers: its name, version, URL, SHA-256, size
// and format, one per line after a fixed header, so none can be changed or moved to another
// version without the signing key.
std::string external_signing_message(std::string_view name, std::string_view version,
                                     std::string_view url, std::string_view sha256,
                                     std::int64_t size, std::string_view format);

// Verifies `signature` over `manifest_bytes` against any of `trusted`. With no trusted keys,
// everything passes (verification not configured); with some, an unsigned manifest fails.
Status verify_signature(std::string_view manifest_bytes, std::string_view signature,
                        const std::vector<Key>& trusted);

}  // namespace kiln::proto::image
