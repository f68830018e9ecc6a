#!/usr/bin/env bash
# tests/integration/openapi_routes_test.sh — proto/openapi.yaml documents exactly the routes
# kilnd serves.
#
# Compares the "METHOD /path/{param}" pairs printed by `kilnd routes` with the operations of
# the spec and fails naming every served route the spec lacks and every spec operation that is
# not served. The YAML is read with awk only (no python/yq on CI), which relies on the spec's
# layout: under the top-level `paths:` key, paths are keys at two spaces of indentation
# (`  /api/v1/machines/{id}:`) and operations are method keys at four (`    get:`).
#
# OPENAPI_SPEC overrides the spec file (to check the test itself against a mutated copy).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SPEC=${OPENAPI_SPEC:-$KILN_ROOT/proto/openapi.yaml}

[[ -x "$KILND" ]] || { fail "kilnd not found at $KILND (set KILN_BUILD)"; finish; }
[[ -f "$SPEC" ]] || { fail "spec not found: $SPEC"; finish; }

# --- served routes ------------------------------------------------------------------------------
if ! "$KILND" routes >"$WORK/routes.raw" 2>"$WORK/routes.err"; then
  cat "$WORK/routes.err" >&2
  fail "'kilnd routes' failed"
  finish
fi
tr -d '\r' <"$WORK/routes.raw" | grep -v '^[[:space:]]*$' >"$WORK/routes.lines" || true
if bad=$(grep -Ev '^[A-Z]+ /[^ ]*$' "$WORK/routes.lines"); then
  fail "unexpected lines in 'kilnd routes' output: $bad"
fi
sort "$WORK/routes.lines" >"$WORK/served.sorted"
sort -u "$WORK/routes.lines" >"$WORK/served"
if dups=$(comm -23 "$WORK/served.sorted" "$WORK/served") && [[ -n "$dups" ]]; then
  fail "'kilnd routes' lists a route twice: $dups"
fi

# --- spec operations ----------------------------------------------------------------------------
if ! grep -Eq '^openapi:[[:space:]]*"?3\.0\.[0-9]+"?[[:space:]]*$' "$SPEC"; then
  fail "$SPEC does not declare 'openapi: 3.0.x'"
fi
tr -d '\r' <"$SPEC" | awk '
  /^paths:[[:space:]]*$/ { in_paths = 1; next }
  in_paths && /^[^[:space:]#]/ { in_paths = 0 }          # next top-level key ends paths
  !in_paths { next }
  /^  \/[^[:space:]]*:[[:space:]]*(#.*)?$/ {
    path = $0
    sub(/^  /, "", path)
    sub(/:[[:space:]]*(#.*)?$/, "", path)
    next
  }
  /^  [^[:space:]#]/ { path = ""; print "NOT-A-PATH " $0; next }   # a key under paths: that is not /...
  /^    (get|put|post|delete|options|head|patch|trace):([[:space:]]|$)/ {
    method = $0
    sub(/^    /, "", method)
    sub(/:.*$/, "", method)
    if (path == "") { print "ORPHAN " method; next }
    print toupper(method) " " path
  }
' >"$WORK/spec.lines"

if grep -q '^NOT-A-PATH ' "$WORK/spec.lines"; then
  fail "keys under 'paths:' that are not paths: $(grep '^NOT-A-PATH ' "$WORK/spec.lines" | cut -c12- | tr '\n' ' ')"
fi
if grep -q '^ORPHAN ' "$WORK/spec.lines"; then
  fail "operations outside any path in $SPEC: $(grep '^ORPHAN ' "$WORK/spec.lines" | tr '\n' ' ')"
fi
grep -Ev '^(NOT-A-PATH|ORPHAN) ' "$WORK/spec.lines" | sort >"$WORK/spec.sorted" || true
sort -u "$WORK/spec.sorted" >"$WORK/spec"
if dups=$(comm -23 "$WORK/spec.sorted" "$WORK/spec") && [[ -n "$dups" ]]; then
  fail "$SPEC defines an operation twice: $dups"
fi

n_served=$(wc -l <"$WORK/served")
n_spec=$(wc -l <"$WORK/spec")
[[ $n_served -gt 0 ]] || fail "'kilnd routes' printed no routes"
[[ $n_spec -gt 0 ]] || fail "found no operations under 'paths:' in $SPEC"
log "kilnd serves $n_served routes; $SPEC documents $n_spec operations"

# --- compare ------------------------------------------------------------------------------------
while IFS= read -r r; do
  fail "served route missing from the spec: $r"
done < <(comm -23 "$WORK/served" "$WORK/spec")
while IFS= read -r r; do
  fail "spec operation not served by kilnd: $r"
done < <(comm -13 "$WORK/served" "$WORK/spec")
while IFS= read -r r; do
  ok
done < <(comm -12 "$WORK/served" "$WORK/spec")

finish
