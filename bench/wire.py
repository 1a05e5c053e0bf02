"""Handshakes per second over the wire: a dedicated initiator built from
wgpy's handshake pieces, run against a responder (wgpy, wireguard-go or the
kernel) in another namespace.

The responder is configured with K peers, one per initiator identity, and
each identity sends from its own source address.  Initiations are created
before the timed window (so the initiator spends its time on I/O and the
responder is what is measured); during the window each identity keeps one
initiation outstanding and respects the responder's 20 ms per-peer flood
limit (the next initiation leaves 22 ms after the previous response came
back, so it cannot reach the responder within 20 ms of the previous one).  A
handshake counts when the response to that very initiation arrives; every
``verify_every``-th response is fully authenticated and its transport keys
derived.  Cookie replies (the responder is under load) are consumed and the
initiation is re-sent with mac2, as a real initiator does.

Run as ``python -m bench.wire`` with a JSON job on stdin; prints a JSON
result on stdout.
"""

from __future__ import annotations

import base64
import json
import math
import os
import select
import socket
import struct
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from wgpy.constants import MIN_INITIATION_INTERVAL
from wgpy.noise.cookie import CookieGenerator
from wgpy.noise.handshake import (
    Handshake,
    consume_response,
    create_initiation,
    derive_transport_keys,
)
from wgpy.noise.messages import MessageCookieReply, MessageResponse
from wgpy.noise.primitives import StaticKey
from wgpy.noise.tai64n import Tai64nStamper

__all__ = ["Identity", "main", "run_job"]

_RESPONSE_LEN, _COOKIE_LEN = 92, 64
_TIMEOUT = 0.5  # an unanswered initiation is written off after this
_SPACING = MIN_INITIATION_INTERVAL + 0.002  # per-identity flood limit, with margin


@dataclass
class Identity:
    """One initiator key, its socket and its precomputed initiations."""

    static: StaticKey
    sock: socket.socket
    cookie: CookieGenerator
    pool: list[tuple[Handshake, bytes, int]] = field(default_factory=list)
    next_item: int = 0
    pending: tuple[Handshake, bytes, int] | None = None
    sent_at: float = 0.0
    next_ok: float = 0.0


def _prepare(job: dict[str, Any]) -> list[Identity]:
    target_pub = base64.b64decode(job["target_public"])
    host, port = job["target"].rsplit(":", 1)
    per_identity = int(job["pool"])
    out = []
    for priv_b64, src in job["identities"]:
        static = StaticKey(base64.b64decode(priv_b64))
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((src, 0))
        sock.connect((host, int(port)))
        sock.setblocking(False)
        ident = Identity(static, sock, CookieGenerator(target_pub))
        # A pool built in a burst: its stamps must lead the clock to stay distinct.
        stamper = Tai64nStamper(max_ahead=None)
        for _ in range(per_identity):
            hs = Handshake(target_pub)
            hs.precompute(static)
            index = struct.unpack("<I", os.urandom(4))[0] | 1
            body = create_initiation(
                static, hs, index, os.urandom(32), stamper.stamp(time.time_ns())
            )
            if body is None:
                raise RuntimeError("target key is low-order")
            ident.pool.append((hs, body, index))
        out.append(ident)
    return out


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """Prepare the identities, then run the timed window; returns counts."""
    t0 = time.perf_counter()
    idents = _prepare(job)
    prep = time.perf_counter() - t0
    seconds = float(job["seconds"])
    verify_every = max(1, int(job.get("verify_every", 8)))
    by_fd = {i.sock.fileno(): i for i in idents}
    ep = select.epoll()
    for fd in by_fd:
        ep.register(fd, select.EPOLLIN)
    completed = verified = verify_failed = cookies = timeouts = sent = stray = 0

    def send(ident: Identity, now: float) -> None:
        nonlocal sent
        assert ident.pending is not None
        ident.sock.send(ident.cookie.add_macs(ident.pending[1], now))
        ident.sent_at = now
        sent += 1

    start = time.monotonic()
    end = start + seconds
    buf = bytearray(256)
    while True:
        now = time.monotonic()
        if now >= end:
            break
        # Launch: every idle identity whose flood interval has passed.
        wake = end
        exhausted = True
        for ident in idents:
            if ident.pending is not None and now - ident.sent_at > _TIMEOUT:
                timeouts += 1
                ident.pending = None
                ident.next_ok = now + _SPACING
            if ident.pending is None and ident.next_item < len(ident.pool):
                exhausted = False
                if now >= ident.next_ok:
                    ident.pending = ident.pool[ident.next_item]
                    ident.next_item += 1
                    send(ident, now)
                else:
                    wake = min(wake, ident.next_ok)
            elif ident.pending is not None:
                exhausted = False
                wake = min(wake, ident.sent_at + _TIMEOUT)
        if exhausted:
            break
        for fd, _ in ep.poll(max(0.0, wake - time.monotonic())):
            ident = by_fd[fd]
            while True:
                try:
                    n = ident.sock.recv_into(buf)
                except BlockingIOError:
                    break
                except ConnectionRefusedError:
                    continue
                data = bytes(buf[:n])
                pend = ident.pending
                if pend is None or n < 12:
                    stray += 1
                    continue
                hs, _body, index = pend
                if data[0] == 2 and n == _RESPONSE_LEN and data[8:12] == struct.pack("<I", index):
                    completed += 1
                    ident.pending = None
                    ident.next_ok = time.monotonic() + _SPACING
                    if completed % verify_every == 0:
                        ok = consume_response(ident.static, hs, MessageResponse.parse(data))
                        if ok and derive_transport_keys(hs) is not None:
                            verified += 1
                        else:
                            verify_failed += 1
                elif data[0] == 3 and n == _COOKIE_LEN:
                    reply = MessageCookieReply.parse(data)
                    if reply.receiver == index and ident.cookie.consume_reply(
                        reply, time.monotonic()
                    ):
                        cookies += 1
                        send(ident, time.monotonic())  # again, now with mac2
                    else:
                        stray += 1
                else:
                    stray += 1
    elapsed = time.monotonic() - start
    for ident in idents:
        ident.sock.close()
    ep.close()
    return {
        "rate": completed / elapsed if elapsed > 0 else 0.0,
        "completed": completed,
        "elapsed": elapsed,
        "sent": sent,
        "verified": verified,
        "verify_failed": verify_failed,
        "cookie_replies": cookies,
        "timeouts": timeouts,
        "stray": stray,
        "identities": len(idents),
        "prepare_seconds": prep,
    }


def pool_size(seconds: float) -> int:
    """Initiations each identity needs for ``seconds`` at the flood limit."""
    return math.ceil(seconds / _SPACING) + 2


def main() -> int:
    """Read a job from stdin, run it, print the result as JSON."""
    job = json.load(sys.stdin)
    print(json.dumps(run_job(job)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
