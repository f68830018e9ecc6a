#!/usr/bin/env bash
# A tour of the control plane without QEMU (deploy/demo.sh is the real thing): installs what is
# missing, builds, starts kilnd with its embedded defaults (state in ./var/demo) and walks
# through the control plane with the kiln CLI:
# register machines, register image versions, assign (one machine and a whole rack), watch an
# agent report, roll back with one call, read the history; then build, sign and push a real
# image and let kiln-agent write it to a loop device (as root). kilnd is stopped at the end.
#
# The first part's "agents" are curl calls that report progress and success as kiln-agent
# does (the machines do not exist); the last part runs the real agent on a loop device.
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/install-deps.sh
deploy/build.sh

DATA=var/demo
rm -rf "$DATA"
mkdir -p "$DATA"
export KILN_TOKEN
KILN_TOKEN=$(build/kilnd --data-dir "$DATA" token create --name demo --scope admin 2>/dev/null)
build/kilnd --data-dir "$DATA" --listen 127.0.0.1:0 --ready-file "$DATA/url" 2>"$DATA/kilnd.log" &
KILND_PID=$!
trap 'kill $KILND_PID 2>/dev/null || true; wait $KILND_PID 2>/dev/null || true' EXIT
for _ in $(seq 100); do [[ -s "$DATA/url" ]] && break; sleep 0.05; done
export KILN_URL
KILN_URL=$(head -n1 "$DATA/url")
kiln() { build/kiln "$@"; }
step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }
sha() { printf '%s' "$1" | sha256sum | cut -d' ' -f1; }

echo "kilnd is listening on $KILN_URL (state: $DATA/kiln.db, log: $DATA/kilnd.log)"
step kiln machine create --mac 52:54:00:12:00:01 --name r12-node1 --label rack=r12 --label role=web
step kiln machine create --mac 52:54:00:12:00:02 --name r12-node2 --label rack=r12 --label role=web
step kiln machine create --mac 52:54:00:13:00:01 --name r13-node1 --label rack=r13 --label role=db
step kiln image register web 2026.11.1 --url http://images.example/web-2026.11.1.raw.zst \
  --sha256 "$(sha v1)" --size 4294967296 --format raw.zst
step kiln image register web 2026.11.2 --url http://images.example/web-2026.11.2.raw.zst \
  --sha256 "$(sha v2)" --size 4294967296 --format raw.zst
step kiln assign --selector rack=r12 web 2026.11.1
step kiln machine list

# play_agent MACHINE — what kiln-agent does on the machine: open its session with the boot
# ticket (here reissued by the operator; on a real machine it comes in the iPXE script), report
# progress, then success with its proof (the image's SHA-256 and size, which kilnd checks).
play_agent() {
  local dep ticket tok image_url
  dep=$(kiln --json machine show "$1" | jq -er .assignment.deployment_id)
  ticket=$(curl -sf -X POST -H "Authorization: Bearer $KILN_TOKEN" "$KILN_URL/api/v1/deployments/$dep/agent-ticket" | jq -r .ticket)
  tok=$(curl -sf -X POST -H "Authorization: Bearer $ticket" "$KILN_URL/api/v1/agent/session" | jq -r .token)
  image_url=$(curl -sf -H "Authorization: Bearer $tok" "$KILN_URL/api/v1/agent/deployment" |
    jq -r '.image | "\(.sha256) \(.size_bytes)"')
  curl -sf -o /dev/null -X POST -H "Authorization: Bearer $tok" -H 'Content-Type: application/json' \
    --data '{"stage":"writing","bytes_done":2147483648,"bytes_total":4294967296,"detail":{"rate_bps":1.9e9}}' \
    "$KILN_URL/api/v1/agent/progress"
  read -r sha size <<<"$image_url"
  curl -sf -o /dev/null -X POST -H "Authorization: Bearer $tok" -H 'Content-Type: application/json' \
    --data "{\"status\":\"succeeded\",\"stage\":\"done\",\"bytes_done\":$size,\"proof\":{\"image_sha256\":\"$sha\",\"image_bytes\":$size,\"written_bytes\":$size,\"skipped_bytes\":0,\"zeroed_bytes\":0,\"unmapped_bytes\":0}}" \
    "$KILN_URL/api/v1/agent/result"
  echo "(agent on machine $1: deployment $dep written and verified)"
}
printf '\n# the agents of rack r12 image their disks and report\n'
play_agent 1
play_agent 2
step kiln machine assign 1 web 2026.11.2
play_agent 1
step kiln machine show 1
printf '\n# 2026.11.2 misbehaves in production: roll back with one call\n'
step kiln machine rollback 1
play_agent 1
step kiln machine history 1
step kiln events --since 0

printf '\n# images: build a signed, chunked image of a small ext4 disk and verify it\n'
mkdir -p "$DATA/tree/etc"
cp -r /usr/share/common-licenses "$DATA/tree/"
echo "kiln demo" >"$DATA/tree/etc/motd"
truncate -s 64M "$DATA/disk.raw"
mkfs.ext4 -q -F -d "$DATA/tree" "$DATA/disk.raw"
step kiln key generate --out "$DATA/site"
step kiln image build "$DATA/disk.raw" -o "$DATA/web-3.kiln" --name web --version 2026.11.3 \
  --sign "$DATA/site.pem" --free-holes
step kiln image inspect "$DATA/web-3.kiln" --key "$DATA/site.pub.pem"

printf '\n# push it to kilnd (verified there before it is visible) and let the real agent write it\n'
step kiln image push "$DATA/web-3.kiln"
step kiln machine assign 3 web 2026.11.3
if [[ $(id -u) -eq 0 ]] && command -v losetup >/dev/null; then
  truncate -s 80M "$DATA/machine3-disk.img"
  LOOP=$(losetup -f --show "$DATA/machine3-disk.img")
  trap 'losetup -d $LOOP 2>/dev/null || true; kill $KILND_PID 2>/dev/null || true; wait $KILND_PID 2>/dev/null || true' EXIT
  dep=$(kiln --json machine show 3 | jq -er .assignment.deployment_id)
  ticket=$(curl -sf -X POST -H "Authorization: Bearer $KILN_TOKEN" "$KILN_URL/api/v1/deployments/$dep/agent-ticket" | jq -r .ticket)
  step build/kiln-agent --server "$KILN_URL" --ticket "$ticket" --disk "$LOOP" \
    --trust-key "$DATA/site.pub.pem" --after none
  if cmp -s <(head -c 64M "$LOOP") "$DATA/disk.raw"; then
    echo "(the loop device $LOOP now holds web:2026.11.3 byte for byte)"
  else
    echo "demo: the device does not hold the image" >&2
    exit 1
  fi
  step kiln machine show 3
else
  echo "(skipped: writing to a loop device needs root)"
fi
echo
echo "Done. State is in $DATA/; the demo's admin token was $KILN_TOKEN."
