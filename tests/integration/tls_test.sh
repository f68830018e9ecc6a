#!/usr/bin/env bash
# HTTPS for the boot path: kilnd's second, TLS listener (http.tls_listen) beside the plain one,
# with a site CA and server certificates made here with the openssl CLI. Checked with curl
# --cacert (same routes, TLS 1.2+ only), the boot script's URLs (script, kernel, initrd and the
# agent's kiln.server are https; the plan's chunks stay on plain HTTP), kiln-agent deploying an
# image to a loop device over HTTPS with its pinned CA, and the agent refusing a server whose
# certificate does not chain to its CA, names another host, or another IP, and refusing https
# with no CA at all. Loopback only.
source "$(dirname "$0")/lib.sh"
AGENT=$KILN_BUILD/kiln-agent
if [[ $(id -u) -ne 0 ]]; then
  echo "tls_test: needs root (loop devices)" >&2
  exit 77
fi

cd "$WORK"
# --- a site CA, kilnd's certificate, and the certificates an impostor might present --------
new_ca site-ca
new_ca other-ca
new_cert server site-ca "IP:127.0.0.1,DNS:kiln.test"      # kilnd's
new_cert impostor other-ca "IP:127.0.0.1,DNS:kiln.test"   # right name, another CA
new_cert elsewhere site-ca "IP:127.0.0.2,DNS:other.test"  # the site CA, another machine's
openssl verify -CAfile site-ca.pem server.pem >/dev/null && ok || fail "the test CA signs kilnd's certificate"

# A signed 16 MiB GPT image.
"$KILN" key generate --out signer >/dev/null
truncate -s 16M v1.raw
printf 'label: gpt\n,8M,L\n,,L\n' | sfdisk -q v1.raw
head -c $((6 << 20)) /dev/urandom | base64 -w 0 | dd of=v1.raw bs=1M seek=1 conv=notrunc status=none
"$KILN" image build v1.raw -o v1.kiln --name os --version 1 --chunk-size 1M --sign signer.pem >/dev/null 2>&1

# --- kilnd with both listeners -------------------------------------------------------------
mkdir -p var/files/kiln
head -c 100000 /dev/urandom >var/files/kiln/vmlinuz
head -c 70000 /dev/urandom >var/files/kiln/initrd.img
# Debug logs name each request's listener (event=http.request ... tls=true|false).
KILND_LOG_LEVEL=debug start_kilnd --tls-listen 127.0.0.1:0 --tls-cert server.pem --tls-key server.key
KLOG=$WORK/kilnd.0.log
[[ $URL == http://127.0.0.1:* ]] && ok || fail "the first listener stays plain HTTP: $URL"
[[ $HTTPS_URL == https://127.0.0.1:* ]] && ok || fail "the ready file names the TLS listener: '$HTTPS_URL'"
grep -q "event=daemon.listening_tls url=$HTTPS_URL" "$KLOG" && ok || fail "the TLS listener is logged"
TOKEN=$(make_token ops admin)
export KILN_URL=$URL KILN_TOKEN=$TOKEN

# curl with the site CA: the same routes over TLS; another CA or TLS 1.1 is refused.
code=$(curl -s -o tls.body -w '%{http_code}' --cacert site-ca.pem -H "Authorization: Bearer $TOKEN" \
  "$HTTPS_URL/api/v1/machines") || code="curl $?"
expect_eq "$code" 200 "GET /api/v1/machines over TLS with the site CA"
expect_eq "$(jq -r 'type' tls.body)" object "the API answers JSON over TLS"
code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "$URL/api/v1/machines")
expect_eq "$code" 200 "the plain listener still serves the API"
rc=0; curl -s -o /dev/null --cacert other-ca.pem "$HTTPS_URL/api/v1/machines" || rc=$?
expect_eq "$rc" 60 "curl pinned to another CA refuses kilnd's certificate (curl exit 60)"
rc=0; curl -s -o /dev/null --cacert site-ca.pem --tls-max 1.1 "$HTTPS_URL/metrics" || rc=$?
[[ $rc -ne 0 ]] && ok || fail "TLS 1.1 is refused"
curl -s --cacert site-ca.pem "$HTTPS_URL/files/kiln/vmlinuz" -o kernel.got
cmp -s kernel.got var/files/kiln/vmlinuz && ok || fail "the kernel is served over TLS"
curl -s --cacert site-ca.pem --resolve "kiln.test:${HTTPS_URL##*:}:127.0.0.1" \
  "https://kiln.test:${HTTPS_URL##*:}/files/kiln/initrd.img" -o initrd.got
cmp -s initrd.got var/files/kiln/initrd.img && ok || fail "the initrd over TLS, by the DNS name"

# --- the boot path goes over TLS, chunks stay on plain HTTP --------------------------------
"$KILN" image push v1.kiln >/dev/null 2>&1 || fail "push v1"
MAC=52:54:00:00:00:01
"$KILN" machine create --mac $MAC >/dev/null
api PUT /api/v1/machines/1/assignment '{"image":"os","version":"1","force":true}'
expect_status 201 "assign"
DEP=$(jqb .id)
curl -s --cacert site-ca.pem "$HTTPS_URL/boot/${MAC//:/-}.ipxe" -o script.ipxe
grep -q "^kernel $HTTPS_URL/files/kiln/vmlinuz " script.ipxe && ok || fail "the script's kernel is https: $(cat script.ipxe)"
grep -q "^initrd $HTTPS_URL/files/kiln/initrd.img" script.ipxe && ok || fail "the script's initrd is https"
grep -q "kiln.server=$HTTPS_URL " script.ipxe && ok || fail "the agent is told the https server"
grep -q "chain --replace --autofree $HTTPS_URL/boot/" script.ipxe && ok || fail "the script re-chains over https"
grep -q "http://" script.ipxe && fail "no plain http:// URL is left in the script: $(grep http:// script.ipxe)" || ok

api POST "/api/v1/deployments/$DEP/agent-ticket"
AT=$(jqb .ticket)
session=$(curl -s --cacert site-ca.pem -X POST -H "Authorization: Bearer $AT" "$HTTPS_URL/api/v1/agent/session" | jq -r .token)
plan=$(curl -s --cacert site-ca.pem -H "Authorization: Bearer $session" "$HTTPS_URL/api/v1/agent/deployment")
expect_eq "$(jq -r .chunks_url <<<"$plan")" "$URL/v1/chunks/" "the plan's chunks_url is the plain listener's (cacheable)"
expect_eq "$(jq -r .manifest_url <<<"$plan")" /api/v1/agent/manifest "the manifest stays on the server the agent talks to"

# --- the agent deploys over HTTPS with its pinned CA --------------------------------------
truncate -s 16M disk.img
LOOP=$(losetup -f --show disk.img)
CLEANUP_CMDS+=("losetup -d $LOOP")
# agent LOG SERVER [args] — runs the agent against the loop device; its exit code is in RC.
agent() {
  local log=$1 server=$2; shift 2
  RC=0
  "$AGENT" --server "$server" --ticket "$AT" --disk "$LOOP" --trust-key signer.pub.pem --after none \
    --timeout-ms 3000 --backoff-ms 50 --retries 1 "$@" >"$log" 2>&1 || RC=$?
}
mark=$(wc -l <"$KLOG")
agent deploy.log "$HTTPS_URL" --ca site-ca.pem
expect_eq "$RC" 0 "the agent deploys over HTTPS: $(tail -3 deploy.log)"
grep -q "TLS: pinned CA site-ca.pem" deploy.log && ok || fail "the agent says which CA it pinned"
cmp -s <(head -c 16M "$LOOP") v1.raw && ok || fail "the device holds version 1 byte for byte"
api GET "/api/v1/deployments/$DEP"
expect_eq "$(jqb .status)" succeeded "the deployment is reported succeeded over TLS"
tail -n +"$mark" "$KLOG" >deploy.kilnd.log
api_tls=$(grep -c 'event=http.request .*tls=true .*target="/api/v1/agent/' deploy.kilnd.log || true)
api_plain=$(grep -c 'event=http.request .*tls=false .*target="/api/v1/agent/' deploy.kilnd.log || true)
chunks_plain=$(grep -c 'event=http.request .*tls=false .*target="/v1/chunks/' deploy.kilnd.log || true)
chunks_tls=$(grep -c 'event=http.request .*tls=true .*target="/v1/chunks/' deploy.kilnd.log || true)
log "agent API requests: $api_tls over TLS, $api_plain plain; chunks: $chunks_plain plain, $chunks_tls over TLS"
[[ $api_tls -ge 3 && $api_plain -eq 0 ]] && ok || fail "plan, manifest and reports went over TLS only"
[[ $chunks_plain -ge 1 && $chunks_tls -eq 0 ]] && ok || fail "chunks were fetched from the plain listener"

# --- refusals: another CA, another host name, another IP, no CA ---------------------------
# kilnd presenting a certificate for another address (same site CA), and one from another CA.
MAIN_URL=$URL MAIN_HTTPS_URL=$HTTPS_URL
HTTPS_PORT=${HTTPS_URL##*:}
DATA_DIR=$WORK/var-elsewhere start_kilnd --tls-listen 127.0.0.1:0 --tls-cert elsewhere.pem \
  --tls-key elsewhere.key
ELSEWHERE=$HTTPS_URL
DATA_DIR=$WORK/var-impostor start_kilnd --tls-listen 127.0.0.1:0 --tls-cert impostor.pem \
  --tls-key impostor.key
IMPOSTOR=$HTTPS_URL IMPOSTOR_PLAIN=$URL IMPOSTOR_LOG=$WORK/kilnd.$((${#KILND_PIDS[@]} - 1)).log
URL=$MAIN_URL HTTPS_URL=$MAIN_HTTPS_URL
dd if=/dev/zero of="$LOOP" bs=1M count=16 oflag=direct status=none
api PUT /api/v1/machines/1/assignment '{"image":"os","version":"1","force":true}'
DEP=$(jqb .id)
api POST "/api/v1/deployments/$DEP/agent-ticket"
AT=$(jqb .ticket)
# The three refusals retry like any transport failure (about half a minute each): in parallel.
(agent other-ca.log "$IMPOSTOR" --ca site-ca.pem; exit $RC) & p1=$!
(agent wrong-ip.log "$ELSEWHERE" --ca site-ca.pem; exit $RC) & p2=$!
(agent wrong-name.log "https://localhost:$HTTPS_PORT" --ca site-ca.pem; exit $RC) & p3=$!
KILND_PIDS+=("$p1" "$p2" "$p3")  # stopped at exit if the test dies meanwhile
rc1=0 rc2=0 rc3=0
wait $p1 || rc1=$?
wait $p2 || rc2=$?
wait $p3 || rc3=$?
[[ $rc1 -ne 0 ]] && ok || fail "the agent accepts a certificate from another CA"
grep -q "TLS with $IMPOSTOR refused: the server's certificate is not trusted: unable to get local issuer certificate" other-ca.log \
  && ok || fail "another CA is named: $(tail -2 other-ca.log)"
[[ $rc2 -ne 0 ]] && ok || fail "the agent accepts a certificate for another IP"
grep -q "not trusted: IP address mismatch .*expected host 127.0.0.1" wrong-ip.log \
  && ok || fail "another IP is named: $(tail -2 wrong-ip.log)"
[[ $rc3 -ne 0 ]] && ok || fail "the agent accepts a certificate for another host name"
grep -q "not trusted: hostname mismatch .*expected host localhost" wrong-name.log \
  && ok || fail "another host name is named: $(tail -2 wrong-name.log)"
cmp -s <(head -c 16M "$LOOP") <(head -c 16M /dev/zero) && ok || fail "nothing was written by a refused agent"
api GET "/api/v1/deployments/$DEP"
expect_eq "$(jqb .status)" pending "no refused agent reached kilnd's API"
fails=$(curl -s "$IMPOSTOR_PLAIN/metrics" | awk '/^kiln_http_tls_handshake_failures_total/ {print $2}')
[[ ${fails:-0} -ge 1 ]] && ok || fail "kilnd counts the refused handshakes (got '$fails')"
grep -q "event=http.tls_handshake_failed peer=127.0.0.1" "$IMPOSTOR_LOG" && ok || fail "and logs them"

if [[ -e /etc/kiln/ca.pem ]]; then
  log "skipped: /etc/kiln/ca.pem exists on this host (the agent's default CA)"
else
  agent no-ca.log "https://127.0.0.1:$HTTPS_PORT"
  expect_eq "$RC" 2 "https without a CA is a usage error"
  grep -q "is https but no CA is pinned: give --ca FILE" no-ca.log && ok || fail "and says so: $(cat no-ca.log)"
fi
rc=0; "$AGENT" --server "https://127.0.0.1:$HTTPS_PORT" --ticket t --disk "$LOOP" --ca missing.pem >bad-ca.log 2>&1 || rc=$?
expect_eq "$rc" 2 "a missing --ca file is a usage error"
grep -q "CA file missing.pem does not exist" bad-ca.log && ok || fail "naming the file: $(cat bad-ca.log)"

finish
