// api/image_responses.h — the manifest response, shared by the operator's image routes and
// the agent's (same bytes, same ETag, same signature header).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "api/context.h"

namespace kiln::api {

// The stored manifest of name:version with its ETag and `Kiln-Signature` (hex) when signed.
// 404 for an unknown version or an external (raw URL) image, which has no manifest.
Response manifest_response(Services& s, const std::string& name, const std::string& version);

// Admits an authenticated upload of `length` bytes (unknown: chunked) before its body is
// received: nullopt and a `hold` to keep until the upload is answered, or the refusal (503
// with Retry-After past images.max_concurrent_uploads, 507 below images.min_free_bytes).
std::optional<Response> reserve_upload(Services& s, std::optional<std::uint64_t> length,
                                       std::shared_ptr<void>& hold);

}  // namespace kiln::api
