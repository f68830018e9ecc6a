// config_drive_tool — writes a config drive the way kiln-agent does after an image, for tests.
//   config_drive_tool DISK IMAGE_SIZE DEPLOYMENT_ID LABEL NAME=FILE... [--check]
// DISK is a block device or a regular file already holding the image in its first IMAGE_SIZE
// bytes; each NAME=FILE puts FILE's bytes into the drive as NAME. --check only builds the
// drive and checks the room (the agent's preflight) without writing. Prints the result as JSON
// ({"offset","size","table","partition"}); errors on stderr, exit 1.
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "agent/config_drive.h"

using namespace kiln;
using namespace kiln::agent;

int main(int argc, char** argv) {
  if (argc < 5) {
    std::cerr << "usage: config_drive_tool DISK IMAGE_SIZE DEPLOYMENT_ID LABEL NAME=FILE... "
                 "[--check]\n";
    return 2;
  }
  ConfigDrive cd;
  cd.label = argv[4];
  bool check = false;
  for (int i = 5; i < argc; ++i) {
    if (std::strcmp(argv[i], "--check") == 0) {
      check = true;
      continue;
    }
    const std::string arg = argv[i];
    const auto eq = arg.find('=');
    if (eq == std::string::npos) {
      std::cerr << "bad file argument " << arg << "\n";
      return 2;
    }
    std::ifstream f(arg.substr(eq + 1), std::ios::binary);
    if (!f) {
      std::cerr << "cannot read " << arg.substr(eq + 1) << "\n";
      return 2;
    }
    std::ostringstream ss;
    ss << f.rdbuf();
    cd.files[arg.substr(0, eq)] = ss.str();
  }
  auto disk = Disk::open(argv[1]);
  if (!disk) {
    std::cerr << disk.error().message << "\n";
    return 1;
  }
  const std::uint64_t image_size = std::stoull(argv[2]);
  const std::int64_t id = std::stoll(argv[3]);
  auto offset = config_drive_offset(image_size, disk->size());
  if (!offset) {
    std::cerr << offset.error().message << "\n";
    return 1;
  }
  auto fat = prepare_config_drive(cd, *disk, *offset, id);
  if (!fat) {
    std::cerr << fat.error().message << "\n";
    return 1;
  }
  if (check) {
    std::cout << nlohmann::json{{"offset", *offset}, {"size", fat->size()}}.dump() << "\n";
    return 0;
  }
  auto r = write_config_drive(*disk, *fat, *offset, id);
  if (!r) {
    std::cerr << r.error().message << "\n";
    return 1;
  }
  std::cout << nlohmann::json{{"offset", r->offset},
                              {"size", r->size},
                              {"table", r->edit.table},
                              {"partition", r->edit.partition}}
                   .dump()
            << "\n";
  return 0;
}
