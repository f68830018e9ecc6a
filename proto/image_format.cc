#include "proto/image_format.h"

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <sys/stat.h>
#include <zstd.h>

#include <cstdio>
#include <cstring>
#include <memory>
#include <nlohmann/json.hpp>

#include "core/bytes.h"
#include "core/crypto.h"
#include "core/hex.h"
#include "core/json_writer.h"
#include "proto/api_types.h"

namespace kiln::proto::image {

using json = nlohmann::json;

namespace {

constexpr char kHeaderMagic[8] = {'K', 'I', 'L', 'N', 'I', 'M', 'G', '\0'};
constexpr char kTrailerMagic[8] = {'K', 'I', 'L', 'N', 'E', 'N', 'D', '\0'};

void put_u64(std::string& s, std::size_t at, std::uint64_t v) {
  for (int i = 0; i < 8; ++i) s[at + i] = static_cast<char>((v >> (8 * i)) & 0xff);
}
std::uint64_t get_u64(std::string_view s, std::size_t at) {
  std::uint64_t v = 0;
  for (int i = 0; i < 8; ++i)
    v |= static_cast<std::uint64_t>(static_cast<unsigned char>(s[at + i])) << (8 * i);
  return v;
}

Error bad(std::string msg) { return make_error(Errc::kInvalid, "manifest: " + std::move(msg)); }

}  // namespace

std::uint64_t chunk_count(std::uint64_t size, std::uint32_t chunk_size) {
  return chunk_size == 0 ? 0 : size / chunk_size + (size % chunk_size != 0);  // no overflow
}

std::uint64_t Manifest::chunk_length(std::size_t i) const {
  const std::uint64_t off = chunk_offset(i);
  return off >= size ? 0 : std::min<std::uint64_t>(chunk_size, size - off);
}

std::uint64_t Manifest::payload_bytes() const {
  std::uint64_t n = 0;
  for (const auto& c : chunks) n += c.payload_size;
  return n;
}

std::string to_canonical_json(const Manifest& m) {
  json chunks = json::array();
  for (const auto& c : m.chunks) {
    if (has_payload(c.kind) && !c.probe.empty()) {
      chunks.push_back(json::array({std::string(1, static_cast<char>(c.kind)), c.sha256,
                                    c.payload_size, c.probe_offset, c.probe}));
    } else if (has_payload(c.kind)) {
      chunks.push_back(
          json::array({std::string(1, static_cast<char>(c.kind)), c.sha256, c.payload_size}));
    } else {
      chunks.push_back(json::array({std::string(1, static_cast<char>(c.kind))}));
    }
  }
  json regions = json::array();
  for (const auto& r : m.partition_tables)
    regions.push_back({{"length", r.length}, {"offset", r.offset}});
  json j = {{"chunk_size", m.chunk_size},
            {"chunks", std::move(chunks)},
            {"created_at", m.created_at},
            {"format", m.format},
            {"labels", m.labels},
            {"name", m.name},
            {"partition_tables", std::move(regions)},
            {"sector_size", m.sector_size},
            {"sha256", m.sha256},
            {"size", m.size},
            {"version", m.version}};
  if (m.boot) {
    j["boot"] = {{"cmdline", m.boot->cmdline},
                 {"initrd", m.boot->initrd},
                 {"kernel", m.boot->kernel},
                 {"partition", m.boot->partition}};
  }
  return j.dump();  // nlohmann objects are std::map: keys come out sorted
}

Result<Manifest> parse_manifest(std::string_view bytes) {
  if (bytes.size() > kMaxManifestSize) return bad("larger than 64 MiB");
  // The deepest canonical manifest nests 3 levels ({"chunks":[["D",...]]}); refuse deeper
  // input before building a JSON tree from it.
  if (json_nesting_depth(bytes) > 3) return bad("nested deeper than a manifest can be");
  json j = json::parse(bytes, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return bad("not valid JSON");
  if (!j.is_object()) return bad("not a JSON object");
  static const char* kKeys[] = {"boot",        "chunk_size", "chunks", "created_at",
                                "format",      "labels",     "name",   "partition_tables",
                                "sector_size", "sha256",     "size",   "version"};
  for (const auto& [k, _] : j.items()) {
    bool known = false;
    for (const char* key : kKeys) known = known || k == key;
    if (!known) return bad("unknown key '" + k + "'");
  }
  Manifest m;
  try {
    m.format = j.at("format").get<int>();
    if (m.format != kFormatVersion) {
      return make_error(Errc::kInvalid, "manifest: format " + std::to_string(m.format) +
                                            " is not supported (this build reads format " +
                                            std::to_string(kFormatVersion) + ")");
    }
    auto uint_field = [&](const char* k) {
      const auto& v = j.at(k);
      if (!v.is_number_unsigned())
        throw std::runtime_error(std::string(k) + " must be a non-negative integer");
      return v.get<std::uint64_t>();
    };
    m.name = j.at("name").get<std::string>();
    m.version = j.at("version").get<std::string>();
    m.created_at = j.at("created_at").get<std::string>();
    m.size = uint_field("size");
    const auto cs = uint_field("chunk_size");
    if (!is_valid_chunk_size(cs)) {
      return bad("chunk_size " + std::to_string(cs) +
                 " is not a power of two from 256 KiB to 64 MiB");
    }
    m.chunk_size = static_cast<std::uint32_t>(cs);
    const auto ss = uint_field("sector_size");
    if (!is_valid_sector_size(ss)) return bad("sector_size must be 512 or 4096");
    m.sector_size = static_cast<std::uint32_t>(ss);
    m.sha256 = j.at("sha256").get<std::string>();
    if (!is_sha256_hex(m.sha256)) return bad("sha256 is not 64 lower-case hex digits");
    const auto& chunks = j.at("chunks");
    if (!chunks.is_array()) return bad("chunks must be an array");
    const auto want = chunk_count(m.size, m.chunk_size);
    if (chunks.size() != want) {
      return bad("has " + std::to_string(chunks.size()) + " chunks; size " +
                 std::to_string(m.size) + " needs " + std::to_string(want));
    }
    m.chunks.reserve(chunks.size());
    for (std::size_t i = 0; i < chunks.size(); ++i) {
      const auto& e = chunks[i];
      const std::string where = "chunk " + std::to_string(i) + ": ";
      if (!e.is_array() || e.empty() || !e[0].is_string() || e[0].get<std::string>().size() != 1) {
        return bad(where + "must be [kind, ...]");
      }
      Chunk c;
      const char k = e[0].get<std::string>()[0];
      const std::uint64_t len = m.chunk_length(i);
      if (k == 'D' || k == 'R') {
        c.kind = static_cast<ChunkKind>(k);
        if ((e.size() != 3 && e.size() != 5) || !e[1].is_string() || !e[2].is_number_unsigned()) {
          return bad(where +
                     "must be [kind, sha256, payload size] or [kind, sha256, payload size, " +
                     "probe offset, probe]");
        }
        if (e.size() == 5) {
          if (!e[3].is_number_unsigned() || !e[4].is_string()) {
            return bad(where + "probe offset must be an integer and probe a string");
          }
          const auto po = e[3].get<std::uint64_t>();
          if (po % kProbeBlock != 0 || po >= len) {
            return bad(where + "probe offset " + std::to_string(po) +
                       " is not a multiple of 4096 inside the chunk");
          }
          c.probe_offset = static_cast<std::uint32_t>(po);
          c.probe = e[4].get<std::string>();
          if (c.probe.size() != 16 ||
              c.probe.find_first_not_of("0123456789abcdef") != std::string::npos) {
            return bad(where + "probe is not 16 lower-case hex digits");
          }
        }
        c.sha256 = e[1].get<std::string>();
        if (!is_sha256_hex(c.sha256)) return bad(where + "sha256 is not 64 lower-case hex digits");
        c.payload_size = e[2].get<std::uint64_t>();
        if (c.kind == ChunkKind::kRaw && c.payload_size != len) {
          return bad(where + "RAW payload size must equal the chunk length " + std::to_string(len));
        }
        if (c.kind == ChunkKind::kData &&
            (c.payload_size == 0 || c.payload_size > ZSTD_compressBound(len))) {
          return bad(where + "DATA payload size out of range");
        }
      } else if (k == 'Z' || k == 'U') {
        c.kind = static_cast<ChunkKind>(k);
        if (e.size() != 1) return bad(where + "ZERO/UNMAPPED chunks carry no hash or payload");
      } else {
        return bad(where + "unknown kind '" + std::string(1, k) + "'");
      }
      m.chunks.push_back(std::move(c));
    }
    for (const auto& r : j.at("partition_tables")) {
      Region reg;
      reg.offset = r.at("offset").get<std::uint64_t>();
      reg.length = r.at("length").get<std::uint64_t>();
      if (r.size() != 2 || reg.length == 0 || reg.offset > m.size ||
          reg.length > m.size - reg.offset) {
        return bad("partition table region outside the image");
      }
      m.partition_tables.push_back(reg);
    }
    m.labels = j.at("labels").get<std::map<std::string, std::string>>();
    if (auto b = j.find("boot"); b != j.end()) {
      BootHints h;
      h.partition = b->at("partition").get<int>();
      h.kernel = b->at("kernel").get<std::string>();
      h.initrd = b->at("initrd").get<std::string>();
      h.cmdline = b->at("cmdline").get<std::string>();
      if (b->size() != 4) return bad("boot has unknown keys");
      m.boot = std::move(h);
    }
    if (m.size == 0) return bad("size must be positive");
    if (auto v = validate_image_name(m.name); !v) return bad(v.error().message);
    if (auto v = validate_image_version(m.version); !v) return bad(v.error().message);
    for (const auto& [k, v] : m.labels) {
      if (!validate_label_key(k) || !validate_label_value(v)) return bad("bad label '" + k + "'");
    }
    if (m.boot) {
      for (const std::string* f : {&m.boot->kernel, &m.boot->initrd, &m.boot->cmdline}) {
        for (char c : *f) {
          if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f)
            return bad("control character in boot hints");
        }
      }
    }
  } catch (const std::exception& e) {
    return bad(e.what());
  }
  // Canonical bytes only: refuses duplicate keys, whitespace, floats, out-of-range integers
  // that a lenient parser would have narrowed, and anything else that does not round-trip.
  if (to_canonical_json(m) != bytes) return bad("not in canonical form");
  return m;
}

// --- chunks ---------------------------------------------------------------------------------

struct ChunkEncoder::Ctx {
  ZSTD_CCtx* cctx = ZSTD_createCCtx();
  ~Ctx() { ZSTD_freeCCtx(cctx); }
};

ChunkEncoder::ChunkEncoder(int level) : ctx_(std::make_unique<Ctx>()), level_(level) {
  if (!ctx_->cctx) throw std::bad_alloc();
  ZSTD_CCtx_setParameter(ctx_->cctx, ZSTD_c_compressionLevel, level_);
  ZSTD_CCtx_setParameter(ctx_->cctx, ZSTD_c_contentSizeFlag, 1);
  ZSTD_CCtx_setParameter(ctx_->cctx, ZSTD_c_checksumFlag, 0);  // SHA-256 covers it
}
ChunkEncoder::~ChunkEncoder() = default;

EncodedChunk ChunkEncoder::encode(std::string_view data) {
  EncodedChunk out;
  if (is_all_zero(data)) {
    out.chunk.kind = ChunkKind::kZero;
    return out;
  }
  out.chunk.sha256 = sha256_hex(data);
  set_probe(out.chunk, data);
  // Compress into the reused scratch buffer and copy out only the frame: a per-chunk
  // compressBound allocation would zero-fill and keep megabytes per chunk in flight.
  const std::size_t bound = ZSTD_compressBound(data.size());
  if (scratch_.size() < bound) scratch_.resize(bound);
  const std::size_t n =
      ZSTD_compress2(ctx_->cctx, scratch_.data(), scratch_.size(), data.data(), data.size());
  if (ZSTD_isError(n) || n >= data.size()) {
    out.chunk.kind = ChunkKind::kRaw;
    out.payload.assign(data);
  } else {
    out.chunk.kind = ChunkKind::kData;
    out.payload.assign(scratch_.data(), n);
  }
  out.chunk.payload_size = out.payload.size();
  return out;
}

std::string probe_hash(std::string_view block) { return sha256_hex(block).substr(0, 16); }

void set_probe(Chunk& c, std::string_view data) {
  std::uint64_t at = 0;
  while (at + kProbeBlock < data.size() && is_all_zero(data.substr(at, kProbeBlock))) {
    at += kProbeBlock;
  }
  c.probe_offset = static_cast<std::uint32_t>(at);
  c.probe = probe_hash(data.substr(at, probe_length(data.size(), c.probe_offset)));
}

Status decode_chunk(const Chunk& chunk, std::string_view payload, std::uint64_t length,
                    std::string& out) {
  if (payload.size() != chunk.payload_size) {
    return make_error(Errc::kInvalid, "payload is " + std::to_string(payload.size()) +
                                          " bytes, manifest says " +
                                          std::to_string(chunk.payload_size));
  }
  out.resize(length);
  ChunkDecoder decoder;
  return decoder.decode(chunk.kind, payload, chunk.sha256, length, out.data());
}

ChunkDecoder::ChunkDecoder() : dctx_(ZSTD_createDCtx()) {
  if (!dctx_) throw std::bad_alloc();
}
ChunkDecoder::~ChunkDecoder() { ZSTD_freeDCtx(static_cast<ZSTD_DCtx*>(dctx_)); }

Status ChunkDecoder::decode(ChunkKind payload_kind, std::string_view payload,
                            const std::string& sha256, std::uint64_t length, char* out) {
  if (payload_kind == ChunkKind::kRaw) {
    if (payload.size() != length) {
      return make_error(Errc::kInvalid, "raw payload is " + std::to_string(payload.size()) +
                                            " bytes, chunk is " + std::to_string(length));
    }
    std::memcpy(out, payload.data(), length);
  } else if (payload_kind == ChunkKind::kData) {
    const auto frame = ZSTD_findFrameCompressedSize(payload.data(), payload.size());
    if (ZSTD_isError(frame) || frame != payload.size()) {
      return make_error(Errc::kInvalid, "payload is not exactly one complete zstd frame");
    }
    const auto declared = ZSTD_getFrameContentSize(payload.data(), payload.size());
    if (declared != length) {
      return make_error(Errc::kInvalid,
                        "zstd frame declares " +
                            (declared == ZSTD_CONTENTSIZE_UNKNOWN ? std::string("no")
                                                                  : std::to_string(declared)) +
                            " content bytes, chunk is " + std::to_string(length));
    }
    const auto n = ZSTD_decompressDCtx(static_cast<ZSTD_DCtx*>(dctx_), out, length, payload.data(),
                                       payload.size());
    if (ZSTD_isError(n)) {
      return make_error(Errc::kInvalid, std::string("zstd: ") + ZSTD_getErrorName(n));
    }
    if (n != length)
      return make_error(Errc::kInvalid, "zstd frame decompressed to the wrong length");
  } else {
    return make_error(Errc::kInvalid, "ZERO/UNMAPPED chunks have no payload");
  }
  if (sha256_hex(std::string_view(out, length)) != sha256) {
    return make_error(Errc::kInvalid, "SHA-256 mismatch (expected " + sha256 + ")");
  }
  return ok_status();
}

// --- packed file ----------------------------------------------------------------------------

std::string encode_header() {
  std::string h(kHeaderSize, '\0');
  std::memcpy(h.data(), kHeaderMagic, 8);
  h[8] = 1;   // major, little-endian u16
  h[10] = 0;  // minor
  return h;
}

Status check_header(std::string_view b) {
  if (b.size() < kHeaderSize || std::memcmp(b.data(), kHeaderMagic, 8) != 0) {
    return make_error(Errc::kInvalid, "not a kiln image (bad header magic)");
  }
  const unsigned major = static_cast<unsigned char>(b[8]) | (static_cast<unsigned char>(b[9]) << 8);
  if (major != 1) {
    return make_error(Errc::kInvalid, "kiln image format major version " + std::to_string(major) +
                                          " is not supported (this build reads version 1)");
  }
  for (std::size_t i = 12; i < kHeaderSize; ++i) {
    if (b[i] != 0) return make_error(Errc::kInvalid, "header reserved bytes are not zero");
  }
  return ok_status();
}

namespace {
std::string digest_prefix8(std::string_view data) {
  const std::string hex = sha256_hex(data);
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i)
    out[i] = static_cast<char>(std::stoi(hex.substr(2 * i, 2), nullptr, 16));
  return out;
}
}  // namespace

std::string manifest_digest(std::string_view header, std::string_view manifest,
                            std::string_view signature) {
  std::string all(header);
  all.append(manifest);
  all.append(signature);
  return digest_prefix8(all);
}

std::string encode_trailer(const Trailer& t) {
  std::string s(kTrailerSize, '\0');
  std::memcpy(s.data(), kTrailerMagic, 8);
  put_u64(s, 8, t.manifest_offset);
  put_u64(s, 16, t.manifest_length);
  put_u64(s, 24, t.signature_offset);
  put_u64(s, 32, t.signature_length);
  if (t.manifest_digest.size() == 8) std::memcpy(s.data() + 40, t.manifest_digest.data(), 8);
  const std::string own = digest_prefix8(std::string_view(s.data(), 56));
  std::memcpy(s.data() + 56, own.data(), 8);
  return s;
}

Result<Trailer> decode_trailer(std::string_view b, std::uint64_t file_size) {
  if (b.size() != kTrailerSize || std::memcmp(b.data(), kTrailerMagic, 8) != 0) {
    return make_error(Errc::kInvalid, "not a complete kiln image (bad trailer magic: truncated?)");
  }
  if (digest_prefix8(b.substr(0, 56)) != b.substr(56, 8)) {
    return make_error(Errc::kInvalid, "trailer checksum mismatch");
  }
  Trailer t{get_u64(b, 8), get_u64(b, 16), get_u64(b, 24), get_u64(b, 32),
            std::string(b.substr(40, 8))};
  if (get_u64(b, 48) != 0) return make_error(Errc::kInvalid, "trailer reserved bytes are not zero");
  const std::uint64_t end = file_size - kTrailerSize;
  if (file_size < kHeaderSize + kTrailerSize || t.manifest_offset < kHeaderSize ||
      t.manifest_length == 0 || t.manifest_length > kMaxManifestSize || t.manifest_offset > end ||
      t.manifest_length > end - t.manifest_offset ||
      (t.signature_length != 0 && t.signature_length != kSignatureSize) ||
      (t.signature_length != 0 && t.signature_offset != t.manifest_offset + t.manifest_length) ||
      t.signature_offset > end || t.signature_length > end - t.signature_offset ||
      (t.signature_length ? t.signature_offset + t.signature_length
                          : t.manifest_offset + t.manifest_length) != end) {
    return make_error(Errc::kInvalid, "trailer offsets are inconsistent with the file size");
  }
  return t;
}

// --- signatures -------------------------------------------------------------------------------

Key::~Key() { EVP_PKEY_free(static_cast<EVP_PKEY*>(pkey_)); }

namespace {
// Owners of the OpenSSL and stdio handles used below.
struct MdCtxFree {
  void operator()(EVP_MD_CTX* c) const { EVP_MD_CTX_free(c); }
};
using MdCtx = std::unique_ptr<EVP_MD_CTX, MdCtxFree>;
struct PkeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
using Pkey = std::unique_ptr<EVP_PKEY, PkeyFree>;
struct FileClose {
  void operator()(FILE* f) const { std::fclose(f); }
};
using File = std::unique_ptr<FILE, FileClose>;

// Reads one PEM key with `read` (PEM_read_PrivateKey or PEM_read_PUBKEY); Ed25519 only.
// The caller owns the returned key.
template <typename Reader>
EVP_PKEY* read_ed25519(const std::string& path, Reader read) {
  File f(std::fopen(path.c_str(), "r"));
  if (!f) return nullptr;
  Pkey k(read(f.get(), nullptr, nullptr, nullptr));
  if (k && EVP_PKEY_id(k.get()) != EVP_PKEY_ED25519) return nullptr;
  return k.release();
}
}  // namespace

Result<Key> Key::load_private(const std::string& path) {
  if (EVP_PKEY* k = read_ed25519(path, PEM_read_PrivateKey)) return Key(k);
  return make_error(Errc::kInvalid, "cannot read " + path + " as an Ed25519 private key (PEM)");
}

Result<Key> Key::load_public(const std::string& path) {
  if (EVP_PKEY* k = read_ed25519(path, PEM_read_PUBKEY)) return Key(k);
  return make_error(Errc::kInvalid, "cannot read " + path + " as an Ed25519 public key (PEM)");
}

Status Key::generate(const std::string& private_path, const std::string& public_path) {
  EVP_PKEY* k = EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519");
  if (!k) return make_error(Errc::kInternal, "Ed25519 key generation failed");
  Key key(k);
  const mode_t old = ::umask(077);
  File f(std::fopen(private_path.c_str(), "wx"));
  ::umask(old);
  if (!f) return make_error(Errc::kConflict, "cannot create " + private_path + " (exists?)");
  const bool ok = PEM_write_PrivateKey(f.get(), k, nullptr, nullptr, 0, nullptr, nullptr) == 1;
  f.reset();
  File p(std::fopen(public_path.c_str(), "w"));
  if (!ok || !p) return make_error(Errc::kInternal, "cannot write key files");
  const bool ok2 = PEM_write_PUBKEY(p.get(), k) == 1;
  p.reset();
  if (!ok2) return make_error(Errc::kInternal, "cannot write " + public_path);
  return ok_status();
}

Result<std::string> Key::sign(std::string_view message) const {
  const MdCtx ctx(EVP_MD_CTX_new());
  std::string sig(kSignatureSize, '\0');
  std::size_t len = sig.size();
  const bool ok =
      ctx &&
      EVP_DigestSignInit(ctx.get(), nullptr, nullptr, nullptr, static_cast<EVP_PKEY*>(pkey_)) ==
          1 &&
      EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(sig.data()), &len,
                     reinterpret_cast<const unsigned char*>(message.data()), message.size()) == 1;
  if (!ok || len != kSignatureSize)
    return make_error(Errc::kInvalid, "signing failed (not a private key?)");
  return sig;
}

bool Key::verify(std::string_view message, std::string_view signature) const {
  if (signature.size() != kSignatureSize) return false;
  const MdCtx ctx(EVP_MD_CTX_new());
  return ctx &&
         EVP_DigestVerifyInit(ctx.get(), nullptr, nullptr, nullptr,
                              static_cast<EVP_PKEY*>(pkey_)) == 1 &&
         EVP_DigestVerify(ctx.get(), reinterpret_cast<const unsigned char*>(signature.data()),
                          signature.size(), reinterpret_cast<const unsigned char*>(message.data()),
                          message.size()) == 1;
}

std::string external_signing_message(std::string_view name, std::string_view version,
                                     std::string_view url, std::string_view sha256,
                                     std::int64_t size, std::string_view format) {
  std::string m = "kiln external image v1\n";
  for (std::string_view part : {name, version, url, sha256}) {
    m.append(part);
    m.push_back('\n');
  }
  m += std::to_string(size);
  m.push_back('\n');
  m.append(format);
  m.push_back('\n');
  return m;
}

Status verify_signature(std::string_view manifest_bytes, std::string_view signature,
                        const std::vector<Key>& trusted) {
  if (trusted.empty()) return ok_status();
  if (signature.empty())
    return make_error(Errc::kForbidden, "manifest is unsigned and trusted keys are configured");
  for (const auto& k : trusted) {
    if (k.verify(manifest_bytes, signature)) return ok_status();
  }
  return make_error(Errc::kForbidden, "manifest signature does not verify against any trusted key");
}

}  // namespace kiln::proto::image
