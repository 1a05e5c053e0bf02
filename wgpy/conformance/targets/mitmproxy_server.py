"""A boringtun WireGuard server from mitmproxy_rs, as a conformance target.

Run with the Python of a virtual environment that has mitmproxy_rs==0.11.1:

    python mitmproxy_server.py LISTEN_IP PORT PRIVATE_KEY_B64 PEER_PUBLIC_B64...

It answers ICMP echo inside the tunnel (smoltcp) and echoes every UDP
datagram sent to any address and port through it (so the runner's UDP probe
works), and closes TCP streams.  It prints one line, "ready <public key>",
once it listens, then serves until killed.  Needs nothing from wgpy.
"""

import asyncio
import sys
from typing import Any

from mitmproxy_rs import wireguard  # type: ignore[import-not-found]


async def _tcp(stream: Any) -> None:
    stream.close()


async def _udp(stream: Any) -> None:
    try:
        while True:
            data = await stream.read(65535)
            if not data:
                return
            stream.write(data)
    finally:
        stream.close()


async def main(argv: list[str]) -> None:
    host, port, private, *peers = argv
    server = await wireguard.start_wireguard_server(host, int(port), private, peers, _tcp, _udp)
    print("ready", wireguard.pubkey(private), flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        server.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
