#include "core/result.h"

namespace kiln {

const char* errc_name(Errc e) {
  switch (e) {
    case Errc::kBadRequest:
      return "bad_request";
    case Errc::kInvalid:
      return "invalid";
    case Errc::kNotFound:
      return "not_found";
    case Errc::kConflict:
      return "conflict";
    case Errc::kUnauthorized:
      return "unauthorized";
    case Errc::kForbidden:
      return "forbidden";
    case Errc::kTooLarge:
      return "too_large";
    case Errc::kUnavailable:
      return "unavailable";
    case Errc::kInternal:
      return "internal";
  }
  return "internal";
}

}  // namespace kiln
