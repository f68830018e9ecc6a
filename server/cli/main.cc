// kiln — command-line client for kilnd's REST API. See `kiln --help` and cli/commands.h.
#include <cstdlib>
#include <iostream>

#include "cli/commands.h"

namespace {

std::optional<std::string> getenv_opt(const char* name) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return std::nullopt;
  return std::string(v);
}

}  // namespace

int main(int argc, char** argv) {
  kiln::cli::Environment env;
  env.url = getenv_opt("KILN_URL");
  env.token = getenv_opt("KILN_TOKEN");
  env.config_path = getenv_opt("KILN_CONFIG");
  env.home = getenv_opt("HOME");
  try {
    return kiln::cli::run(argc, argv, env, std::cout, std::cerr);
  } catch (const std::exception& e) {
    std::cerr << "kiln: internal error: " << e.what() << "\n";
    return kiln::cli::kExitUsage;
  }
}
