#!/usr/bin/env bash
# tests/integration/openapi_schemas_test.sh — proto/openapi.yaml's resource schemas describe
# exactly what proto's codecs (shared by kilnd, the CLI and the agent) write: property names,
# types, nullability, required properties (tests/tools/check_schemas.py). Then the checker is
# checked: a spec with a property renamed, and one with a type changed, must both fail.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SPEC=$KILN_ROOT/proto/openapi.yaml
SAMPLES_BIN=$KILN_BUILD/resource_samples
CHECK=$KILN_ROOT/tests/tools/check_schemas.py
[[ -x "$SAMPLES_BIN" ]] || { fail "resource_samples not found at $SAMPLES_BIN"; finish; }

"$SAMPLES_BIN" >"$WORK/samples.json" || fail "resource_samples failed"
if /usr/bin/python3 "$CHECK" "$SPEC" "$WORK/samples.json" >"$WORK/check.out" 2>&1; then
  ok; log "every resource the codecs write matches its schema ($(tail -1 "$WORK/check.out"))"
else
  cat "$WORK/check.out" >&2
  fail "the codecs and proto/openapi.yaml disagree"
fi

# The check can fail: rename Deployment's 'stage' and make Token.id a string in a copy.
sed -e '/^    Deployment:$/,/^    [A-Z]/ s/^        stage:$/        stage_name:/' \
  -e '/^    Token:$/,/^    [A-Z]/ {/^        id:$/,/^        [a-z]/ s/type: integer/type: string/}' \
  "$SPEC" >"$WORK/mutated.yaml"
if cmp -s "$SPEC" "$WORK/mutated.yaml"; then
  fail "the mutation did not change the spec (layout changed?)"
elif /usr/bin/python3 "$CHECK" "$WORK/mutated.yaml" "$WORK/samples.json" >"$WORK/mutated.out" 2>&1; then
  fail "a spec with a renamed property and a changed type passed"
else
  grep -q "Deployment\[0\]: property 'stage' is not in the schema" "$WORK/mutated.out" &&
    grep -q "the spec declares 'stage_name'" "$WORK/mutated.out" &&
    grep -q "Token\[0\].id: int" "$WORK/mutated.out" &&
    { ok; log "a renamed property and a changed type are both reported"; } ||
    { cat "$WORK/mutated.out" >&2; fail "the mutated spec failed for the wrong reasons"; }
fi
finish
