"""A boringtun WireGuard client from wireguard-requests, as a conformance target.

Run with the Python of a virtual environment that has wireguard-requests==0.0.3:

    python wireguard_requests_peer.py PRIVATE_KEY_B64 TUNNEL_IP/PREFIX LISTEN_PORT \
        PEER_PUBLIC_B64 PEER_ENDPOINT PEER_TUNNEL_IP [KEEPALIVE]

boringtun with its timers running (a Rust thread of wireguard-requests): it
initiates towards PEER_ENDPOINT, keeps the session fresh and answers
initiations.  Inside the tunnel it echoes every UDP datagram sent to port
9999 of its tunnel address (the runner's UDP probe).  It prints "ready" once
the tunnel exists, then serves until killed.  Needs nothing from wgpy.
"""

import sys

from wireguard_requests._native import (  # type: ignore[import-not-found]
    WgConfig,
    WgPeer,
    WgTunnel,
)

UDP_ECHO_PORT = 9999


def main(argv: list[str]) -> None:
    private, address, port, peer_public, peer_endpoint, peer_ip, *rest = argv
    ip, _, prefix = address.partition("/")
    keepalive = int(rest[0]) if rest and int(rest[0]) else None
    peer = WgPeer(peer_public, peer_endpoint, [f"{peer_ip}/32"], persistent_keepalive=keepalive)
    config = WgConfig(private, ip, [peer], prefix_len=int(prefix or 24), listen_port=int(port))
    tunnel = WgTunnel(config)
    sock = tunnel.create_udp_socket(bind_port=UDP_ECHO_PORT)
    print("ready", flush=True)
    while True:
        try:
            data, source = sock.recv_from(65535)
        except TimeoutError:  # its receive has a timeout; keep serving
            continue
        sock.send_to(data, source)


if __name__ == "__main__":
    main(sys.argv[1:])
