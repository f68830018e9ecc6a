// api/image_responses.h — the manifest response, shared by the operator's image routes and
// the agent's (same bytes, same ETag, same signature header).
#pragma once

#include <string>

#include "api/context.h"

namespace kiln::api {

// The stored manifest of name:version with its ETag and `Kiln-Signature` (hex) when signed.
// 404 for an unknown version or an external (raw URL) image, which has no manifest.
Response manifest_response(Services& s, const std::string& name, const std::string& version);

}  // namespace kiln::api
