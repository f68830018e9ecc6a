#!/usr/bin/env python3
"""dhcp_ack_sniff.py — records every DHCPACK seen on an interface, independently of any server.

Usage: dhcp_ack_sniff.py IFACE OUT_FILE MAX_SECONDS

Captures IPv4/UDP frames from port 67 on IFACE (an AF_PACKET socket: run it inside the test's
network namespace), decodes BOOTP replies and writes one line per DHCPACK to OUT_FILE:
"yiaddr chaddr server_id". Stops on SIGTERM/SIGINT or after MAX_SECONDS, whichever comes first;
writes a ready marker (OUT_FILE + ".ready") once it is capturing. Standard library only.
"""
import signal
import socket
import struct
import sys
import time

ETH_P_IP = 0x0800


def main() -> int:
    iface, out_path, max_s = sys.argv[1], sys.argv[2], float(sys.argv[3])
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_IP))
    s.bind((iface, 0))
    s.settimeout(0.2)
    stop = [False]

    def on_signal(*_):
        stop[0] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    open(out_path + ".ready", "w").close()
    end = time.monotonic() + max_s
    acks = 0
    with open(out_path, "w") as out:
        while not stop[0] and time.monotonic() < end:
            try:
                frame = s.recv(65535)
            except socket.timeout:
                continue
            if len(frame) < 14 + 20 + 8 + 240:
                continue
            ip = frame[14:]
            ihl = (ip[0] & 0x0F) * 4
            if ip[9] != 17:  # UDP
                continue
            udp = ip[ihl:]
            sport, dport = struct.unpack("!HH", udp[:4])
            if sport != 67:
                continue
            bootp = udp[8:]
            if len(bootp) < 240 or bootp[0] != 2 or bootp[236:240] != b"\x63\x82\x53\x63":
                continue
            yiaddr = socket.inet_ntoa(bootp[16:20])
            hlen = min(bootp[2], 16)
            chaddr = ":".join(f"{b:02x}" for b in bootp[28:28 + hlen])
            msg_type, server_id = None, "-"
            i = 240
            while i < len(bootp):
                code = bootp[i]
                if code == 255:
                    break
                if code == 0:
                    i += 1
                    continue
                if i + 1 >= len(bootp):
                    break
                n = bootp[i + 1]
                val = bootp[i + 2:i + 2 + n]
                if code == 53 and n == 1:
                    msg_type = val[0]
                elif code == 54 and n == 4:
                    server_id = socket.inet_ntoa(val)
                i += 2 + n
            if msg_type == 5:
                out.write(f"{yiaddr} {chaddr} {server_id}\n")
                acks += 1
    print(f"dhcp_ack_sniff: {acks} ACKs on {iface}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
