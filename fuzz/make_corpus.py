"""Write the seed corpora under fuzz/corpus/<target>/ (deterministic).

Run from the repository root: ``python fuzz/make_corpus.py``.  Seeds are
valid inputs in each target's format (see fuzz/targets.py): receive
programs that establish sessions, replay, mutate, jump the clock and flood;
UAPI requests from the cross-platform documentation and wg's own output;
wireguard.h configuration buffers packed with wgpy.nt.abi.  Files whose
name starts with ``seed-`` are rewritten; anything else in the directories
(inputs a fuzzer found and someone committed) is left alone.
"""

from __future__ import annotations

import hashlib
import struct
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from wgpy.constants import UNDER_LOAD_HANDSHAKES  # noqa: E402
from wgpy.nt import abi  # noqa: E402

# -- receive programs ------------------------------------------------------------

ESTABLISHED, FRESH, PSK = 1, 0, 2


def raw(src: int, body: bytes) -> bytes:
    return bytes([0, src]) + struct.pack("<H", len(body)) + body


def seal(payload: bytes = b"data") -> bytes:
    return bytes([1, len(payload)]) + payload


def b_send(payload: bytes = b"back") -> bytes:
    return bytes([6, len(payload)]) + payload


DELIVER = bytes([2])


def mutate(idx: int, pos: int, xor: int) -> bytes:
    return bytes([3, idx]) + struct.pack("<H", pos) + bytes([xor])


def replay(idx: int, copies: int = 1) -> bytes:
    return bytes([4, idx, (copies - 1 + 3) // 4])


def clock(step_index: int) -> bytes:
    return bytes([5, step_index])


def readdress(idx: int, alias: int) -> bytes:
    return bytes([7, idx, alias])


def receive_seeds() -> dict[str, bytes]:
    seeds = {
        "established-data-both-ways": bytes([ESTABLISHED]) + seal() + DELIVER + b_send() + DELIVER,
        "fresh-handshake-a": bytes([FRESH]) + seal() + DELIVER * 4,
        "fresh-handshake-b": bytes([FRESH]) + b_send() + DELIVER * 4,
        "fresh-psk-crossing": bytes([FRESH | PSK]) + seal() + b_send() + DELIVER * 5,
        "established-replay": bytes([ESTABLISHED])
        + seal()
        + DELIVER
        + replay(0)
        + replay(1)
        + DELIVER,
        "established-mutate-header": bytes([ESTABLISHED]) + seal() + mutate(0, 4, 0x01) + DELIVER,
        "established-mutate-tag": bytes([ESTABLISHED]) + seal() + mutate(0, 40, 0x80) + DELIVER,
        "fresh-mutate-initiation-mac1": bytes([FRESH]) + seal() + mutate(0, 116, 1) + DELIVER,
        "fresh-mutate-response": bytes([FRESH])
        + seal()
        + DELIVER
        + mutate(0, 60, 2)
        + DELIVER
        + DELIVER,
        "established-roam": bytes([ESTABLISHED]) + seal() + readdress(0, 1) + DELIVER + b_send(),
        "established-expire-180": bytes([ESTABLISHED]) + clock(8) + seal() + DELIVER * 4,
        "established-rekey-121": bytes([ESTABLISHED]) + clock(6) + seal() + DELIVER * 4,
        "established-erase-541": bytes([ESTABLISHED]) + clock(9) + seal() + DELIVER * 4,
        "established-clock-back": bytes([ESTABLISHED]) + clock(12) + seal() + DELIVER * 4,
        "fresh-retries": bytes([FRESH]) + seal() + clock(3) + clock(3) + clock(3) + DELIVER * 4,
        "established-keepalive": bytes([ESTABLISHED]) + seal() + DELIVER + clock(4) + DELIVER,
        # Enough copies of A's initiation to put B under load: cookie path.
        "fresh-flood-cookie": bytes([FRESH])
        + seal()
        + DELIVER
        + replay(0, UNDER_LOAD_HANDSHAKES + 8)
        + DELIVER
        + clock(3)
        + DELIVER * 4,
        "garbage-types": bytes([ESTABLISHED])
        + b"".join(
            raw(0, bytes([t, 0, 0, 0]) + bytes(n)) for t in range(6) for n in (0, 28, 60, 144)
        )
        + DELIVER,
        "garbage-reserved": bytes([ESTABLISHED])
        + seal()
        + mutate(0, 1, 0xFF)
        + DELIVER
        + raw(1, b"\x04\x00\x00\x01" + bytes(28))
        + DELIVER,
    }
    return {name: data for name, data in seeds.items()}


# -- UAPI ---------------------------------------------------------------------------

KEY1 = bytes(range(1, 33)).hex()
KEY2 = bytes(range(2, 34)).hex()
KEY3 = hashlib.blake2s(b"3").hexdigest()
KEY4 = hashlib.blake2s(b"4").hexdigest()


def uapi_seeds() -> dict[str, bytes]:
    # The example of wireguard.com/xplatform (keys replaced).
    xplatform = (
        f"private_key={KEY3}\nfwmark=0\nlisten_port=12912\nreplace_peers=true\n"
        f"public_key={KEY4}\npreshared_key={KEY1}\nreplace_allowed_ips=true\n"
        "allowed_ip=192.168.4.4/32\nendpoint=[abcd:23::33%2]:51820\n"
        f"public_key={KEY2}\nupdate_only=true\nendpoint=182.122.22.19:3233\n"
        "persistent_keepalive_interval=111\nreplace_allowed_ips=true\n"
        "allowed_ip=192.168.4.6/32\nallowed_ip=-192.168.4.6/32\n"
        f"public_key={KEY1}\nremove=true\n\n"
    )
    lines = {
        "set-xplatform": xplatform,
        "set-remove-peer": f"public_key={KEY2}\nremove=true\n",
        "set-replace-allowed": f"public_key={KEY2}\nreplace_allowed_ips=true\n"
        "allowed_ip=0.0.0.0/0\nallowed_ip=::/0\nallowed_ip=10.1.2.3/8\n",
        "set-bad-key": "private_key=zz\n",
        "set-busy-port": "listen_port=4242\n",
        "set-fwmark-fails": "fwmark=666\n",
        "set-own-key-as-peer": f"private_key={KEY2}\npublic_key={KEY2}\nallowed_ip=1.2.3.4/32\n",
        "set-keepalive-toggle": f"public_key={KEY2}\npersistent_keepalive_interval=25\n"
        "persistent_keepalive_interval=0\npersistent_keepalive_interval=1\n",
        "set-endpoint-v6-zone": f"public_key={KEY2}\nendpoint=[fe80::1%lo]:1\n",
        "set-no-equals": "listen_port\n",
        "set-crlf": f"public_key={KEY3}\r\nallowed_ip=10.9.0.0/16\r\n",
        "set-device-key-after-peer": f"public_key={KEY3}\nlisten_port=1\n",
        "set-private-key-zero": "private_key=" + "00" * 32 + "\n",
    }
    seeds = {name: b"\x00" + text.encode() for name, text in lines.items()}
    streams = {
        "stream-get": b"get=1\n\n",
        "stream-set-then-get": b"set=1\n" + xplatform.encode() + b"get=1\n\n",
        "stream-get-trailing": b"get=1\nx",
        "stream-bad-operation": b"put=1\n\n",
        "stream-set-unterminated": b"set=1\nlisten_port=1",
        "stream-set-error-then-get": b"set=1\nbogus=1\n\nget=1\n\n",
        "stream-long-line": b"set=1\nallowed_ip=" + b"1" * 70000 + b"\n\n",
    }
    seeds.update({name: b"\x01" + data for name, data in streams.items()})
    return seeds


# -- wireguard.h configurations ------------------------------------------------------


def nt_seeds() -> dict[str, bytes]:
    pf, inf, af = abi.PeerFlag, abi.InterfaceFlag, abi.AllowedIPFlag
    key = bytes(range(1, 33))
    peer_key = bytes(range(2, 34))
    full = abi.InterfaceConfig(
        flags=inf.HAS_PRIVATE_KEY | inf.HAS_LISTEN_PORT | inf.REPLACE_PEERS,
        listen_port=51820,
        private_key=key,
        peers=(
            abi.PeerConfig(
                flags=pf.HAS_PUBLIC_KEY
                | pf.HAS_PRESHARED_KEY
                | pf.HAS_PERSISTENT_KEEPALIVE
                | pf.HAS_ENDPOINT
                | pf.REPLACE_ALLOWED_IPS,
                public_key=peer_key,
                preshared_key=bytes(range(3, 35)),
                persistent_keepalive=25,
                endpoint=("192.0.2.2", 51820),
                allowed_ips=(
                    abi.AllowedIPConfig("10.0.0.2", 32),
                    abi.AllowedIPConfig("fd00::", 64),
                    abi.AllowedIPConfig("10.9.0.0", 16, af.REMOVE),
                ),
            ),
            abi.PeerConfig(
                flags=pf.HAS_PUBLIC_KEY | pf.HAS_ENDPOINT | pf.UPDATE_ONLY,
                public_key=bytes(range(4, 36)),
                endpoint=("fe80::1%3", 1),
            ),
            abi.PeerConfig(flags=pf.HAS_PUBLIC_KEY | pf.REMOVE, public_key=bytes(range(5, 37))),
        ),
    )
    empty = abi.InterfaceConfig()
    v6 = abi.InterfaceConfig(
        peers=(
            abi.PeerConfig(
                flags=pf.HAS_PUBLIC_KEY | pf.HAS_ENDPOINT | pf.HAS_PROTOCOL_VERSION,
                public_key=peer_key,
                endpoint=("2001:db8::1", 443),
                reserved=1,
                allowed_ips=tuple(abi.AllowedIPConfig("::", c) for c in (0, 1, 127, 128)),
            ),
        )
    )
    buffers = {
        "full": abi.pack_configuration(full),
        "empty": abi.pack_configuration(empty),
        "v6-protocol-version": abi.pack_configuration(v6),
    }
    seeds = {name: b"\x00" + buf for name, buf in buffers.items()}
    # Truncated by the size argument, and a size beyond the buffer.
    seeds["full-size-short"] = bytes([1 | (24 << 1)]) + buffers["full"]
    seeds["full-size-long"] = bytes([2 | (8 << 2)]) + buffers["full"]
    bad = bytearray(buffers["v6-protocol-version"])
    bad[abi.INTERFACE_SIZE + 4] = 2  # Reserved (protocol version) 2
    seeds["bad-protocol-version"] = b"\x00" + bytes(bad)
    return seeds


def write(target: str, seeds: dict[str, bytes]) -> None:
    directory = HERE / "corpus" / target
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.glob("seed-*"):
        old.unlink()
    for name, data in seeds.items():
        (directory / f"seed-{name}").write_bytes(data)


def main() -> None:
    write("receive", receive_seeds())
    write("uapi", uapi_seeds())
    write("nt_config", nt_seeds())


if __name__ == "__main__":
    main()
