// Must not compile: provision/ and dhcp/ see kiln's state only through the interfaces they
// declare (provision/ports.h, dhcp/backend.h); they do not link kiln_store, so store/ is not on
// their include path. tests/CMakeLists.txt builds this file once in a target linking only
// kiln_provision and once linking only kiln_dhcp, and expects both builds to fail.
#include "store/store.h"

int kiln_store_hidden_probe() { return 0; }
