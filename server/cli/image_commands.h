// cli/image_commands.h — the offline image commands of `kiln`: build, inspect and verify packed
// `.kiln` images and generate signing keys. They work on local files only (no server).
// image_commands.cc also defines the image commands that call kilnd (list, show, register,
// push, delete), declared with the other API commands in api_commands.h.
#pragma once

#include <cstdint>
#include <map>
#include <ostream>
#include <string>
#include <vector>

namespace kiln::cli {

struct ImageBuildArgs {
  std::string input;
  std::string output;
  std::string name;
  std::string version;
  std::string chunk_size = "4M";  // bytes, or with a K/M suffix
  int level = 3;
  int threads = 0;
  bool free_holes = false;
  std::uint32_t sector_size = 0;
  std::string sign_key;
  std::vector<std::string> labels;  // key=value
  int boot_partition = 0;
  std::string boot_kernel;
  std::string boot_initrd;
  std::string boot_cmdline;
};

// Exit codes as in commands.h: 0 ok, 1 the image is bad (verification failed), 2 usage/IO.
int image_build(const ImageBuildArgs& args, bool json, std::ostream& out, std::ostream& err);
// Prints the manifest summary (or the manifest JSON) and verifies every chunk.
int image_inspect(const std::string& path, const std::vector<std::string>& trusted_keys, bool json,
                  bool quiet, std::ostream& out, std::ostream& err);
int key_generate(const std::string& prefix, std::ostream& out, std::ostream& err);

}  // namespace kiln::cli
