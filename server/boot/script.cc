#include "boot/script.h"

#include <cctype>
#include <fstream>
#include <sstream>

namespace kiln::boot {

// Generated from ipxe-scripts/*.ipxe (cmake/embed_files.cmake).
const std::map<std::string, std::string>& embedded_ipxe_scripts();

namespace {

constexpr std::pair<Script, std::string_view> kNames[] = {{Script::kDiscover, "discover"},
                                                          {Script::kWait, "wait"},
                                                          {Script::kDeploy, "deploy"},
                                                          {Script::kLocalBoot, "localboot"},
                                                          {Script::kFailed, "failed"}};

// Characters iPXE interprets on a command line: settings expansion ($), quoting and escapes,
// command separators and conditionals (; & |), comments (#). Control characters end a line.
bool unsafe_value_char(unsigned char c) {
  return c < 0x20 || c == 0x7f || c == '$' || c == '"' || c == '\'' || c == '\\' || c == ';' ||
         c == '&' || c == '|' || c == '#';
}

// Only these values are made of several words: the configured kernel command line and the
// display text of a failure reason. Every other value is one word.
bool may_hold_spaces(std::string_view name) { return name == "cmdline" || name == "reason"; }

// Whole iPXE commands kilnd itself chose from a fixed set (local_boot_command): not checked.
bool is_command(std::string_view name) { return name == "bios_command" || name == "efi_command"; }

bool display_char(unsigned char c) {
  return std::isalnum(c) ||
         std::string_view(" .,:/_+()=@-").find(static_cast<char>(c)) != std::string_view::npos;
}

}  // namespace

std::string_view to_string(Script s) {
  for (const auto& [k, n] : kNames) {
    if (k == s) return n;
  }
  return "?";
}

Script choose_script(const MachineBootState& m) {
  using proto::MachineState;
  if (m.known && m.awaiting_approval) return Script::kWait;
  if (!m.known || m.state == MachineState::kDiscovered) return Script::kDiscover;
  if (m.deployment_active) return Script::kDeploy;
  switch (m.state) {
    case MachineState::kDeployed:
      return Script::kLocalBoot;
    case MachineState::kFailed:
      return m.retry_available ? Script::kDeploy : Script::kFailed;
    default:
      // ready, or deploying without an active deployment (superseded and not replaced).
      return Script::kWait;
  }
}

std::optional<LocalBoot> parse_local_boot(std::string_view s) {
  if (s == "sanboot") return LocalBoot::kSanboot;
  if (s == "exit") return LocalBoot::kExit;
  return std::nullopt;
}

std::string local_boot_command(LocalBoot lb) {
  // `exit 1` hands control back to the firmware, which goes on to the next boot device. On
  // BIOS, sanboot boots the first hard disk directly and falls back to that.
  return lb == LocalBoot::kSanboot ? "sanboot --no-describe --drive 0x80 || exit 1" : "exit 1";
}

std::string script_text(std::string_view s) {
  std::string out;
  for (unsigned char c : s.substr(0, 200))
    out.push_back(display_char(c) ? static_cast<char>(c) : '_');
  return out;
}

const Templates& Templates::embedded() {
  static const Templates t = [] {
    Templates x;
    const auto& files = embedded_ipxe_scripts();
    for (const auto& [k, n] : kNames) {
      auto it = files.find(std::string(n) + ".ipxe");
      x.text_[k] = it == files.end() ? std::string() : it->second;
    }
    return x;
  }();
  return t;
}

Result<Templates> Templates::with_overrides(const std::filesystem::path& dir) {
  Templates t = embedded();
  for (const auto& [k, n] : kNames) {
    const auto p = dir / (std::string(n) + ".ipxe");
    std::error_code ec;
    if (!std::filesystem::is_regular_file(p, ec)) continue;
    std::ifstream in(p, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    if (!in && !in.eof()) return make_error(Errc::kInvalid, "cannot read " + p.string());
    std::string text = ss.str();
    if (text.rfind("#!ipxe", 0) != 0) {
      return make_error(Errc::kInvalid, p.string() + " is not an iPXE script (no #!ipxe line)");
    }
    t.text_[k] = std::move(text);
  }
  return t;
}

const std::string& Templates::source(Script s) const { return text_.at(s); }

Result<std::string> Templates::render(Script s, const Vars& vars) const {
  const std::string& in = source(s);
  std::string out;
  out.reserve(in.size() + 256);
  std::size_t pos = 0;
  while (pos < in.size()) {
    const auto open = in.find("{{", pos);
    if (open == std::string::npos) {
      out.append(in, pos);
      break;
    }
    const auto close = in.find("}}", open + 2);
    if (close == std::string::npos) {
      return make_error(Errc::kInvalid, std::string(to_string(s)) + ".ipxe: unclosed '{{'");
    }
    out.append(in, pos, open - pos);
    const std::string_view name(in.data() + open + 2, close - open - 2);
    auto it = vars.find(name);
    if (it == vars.end()) {
      return make_error(Errc::kInvalid, std::string(to_string(s)) + ".ipxe: no value for {{" +
                                            std::string(name) + "}}");
    }
    for (unsigned char c : is_command(name) ? std::string_view() : std::string_view(it->second)) {
      if (unsafe_value_char(c) || (c == ' ' && !may_hold_spaces(name))) {
        return make_error(Errc::kInvalid, std::string(to_string(s)) + ".ipxe: the value of {{" +
                                              std::string(name) +
                                              "}} holds a character iPXE would interpret");
      }
    }
    out += it->second;
    pos = close + 2;
  }
  return out;
}

}  // namespace kiln::boot
