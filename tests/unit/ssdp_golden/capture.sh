#!/usr/bin/env bash
# Re-capture the golden M-SEARCH datagrams from real clients (needs root; not run by the tests).
#
# Everything happens inside a network namespace that has only `lo`: no datagram can leave the
# machine. A listener bound in that namespace joins 239.255.255.250 (and ff02::c / ff05::c) on lo
# and writes each datagram it receives to OUT/<client>-<n>.bin, byte for byte.
# Clients: upnpc (miniupnpc), upnp-client (async-upnp-client), gssdp-discover (GSSDP, used by
# GUPnP / GUPnP-IGD), python3-libtorrent (libtorrent-rasterbar, qBittorrent's engine).
set -euo pipefail
OUT=${1:?usage: capture.sh OUTDIR}
VENV_BIN=${VENV_BIN:-$(cd "$(dirname "$0")/../../.." && pwd)/.venv/bin}
NS="igdt-ssdpcap-$$"
mkdir -p "$OUT"
ip route add blackhole 198.18.0.0/15 2>/dev/null || true

teardown() {
    for pid in $(ip netns pids "$NS" 2>/dev/null); do kill "$pid" 2>/dev/null || true; done
    sleep 0.2
    for pid in $(ip netns pids "$NS" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
    ip netns del "$NS" 2>/dev/null || true
    rm -rf "/etc/netns/$NS"
}
trap teardown EXIT

ip netns add "$NS"
mkdir -p "/etc/netns/$NS" && echo "nameserver 127.0.0.1" > "/etc/netns/$NS/resolv.conf"
ip -n "$NS" link set lo multicast on
ip -n "$NS" link set lo up
ip -n "$NS" route add 224.0.0.0/4 dev lo
ip -n "$NS" -6 route add ff00::/8 dev lo table local 2>/dev/null || true

listen() {  # listen TAG SECONDS: record datagrams until SECONDS have passed
    ip netns exec "$NS" /usr/bin/python3 - "$OUT" "$1" "$2" <<'PY' &
import os, select, socket, struct, sys, time
out, tag, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
socks = []
s4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s4.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s4.bind(("0.0.0.0", 1900))
s4.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
              socket.inet_aton("239.255.255.250") + socket.inet_aton("127.0.0.1"))
socks.append(s4)
try:
    s6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s6.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s6.bind(("::", 1900))
    for group in ("ff02::c", "ff05::c"):
        s6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP,
                      socket.inet_pton(socket.AF_INET6, group) + struct.pack("@I", 1))
    socks.append(s6)
except OSError as exc:
    print("no IPv6 listener:", exc, file=sys.stderr)
n = 0
deadline = time.monotonic() + seconds
while (left := deadline - time.monotonic()) > 0:
    ready, _, _ = select.select(socks, [], [], left)
    for s in ready:
        data, src = s.recvfrom(65535)
        n += 1
        path = os.path.join(out, f"{tag}-{n:02d}.bin")
        with open(path, "wb") as f:
            f.write(data)
        print(tag, n, src, len(data), file=sys.stderr)
PY
    sleep 0.5
}

run() {  # run SECONDS CMD...: run a client in the namespace, bounded in time
    local seconds=$1; shift
    ip netns exec "$NS" timeout "$seconds" "$@" >/dev/null 2>&1 || true
}

listen upnpc 14;        run 12 upnpc -m lo -t 1 -l;                        wait
listen upnpc6 14;       run 12 upnpc -6 -m lo -l;                          wait
listen aupnp-all 6;     run 4 "$VENV_BIN/upnp-client" search --bind 127.0.0.1;  wait
listen aupnp-igd2 6;    run 4 "$VENV_BIN/upnp-client" search --bind 127.0.0.1 \
                          --search_target urn:schemas-upnp-org:device:InternetGatewayDevice:2; wait
listen aupnp-unicast 6; run 4 "$VENV_BIN/upnp-client" search --bind 127.0.0.1 \
                          --target 127.0.0.1 --target_port 1900;           wait
listen gssdp 6;         run 4 gssdp-discover -i lo -n 3 \
                          -t urn:schemas-upnp-org:service:WANIPConnection:1; wait
listen libtorrent 10;   run 8 /usr/bin/python3 -c '
import time, libtorrent as lt
s = lt.session({"listen_interfaces": "127.0.0.1:6881", "enable_upnp": True,
                "enable_natpmp": False, "enable_dht": False, "enable_lsd": False})
time.sleep(6)';                                                             wait
ls -l "$OUT"
