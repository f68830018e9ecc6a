// boot/script.h — the iPXE script a network-booting machine gets: pure policy, no I/O.
//
// `choose_script` maps what kiln knows of a machine to one of the templates in ipxe-scripts/
// (discover, wait, deploy, localboot, failed); `Templates` renders them with `{{name}}`
// placeholders. The templates are compiled in (cmake/embed_files.cmake) and may be overridden
// from a directory. Values are checked before they reach a script: nothing a client sent may
// become an iPXE command or an iPXE setting expansion.
#pragma once

#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "core/result.h"
#include "proto/api_types.h"

namespace kiln::boot {

enum class Script { kDiscover, kWait, kDeploy, kLocalBoot, kFailed };
std::string_view to_string(Script s);

struct MachineBootState {
  bool known = false;  // false: the MAC is not registered (yet)
  proto::MachineState state = proto::MachineState::kDiscovered;
  bool deployment_active = false;  // a pending or running deployment exists
  bool retry_available = false;    // failed, and an automatic retry may start (see daemon)
  bool awaiting_approval = false;  // registered, waiting for an operator (discovery approve)
};

// awaiting approval -> wait; unknown or discovered -> discover; an active deployment -> deploy
// (whatever the state says: a machine that boots again mid-deployment resumes it); deployed ->
// localboot; failed -> deploy when a retry is available, else failed; ready -> wait.
Script choose_script(const MachineBootState& m);

// What `localboot.ipxe` runs per firmware type.
enum class LocalBoot { kSanboot, kExit };
std::optional<LocalBoot> parse_local_boot(std::string_view s);  // "sanboot" | "exit"
std::string local_boot_command(LocalBoot lb);

// Makes display text (a failure reason, an image name) safe to echo in a script: anything but
// letters, digits, spaces and . , : / _ + ( ) = @ - becomes '_'; at most 200 bytes.
std::string script_text(std::string_view s);

class Templates {
 public:
  using Vars = std::map<std::string, std::string, std::less<>>;

  // The templates compiled into the binary.
  static const Templates& embedded();
  // The embedded templates, with any of discover/wait/deploy/localboot/failed.ipxe present in
  // `dir` taking their place. kInvalid: a file there is not an iPXE script.
  static Result<Templates> with_overrides(const std::filesystem::path& dir);

  // kInvalid: a placeholder without a value, or a value holding a character iPXE would
  // interpret: a control character, a quote, a backslash, '$', ';', '&', '|' or '#'; or a
  // space, except in `cmdline` and `reason` (every other value must stay one word).
  // `bios_command` and `efi_command` are whole commands from local_boot_command(): as given.
  Result<std::string> render(Script s, const Vars& vars) const;
  const std::string& source(Script s) const;

 private:
  std::map<Script, std::string> text_;
};

}  // namespace kiln::boot
