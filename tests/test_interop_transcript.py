"""Replay a transcript captured from a real wgpy <-> wireguard-go run
(vectors/interop/, made by vectors/capture_wireguard_go.py).

wireguard-go's initiation fed to a sans-IO Device with wgpy's key and the
recorded RNG seed must produce the very response wgpy sent on the wire, and
wireguard-go's transport packets must decrypt with the resulting keys:
wgpy's handshake output agrees with wireguard-go's byte for byte.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from wgpy.device import Device
from wgpy.endpoint import Endpoint
from wgpy.noise.primitives import public_key
from wgpy.rng import SeededRng

FILES = sorted((Path(__file__).resolve().parent.parent / "vectors" / "interop").glob("*.json"))
GO_EP = Endpoint("192.168.241.2", 51821)


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_replay_wireguard_go_capture(path: Path) -> None:
    t = json.loads(path.read_text())
    wgpy_priv = bytes.fromhex(t["wgpy_private"])
    go_pub = public_key(bytes.fromhex(t["wireguard_go_private"]))
    dev = Device(wgpy_priv, rng=SeededRng(t["seed"].encode()))
    peer = dev.add_peer(go_pub, allowed_ips=[f"{t['wireguard_go_tunnel_address']}/32"])
    msgs = [(m["from"], bytes.fromhex(m["hex"])) for m in t["messages"]]
    go_msgs = [d for who, d in msgs if who == "wireguard-go"]
    wgpy_msgs = [d for who, d in msgs if who == "wgpy"]
    initiation = go_msgs[0]
    assert initiation[0] == 1 and len(initiation) == 148
    now, wall = 100.0, t["captured_wall_ns"]
    out = dev.receive([(initiation, GO_EP)], now, wall)
    assert [d for d, _ in out.datagrams] == [wgpy_msgs[0]]  # the response, byte for byte
    # wireguard-go's transport packets (its ping) decrypt with our session.
    delivered = []
    for data in go_msgs[1:]:
        if data[0] == 4:
            delivered += dev.receive([(data, GO_EP)], now, wall).packets
    assert delivered, "no transport packet from wireguard-go decrypted"
    icmp = delivered[0]
    assert icmp[9] == 1 and icmp[20] == 8  # ICMP echo request to us
    assert icmp[16:20] == bytes(int(x) for x in t["wgpy_tunnel_address"].split("."))
    # And wgpy's reply on the wire is exactly what the engine produces now.
    kp = peer.keypairs.current
    assert kp is not None
    reply = next(d for d in wgpy_msgs[1:] if d[0] == 4 and len(d) > 32)
    counter = int.from_bytes(reply[8:16], "little")
    plain = ChaCha20Poly1305(bytes(kp.send_key)).decrypt(
        bytes(4) + counter.to_bytes(8, "little"), reply[16:], None
    )
    assert plain[9] == 1 and plain[20] == 0  # ICMP echo reply
    length = int.from_bytes(plain[2:4], "big")
    kp.send_counter = counter
    again = dev.send([plain[:length]], now, wall).datagrams
    assert [d for d, _ in again] == [reply]
