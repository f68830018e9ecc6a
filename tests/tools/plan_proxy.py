#!/usr/bin/env python3
"""plan_proxy.py — a loopback HTTP proxy in front of kilnd for the agent's tests: forwards every
request unchanged, except that the agent's plan (GET /api/v1/agent/deployment) gets the
"config_drive" property read from a JSON file (re-read on every plan; "null" or absent file:
the plan is passed as is), and every agent result body (POST /api/v1/agent/result) is appended
to a log file, one JSON document per line.

Used until kilnd fills config_drive itself (issue 16's server side).
Usage: plan_proxy.py LISTEN_PORT KILND_HOST:PORT CONFIG_DRIVE_JSON RESULTS_LOG [READY_FILE]
"""
import http.client
import http.server
import json
import os
import sys

port, upstream, cd_path, results_path = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
ready = sys.argv[5] if len(sys.argv) > 5 else None
HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
       "proxy-authorization", "proxy-authenticate", "content-length"}


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def forward(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        if self.command == "POST" and self.path == "/api/v1/agent/result":
            with open(results_path, "ab") as f:
                f.write(body + b"\n")
        conn = http.client.HTTPConnection(upstream, timeout=60)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
        conn.request(self.command, self.path, body=body, headers=headers)
        r = conn.getresponse()
        data = r.read()
        if (self.command == "GET" and self.path == "/api/v1/agent/deployment" and r.status == 200
                and os.path.exists(cd_path)):
            plan = json.loads(data)
            with open(cd_path) as f:
                plan["config_drive"] = json.load(f)
            data = json.dumps(plan).encode()
        self.send_response(r.status)
        for k, v in r.getheaders():
            if k.lower() not in HOP:
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        conn.close()

    do_GET = do_POST = do_PUT = do_DELETE = forward


server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
server.daemon_threads = True
if ready:
    with open(ready, "w") as f:
        f.write(str(server.server_address[1]))
server.serve_forever()
