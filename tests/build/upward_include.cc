// Must not compile: this file belongs to a target that links only kiln_store, and api/ sits
// above store/ (docs/architecture.md). tests/CMakeLists.txt expects the build to fail.
#include "api/api.h"
#include "store/store.h"

int kiln_layering_probe() { return 0; }
