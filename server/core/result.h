// core/result.h — expected failures as values.
//
// kiln reports failures that callers are expected to handle (not found, conflict, invalid
// input) as `Result<T>`; broken invariants are exceptions. An `Error` carries a stable
// machine-readable code (the JSON `error.code` of the API) and a human-readable message.
#pragma once

#include <string>
#include <utility>
#include <variant>

namespace kiln {

enum class Errc {
  kBadRequest,  // malformed input (bad JSON, bad syntax)
  kInvalid,     // well-formed but semantically invalid (422)
  kNotFound,
  kConflict,  // state conflict (409)
  kUnauthorized,
  kForbidden,
  kTooLarge,
  kUnavailable,  // temporarily unable (shutting down, busy)
  kInternal,
};

// Stable wire name of an error code ("not_found", ...).
const char* errc_name(Errc e);

struct Error {
  Errc code = Errc::kInternal;
  std::string message;
};

inline Error make_error(Errc code, std::string message) { return Error{code, std::move(message)}; }

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}      // NOLINT: implicit by design
  Result(Error error) : v_(std::move(error)) {}  // NOLINT

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }

  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }

  const Error& error() const { return std::get<1>(v_); }

 private:
  std::variant<T, Error> v_;
};

struct Unit {};
using Status = Result<Unit>;
inline Status ok_status() { return Unit{}; }

}  // namespace kiln
