"""TAI64N timestamps of a device's initiations: strictly increasing per peer,
never ahead of the wall clock by more than one whitening granule, so a
restarted process (which stamps with the real clock) is accepted at once."""

from __future__ import annotations

from wgpy.constants import MESSAGE_INITIATION, MESSAGE_RESPONSE, TAI64N_WHITENING_MASK
from wgpy.device import Device, Output
from wgpy.endpoint import Endpoint
from wgpy.noise.primitives import clamp, public_key
from wgpy.noise.tai64n import tai64n
from wgpy.rng import SeededRng

PEERS = 1000
MINUTES = 10
KEEPALIVE = 25
BASE_WALL_NS = 1_800_000_000 * 10**9
GRANULE = TAI64N_WHITENING_MASK + 1
HUB_ENDPOINT = Endpoint("192.0.2.1", 51820)


def _peer_endpoint(i: int) -> Endpoint:
    return Endpoint(f"10.{i >> 8}.{i & 255}.1", 51820)


def _wall(now: float) -> int:
    return BASE_WALL_NS + int(now * 1e9)


def _hub(hub_key: bytes, peer_keys: list[bytes], seed: bytes) -> Device:
    hub = Device(hub_key, rng=SeededRng(seed))
    for i, key in enumerate(peer_keys):
        hub.add_peer(
            public_key(key),
            endpoint=_peer_endpoint(i),
            allowed_ips=[f"10.99.{i >> 8}.{i & 255}/32"],
        )
    return hub


def test_a_restarted_hub_is_accepted_by_every_peer_after_ten_minutes_of_retries() -> None:
    rng = SeededRng(b"keys")
    hub_key = clamp(rng.random_bytes(32))
    peer_keys = [clamp(rng.random_bytes(32)) for _ in range(PEERS)]
    by_endpoint = {_peer_endpoint(i): i for i in range(PEERS)}

    # The hub: every peer has persistent keepalive and none answers, so the
    # hub retries handshakes for ten minutes (many in the same 16.8 ms).
    hub = _hub(hub_key, peer_keys, b"hub")
    last_initiation: dict[int, tuple[bytes, int]] = {}
    sent = 0

    def collect(out: Output, wall: int) -> None:
        nonlocal sent
        for datagram, ep in out.datagrams:
            if datagram[0] == MESSAGE_INITIATION:
                last_initiation[by_endpoint[ep]] = (datagram, wall)
                sent += 1

    now = 0.0
    for peer in hub.peers:
        collect(hub.set_persistent_keepalive(peer, KEEPALIVE, now, _wall(now)), _wall(now))
    while (deadline := hub.next_deadline()) is not None and deadline <= MINUTES * 60:
        now = deadline
        collect(hub.handle_timers(now, _wall(now)), _wall(now))
    assert len(last_initiation) == PEERS
    assert sent > 50 * PEERS, sent  # retries all along

    # Each peer comes online and receives the hub's last retry: its
    # timestamp is at most one granule ahead of the clock that sent it.
    peers = []
    ahead = []
    for i, key in enumerate(peer_keys):
        dev = Device(key, rng=SeededRng(b"peer%d" % i))
        hub_peer = dev.add_peer(public_key(hub_key), endpoint=HUB_ENDPOINT)
        datagram, wall = last_initiation[i]
        out = dev.receive([(datagram, HUB_ENDPOINT)], now, _wall(now))
        assert [d[0] for d, _ in out.datagrams] == [MESSAGE_RESPONSE], (i, dev.stats)
        stamp = int.from_bytes(hub_peer.handshake.latest_timestamp, "big")
        ahead.append(stamp - int.from_bytes(tai64n(wall), "big"))
        peers.append(dev)
    assert max(ahead) <= GRANULE, f"timestamps ran {max(ahead) / GRANULE:.0f} granules ahead"

    # The hub restarts (same key, stamps from the real clock) a moment later:
    # every peer must accept its next initiation.
    now += 1.0
    restarted = _hub(hub_key, peer_keys, b"hub-restarted")
    accepted = 0
    for i, peer in enumerate(restarted.peers):
        out = restarted.set_persistent_keepalive(peer, KEEPALIVE, now, _wall(now))
        (init,) = [d for d, _ in out.datagrams if d[0] == MESSAGE_INITIATION]
        answer = peers[i].receive([(init, HUB_ENDPOINT)], now, _wall(now))
        accepted += sum(1 for d, _ in answer.datagrams if d[0] == MESSAGE_RESPONSE)
    assert accepted == PEERS, f"{PEERS - accepted} of {PEERS} peers rejected the restarted hub"
