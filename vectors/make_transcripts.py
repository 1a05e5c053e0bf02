"""Regenerate the seeded wgpy transcripts in vectors/transcripts/.

Each transcript fixes both static keys, an optional PSK, the seeds of both
devices' RNG streams (wgpy.rng.SeededRng), the monotonic time and the wall
clock, and records every datagram of: initiation, response, the initiator's
first transport packet (an IPv4 packet), the responder's reply, and the four
transport keys.  tests/test_transcripts.py replays them byte for byte.

Run:  python vectors/make_transcripts.py   (only when the format changes on
purpose: a transcript that no longer replays is a wire-format regression).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from wgpy.device import Device
from wgpy.endpoint import Endpoint
from wgpy.rng import SeededRng
from wgpy.sim import ipv4_packet

HERE = Path(__file__).resolve().parent / "transcripts"
EP_A = Endpoint("192.0.2.1", 51820)
EP_B = Endpoint("192.0.2.2", 51821)


def run(spec: dict[str, Any]) -> dict[str, Any]:
    """Play the scripted exchange for ``spec`` and return the transcript."""
    priv_a, priv_b = bytes.fromhex(spec["private_a"]), bytes.fromhex(spec["private_b"])
    psk = bytes.fromhex(spec["psk"]) if spec.get("psk") else None
    a = Device(priv_a, rng=SeededRng(spec["seed_a"].encode()))
    b = Device(priv_b, rng=SeededRng(spec["seed_b"].encode()))
    assert a.public_key and b.public_key
    pa = a.add_peer(b.public_key, preshared_key=psk, endpoint=EP_B, allowed_ips=["10.0.0.2/32"])
    pb = b.add_peer(a.public_key, preshared_key=psk, endpoint=EP_A, allowed_ips=["10.0.0.1/32"])
    now, wall = spec["now"], spec["wall_ns"]
    if spec.get("under_load"):
        b.force_under_load = True
    data_a = ipv4_packet("10.0.0.1", "10.0.0.2", b"wgpy transcript: A to B")
    data_b = ipv4_packet("10.0.0.2", "10.0.0.1", b"wgpy transcript: B to A")
    msgs: list[dict[str, str]] = []

    def record(sender: str, out: Any) -> list[bytes]:
        got = [d for d, _ in out.datagrams]
        msgs.extend({"from": sender, "hex": d.hex()} for d in got)
        return got

    init = record("A", a.send([data_a], now, wall))
    if spec.get("under_load"):
        cookie = record("B", b.receive([(init[0], EP_A)], now, wall))
        a.receive([(cookie[0], EP_B)], now, wall)
        now += 5.4  # past REKEY_TIMEOUT + jitter: the retry carries mac2
        wall += 5_400_000_000
        init = record("A", a.handle_timers(now, wall))
    resp = record("B", b.receive([(init[0], EP_A)], now, wall))
    first = record("A", a.receive([(resp[0], EP_B)], now, wall))
    out = b.receive([(first[0], EP_A)], now, wall)
    assert out.packets == [data_a]
    record("B", b.send([data_b], now, wall))
    kp_a, kp_b = pa.keypairs.current, pb.keypairs.current
    assert kp_a is not None and kp_b is not None
    return {
        **spec,
        "public_a": a.public_key.hex(),
        "public_b": b.public_key.hex(),
        "endpoint_a": str(EP_A),
        "endpoint_b": str(EP_B),
        "inner_a_to_b": data_a.hex(),
        "inner_b_to_a": data_b.hex(),
        "messages": msgs,
        "keys": {
            "a_send": bytes(kp_a.send_key).hex(),
            "a_recv": bytes(kp_a.recv_key).hex(),
            "b_send": bytes(kp_b.send_key).hex(),
            "b_recv": bytes(kp_b.recv_key).hex(),
        },
    }


SPECS: list[dict[str, Any]] = [
    {
        "name": "basic",
        "private_a": "a8" * 32,
        "private_b": "b0" * 32,
        "seed_a": "transcript/basic/a",
        "seed_b": "transcript/basic/b",
        "now": 1000.0,
        "wall_ns": 1_767_225_600_000_000_000,
    },
    {
        "name": "psk",
        "private_a": "1122334455667788" * 4,
        "private_b": "99aabbccddeeff00" * 4,
        "psk": "5a" * 32,
        "seed_a": "transcript/psk/a",
        "seed_b": "transcript/psk/b",
        "now": 50.0,
        "wall_ns": 1_800_000_000_123_456_789,
    },
    {
        "name": "cookie",
        "private_a": "0f" * 32,
        "private_b": "f0" * 32,
        "seed_a": "transcript/cookie/a",
        "seed_b": "transcript/cookie/b",
        "now": 7.0,
        "wall_ns": 1_767_225_600_000_000_000,
        "under_load": True,
    },
]


def main() -> None:
    HERE.mkdir(exist_ok=True)
    for spec in SPECS:
        path = HERE / f"{spec['name']}.json"
        path.write_text(json.dumps(run(spec), indent=1) + "\n")
        print("wrote", path)


if __name__ == "__main__":
    main()
