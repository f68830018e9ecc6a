// libFuzzer target: arbitrary bytes as a kiln manifest, and as a packed-image trailer.
//
// Invariants: parsing never crashes; a manifest that parses re-serializes canonically to bytes
// that parse back to the same manifest (canonical form is a fixed point); a trailer that
// decodes re-encodes to the same 64 bytes.
#include <cstdlib>
#include <string_view>

#include "proto/image_format.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  namespace img = kiln::proto::image;
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  if (auto m = img::parse_manifest(bytes)) {
    const std::string canonical = img::to_canonical_json(*m);
    auto again = img::parse_manifest(canonical);
    if (!again || !(*again == *m) || img::to_canonical_json(*again) != canonical) std::abort();
  }
  if (size >= img::kTrailerSize) {
    const auto tail = bytes.substr(size - img::kTrailerSize);
    if (auto t = img::decode_trailer(tail, size)) {
      if (img::encode_trailer(*t) != tail) std::abort();
    }
  }
  return 0;
}
