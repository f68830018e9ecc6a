// The control for upward_include.cc: the same kind of target (linking only kiln_store) may
// include store/ and the modules below it.
#include "core/hex.h"
#include "proto/resources.h"
#include "store/store.h"

int kiln_layering_control() { return 0; }
