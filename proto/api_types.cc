#include "proto/api_types.h"

#include <cctype>

namespace kiln::proto {
namespace {

template <typename E, std::size_t N>
std::optional<E> parse_enum(std::string_view s, const E (&all)[N]) {
  for (E e : all) {
    if (s == to_string(e)) return e;
  }
  return std::nullopt;
}

bool is_lower_alnum(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }

std::string_view trim(std::string_view s) {
  while (!s.empty() && s.front() == ' ') s.remove_prefix(1);
  while (!s.empty() && s.back() == ' ') s.remove_suffix(1);
  return s;
}

Status validate_name_like(std::string_view what, std::string_view s, std::string_view extra) {
  if (s.empty() || s.size() > 128) {
    return make_error(Errc::kInvalid, std::string(what) + " must be 1-128 characters");
  }
  if (s.front() == '.' || s.front() == '-') {
    return make_error(Errc::kInvalid, std::string(what) + " must not start with '.' or '-'");
  }
  for (char c : s) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '-' &&
        extra.find(c) == std::string_view::npos) {
      return make_error(Errc::kInvalid, std::string(what) + " contains invalid character '" +
                                            std::string(1, c) + "'");
    }
  }
  return ok_status();
}

}  // namespace

const char* to_string(MachineState s) {
  switch (s) {
    case MachineState::kDiscovered:
      return "discovered";
    case MachineState::kReady:
      return "ready";
    case MachineState::kDeploying:
      return "deploying";
    case MachineState::kDeployed:
      return "deployed";
    case MachineState::kFailed:
      return "failed";
  }
  return "failed";
}
std::optional<MachineState> parse_machine_state(std::string_view s) {
  return parse_enum(s, kAllMachineStates);
}

const char* to_string(DeploymentStatus s) {
  switch (s) {
    case DeploymentStatus::kPending:
      return "pending";
    case DeploymentStatus::kRunning:
      return "running";
    case DeploymentStatus::kSucceeded:
      return "succeeded";
    case DeploymentStatus::kBooted:
      return "booted";
    case DeploymentStatus::kFailed:
      return "failed";
    case DeploymentStatus::kSuperseded:
      return "superseded";
  }
  return "failed";
}
std::optional<DeploymentStatus> parse_deployment_status(std::string_view s) {
  return parse_enum(s, kAllDeploymentStatuses);
}

const char* to_string(Scope s) { return s == Scope::kAdmin ? "admin" : "read"; }
std::optional<Scope> parse_scope(std::string_view s) {
  static constexpr Scope kAll[] = {Scope::kRead, Scope::kAdmin};
  return parse_enum(s, kAll);
}

Status validate_label_key(std::string_view key) {
  if (key.empty() || key.size() > 63) {
    return make_error(Errc::kInvalid, "label key must be 1-63 characters");
  }
  if (!is_lower_alnum(key.front())) {
    return make_error(Errc::kInvalid,
                      "label key '" + std::string(key) + "' must start with [a-z0-9]");
  }
  for (char c : key) {
    if (!is_lower_alnum(c) && c != '.' && c != '_' && c != '/' && c != '-') {
      return make_error(Errc::kInvalid,
                        "label key '" + std::string(key) + "' may only contain [a-z0-9._/-]");
    }
  }
  return ok_status();
}

Status validate_label_value(std::string_view value) {
  if (value.size() > 255) return make_error(Errc::kInvalid, "label value longer than 255");
  for (char c : value) {
    if (c < 0x20 || c > 0x7e || c == ',' || c == '=') {
      return make_error(Errc::kInvalid,
                        "label value may only contain printable ASCII other than ',' and '='");
    }
  }
  return ok_status();
}

Result<Selector> parse_selector(std::string_view text) {
  Selector out;
  text = trim(text);
  if (text.empty()) return make_error(Errc::kInvalid, "selector is empty");
  while (true) {
    std::size_t comma = text.find(',');
    std::string_view term = trim(text.substr(0, comma));
    LabelTerm t;
    if (std::size_t ne = term.find("!="); ne != std::string_view::npos) {
      t.op = LabelTerm::Op::kNotEquals;
      t.key = std::string(trim(term.substr(0, ne)));
      t.value = std::string(trim(term.substr(ne + 2)));
    } else if (std::size_t eq = term.find('='); eq != std::string_view::npos) {
      t.op = LabelTerm::Op::kEquals;
      t.key = std::string(trim(term.substr(0, eq)));
      t.value = std::string(trim(term.substr(eq + 1)));
    } else if (!term.empty() && term.front() == '!') {
      t.op = LabelTerm::Op::kNotExists;
      t.key = std::string(trim(term.substr(1)));
    } else {
      t.op = LabelTerm::Op::kExists;
      t.key = std::string(term);
    }
    if (auto s = validate_label_key(t.key); !s) {
      return make_error(Errc::kInvalid,
                        "bad selector term '" + std::string(term) + "': " + s.error().message);
    }
    if (auto s = validate_label_value(t.value); !s) {
      return make_error(Errc::kInvalid,
                        "bad selector term '" + std::string(term) + "': " + s.error().message);
    }
    out.push_back(std::move(t));
    if (comma == std::string_view::npos) break;
    text = text.substr(comma + 1);
  }
  return out;
}

std::string format_selector(const Selector& selector) {
  std::string out;
  for (const auto& t : selector) {
    if (!out.empty()) out.push_back(',');
    switch (t.op) {
      case LabelTerm::Op::kEquals:
        out += t.key + "=" + t.value;
        break;
      case LabelTerm::Op::kNotEquals:
        out += t.key + "!=" + t.value;
        break;
      case LabelTerm::Op::kExists:
        out += t.key;
        break;
      case LabelTerm::Op::kNotExists:
        out += "!" + t.key;
        break;
    }
  }
  return out;
}

Status validate_image_name(std::string_view name) {
  return validate_name_like("image name", name, "");
}
Status validate_image_version(std::string_view version) {
  return validate_name_like("image version", version, "+");
}

}  // namespace kiln::proto
