#!/usr/bin/env bash
# The HTTP layer of kilnd with curl and raw sockets: static files (sendfile, Range, HEAD,
# path safety), request limits (body, header, connections, read timeout), malformed requests,
# keep-alive, and TLS.
source "$(dirname "$0")/lib.sh"

mkdir -p "$WORK/var/files/sub" "$WORK/outside"
head -c $((3 << 20)) /dev/urandom >"$WORK/var/files/image.raw"
echo '#!ipxe' >"$WORK/var/files/sub/boot.ipxe"
echo secret >"$WORK/outside/secret"
ln -s "$WORK/outside/secret" "$WORK/var/files/escape"
cat >"$WORK/limits.json" <<JSON
{"http": {"body_limit": 65536, "header_limit": 8192, "read_timeout_ms": 1500, "max_connections": 6}}
JSON
start_kilnd --config "$WORK/limits.json"
TOKEN=$(make_token ops admin)

# --- files ------------------------------------------------------------------------------------
curl -s -o "$WORK/got" "$URL/files/image.raw"
expect_eq "$(sha256sum <"$WORK/got")" "$(sha256sum <"$WORK/var/files/image.raw")" "whole file intact"
curl -s -D "$WORK/h" -o "$WORK/part" -H 'Range: bytes=1000-1999' "$URL/files/image.raw"
grep -qi '^HTTP/1.1 206' "$WORK/h" && ok || fail "range gives 206"
grep -qi "^content-range: bytes 1000-1999/$((3 << 20))" "$WORK/h" && ok || fail "content-range header"
expect_eq "$(sha256sum <"$WORK/part")" "$(tail -c +1001 "$WORK/var/files/image.raw" | head -c 1000 | sha256sum)" "range bytes"
curl -s -o "$WORK/tail" -H 'Range: bytes=-10' "$URL/files/image.raw"
expect_eq "$(sha256sum <"$WORK/tail")" "$(tail -c 10 "$WORK/var/files/image.raw" | sha256sum)" "suffix range"
code=$(curl -s -o /dev/null -w '%{http_code}' -H "Range: bytes=$((4 << 20))-" "$URL/files/image.raw")
expect_eq "$code" 416 "unsatisfiable range"
# An If-Range that no longer matches gets the whole (new) file, not a stale slice.
code=$(curl -s -o "$WORK/ifr" -w '%{http_code}' -H 'Range: bytes=0-9' -H 'If-Range: "stale"' "$URL/files/image.raw")
expect_eq "$code/$(stat -c %s "$WORK/ifr")" "200/$((3 << 20))" "If-Range mismatch sends everything"
curl -s -I "$URL/files/image.raw" >"$WORK/head"
grep -qi "^content-length: $((3 << 20))" "$WORK/head" && ok || fail "HEAD content-length"
grep -qi '^accept-ranges: bytes' "$WORK/head" && ok || fail "accept-ranges"
curl -s -D "$WORK/h2" -o "$WORK/small" "$URL/files/sub/boot.ipxe"
grep -qi '^content-type: text/plain' "$WORK/h2" && ok || fail "ipxe scripts are text/plain"
cmp -s "$WORK/small" "$WORK/var/files/sub/boot.ipxe" && ok || fail "small file intact"
grep -qi '^content-length: 7' "$WORK/h2" && ok || fail "small file length"
for p in "/files/../var/kiln.db" "/files/sub/../../kiln.db" "/files/%2e%2e/kiln.db" "/files/a%00b"; do
  code=$(curl -s --path-as-is -o /dev/null -w '%{http_code}' "$URL$p")
  expect_eq "$code" 400 "traversal $p refused"
done
expect_eq "$(curl -s -o /dev/null -w '%{http_code}' "$URL/files/escape")" 404 "symlink out of the root"
expect_eq "$(curl -s -o /dev/null -w '%{http_code}' "$URL/files/nope")" 404 "missing file"
expect_eq "$(curl -s -o /dev/null -w '%{http_code}' "$URL/files/sub")" 404 "directory"
expect_eq "$(curl -s -o /dev/null -w '%{http_code}' -X PUT --data x "$URL/files/new")" 405 "files are read-only"
grep -q 'event=http.path_refused' "$WORK/kilnd.0.log" && ok || fail "refused paths are logged"

# Clients that hang up in the middle of a download cost their connection, nothing more.
# (64 MiB: more than the loopback socket buffers hold, so kilnd is still sending at hang-up.)
truncate -s 64M "$WORK/var/files/large.raw"
for i in 1 2 3 4 5; do
  curl -s "$URL/files/large.raw" | head -c 1000 >/dev/null || true
  curl -s --limit-rate 1M --max-time 0.5 -o /dev/null "$URL/files/large.raw" || true
done
kill -0 "$KILND_PID" && ok || fail "kilnd survived clients hanging up mid-download"
expect_eq "$(curl -s -o /dev/null -w '%{http_code}' "$URL/healthz")" 200 "still serving after hang-ups"

# A FIFO in the files directory is refused without blocking an io thread.
mkfifo "$WORK/var/files/pipe"
expect_eq "$(curl -s -o /dev/null --max-time 5 -w '%{http_code}' "$URL/files/pipe")" 404 "FIFO is not served"

# Expect: 100-continue is answered at once (curl would otherwise wait a second).
t0=$(date +%s%N)
code=$(curl -s -o /dev/null -w '%{http_code}' -H 'Expect: 100-continue' -H "Authorization: Bearer $TOKEN" \
  -H 'Content-Type: application/json' --data '{"mac":"52:54:00:00:00:42"}' "$URL/api/v1/machines")
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
expect_eq "$code" 201 "request with Expect: 100-continue"
[[ $ms -lt 900 ]] && ok || fail "100-continue answered without the client's 1 s fallback (${ms} ms)"

# --- keep-alive -------------------------------------------------------------------------------
curl -sv -o /dev/null -o /dev/null "$URL/healthz" "$URL/files/sub/boot.ipxe" 2>"$WORK/ka"
grep -q 'Re-using existing connection' "$WORK/ka" && ok || fail "keep-alive reuses the connection"

# --- limits -----------------------------------------------------------------------------------
head -c 70000 /dev/zero | tr '\0' 'x' >"$WORK/bigbody"
code=$(curl -s -o "$WORK/b" -w '%{http_code}' -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
  --data-binary @"$WORK/bigbody" "$URL/api/v1/machines")
expect_eq "$code" 413 "body over the limit"
expect_eq "$(jq -r .error.code "$WORK/b")" too_large "413 error body"
code=$(curl -s -o /dev/null -w '%{http_code}' -H "X-Filler: $(head -c 9000 /dev/zero | tr '\0' y)" "$URL/healthz")
expect_eq "$code" 431 "headers over the limit"

# Raw socket helpers: bash's /dev/tcp, no third-party client needed for malformed bytes.
HOSTPORT=${URL#http://}
HOST=${HOSTPORT%:*}
PORT=${HOSTPORT##*:}
exec {g}<>"/dev/tcp/$HOST/$PORT"
printf 'THIS IS NOT HTTP\r\n\r\n' >&$g
reply=$(timeout 5 head -c 200 <&$g || true)
exec {g}>&-
[[ "$reply" == "HTTP/1.1 400"* ]] && ok || fail "garbage gets 400: '$reply'"
exec {g}<>"/dev/tcp/$HOST/$PORT"
printf 'GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n' >&$g
reply=$(timeout 5 head -c 200 <&$g || true)
exec {g}>&-
[[ "$reply" == "HTTP/1.1 400"* ]] && ok || fail "negative content-length gets 400: '$reply'"
# A client that sends half a request and stalls is cut off after the read timeout.
exec {s}<>"/dev/tcp/$HOST/$PORT"
printf 'GET /healthz HTTP/1.1\r\nHost: x\r\n' >&$s
t0=$(date +%s%N)
timeout 10 cat <&$s >/dev/null || true
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
exec {s}>&-
[[ $ms -ge 1000 && $ms -lt 8000 ]] && ok || fail "stalled request closed after the read timeout (${ms} ms)"

# Past max_connections (6), new connections get a 503 and are closed; the server recovers.
fds=()
for i in 1 2 3 4 5 6; do
  exec {fd}<>"/dev/tcp/$HOST/$PORT"
  fds+=("$fd")
done
sleep 0.2
code=$(curl -s -o "$WORK/busy" -w '%{http_code}' "$URL/healthz")
expect_eq "$code" 503 "over max_connections"
expect_eq "$(jq -r .error.code "$WORK/busy")" unavailable "503 body"
for fd in "${fds[@]}"; do exec {fd}>&-; done
sleep 0.3
expect_eq "$(curl -s -o /dev/null -w '%{http_code}' "$URL/healthz")" 200 "connections free again"
# (read whole, then matched: `curl | grep -q` under pipefail fails when grep exits before curl
# has written all of /metrics)
grep -q '^kiln_http_connections_rejected_total [1-9]' <<<"$(curl -s "$URL/metrics")" && ok ||
  fail "rejections counted"
kill -0 "$KILND_PID" && ok || fail "kilnd survived all of the above"
stop_kilnd

# --- per-address connection cap -----------------------------------------------------------------
# One host holding connections cannot take every slot: past max_connections_per_address (3) its
# new connections get a 503 and are closed, while another address (127.0.0.2, loopback too) is
# still served. Connections are accepted in arrival order, so the held three come first.
cat >"$WORK/peraddr.json" <<JSON
{"http": {"max_connections": 50, "max_connections_per_address": 3, "read_timeout_ms": 20000}}
JSON
start_kilnd --config "$WORK/peraddr.json"
HOSTPORT=${URL#http://}
fds=()
for i in 1 2 3; do
  exec {fd}<>"/dev/tcp/${HOSTPORT%:*}/${HOSTPORT##*:}"
  fds+=("$fd")
done
code=$(curl -s -D "$WORK/pa.h" -o "$WORK/pa.body" -w '%{http_code}' "$URL/healthz")
expect_eq "$code" 503 "4th connection from 127.0.0.1"
expect_eq "$(jq -r .error.message "$WORK/pa.body")" \
  "too many connections from this address, retry later" "per-address 503 body"
grep -qi '^retry-after: 1' "$WORK/pa.h" && ok || fail "per-address 503 has Retry-After"
code=$(curl -s --interface 127.0.0.2 -o /dev/null -w '%{http_code}' "$URL/healthz")
expect_eq "$code" 200 "another address is still served"
grep -q '^kiln_http_connections_per_address_rejected_total [1-9]' \
  <<<"$(curl -s --interface 127.0.0.2 "$URL/metrics")" && ok ||
  fail "per-address rejections counted"
grep -q 'event=http.conn_rejected reason=max_connections_per_address peer=127.0.0.1 limit=3' \
  "$WORK/kilnd.$((${#KILND_PIDS[@]} - 1)).log" && ok || fail "per-address rejection logged"
# Closing one held connection frees its slot (kilnd notices the close asynchronously: bounded wait).
fd=${fds[0]}
exec {fd}>&-
code=000
for _ in $(seq 50); do
  code=$(curl -s -o /dev/null -w '%{http_code}' "$URL/healthz")
  [[ "$code" == 200 ]] && break
  sleep 0.1
done
expect_eq "$code" 200 "a freed slot serves 127.0.0.1 again"
for fd in "${fds[@]:1}"; do exec {fd}>&-; done
stop_kilnd

# --- TLS ----------------------------------------------------------------------------------------
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$WORK/key.pem" -out "$WORK/cert.pem" -days 2 \
  -subj "/CN=kilnd.test" -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" 2>/dev/null
start_kilnd --tls-cert "$WORK/cert.pem" --tls-key "$WORK/key.pem"
[[ "$URL" == https://* ]] && ok || fail "ready file announces https ($URL)"
expect_eq "$(curl -s --cacert "$WORK/cert.pem" "$URL/healthz" | jq -r .status)" ok "API over TLS"
rc=0; curl -s -o /dev/null "$URL/healthz" || rc=$?
[[ $rc -ne 0 ]] && ok || fail "untrusted certificate is rejected by curl"
curl -s --cacert "$WORK/cert.pem" -o "$WORK/tlsgot" "$URL/files/image.raw"
expect_eq "$(sha256sum <"$WORK/tlsgot")" "$(sha256sum <"$WORK/var/files/image.raw")" "file over TLS"
curl -s --cacert "$WORK/cert.pem" -o "$WORK/tlspart" -H 'Range: bytes=5-14' "$URL/files/image.raw"
expect_eq "$(sha256sum <"$WORK/tlspart")" "$(tail -c +6 "$WORK/var/files/image.raw" | head -c 10 | sha256sum)" "range over TLS"
code=$(curl -s -o /dev/null -w '%{http_code}' "http://${URL#https://}/healthz" || true)
[[ "$code" != 200 ]] && ok || fail "plain HTTP on the TLS port is not served"
kill -0 "$KILND_PID" && ok || fail "kilnd survived a plain-text client on the TLS port"
stop_kilnd

# Bad TLS material: kilnd refuses to start and says why.
echo nonsense >"$WORK/bad.pem"
rc=0; "$KILND" --data-dir "$WORK/var" --listen 127.0.0.1:0 --tls-cert "$WORK/bad.pem" --tls-key "$WORK/bad.pem" >"$WORK/badtls" 2>&1 || rc=$?
expect_eq "$rc" 2 "bad certificate exits 2"
grep -q 'TLS certificate/key' "$WORK/badtls" && ok || fail "bad certificate is explained"
finish
