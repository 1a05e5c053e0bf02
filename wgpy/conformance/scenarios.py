"""The named conformance scenarios.

Each scenario starts from a fresh state (with a control, the target's peer
entry for the runner is re-created, so earlier scenarios leave nothing
behind), drives the target through the runner, and returns a one-line
summary or raises :class:`~wgpy.conformance.runner.Failed`.  The rules they
check are the whitepaper's, as the kernel and wireguard-go implement them;
each docstring names the rule.
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import os
from collections.abc import Callable, Iterable, Sequence
from typing import Final

from wgpy.constants import (
    COOKIE_REPLY_SIZE,
    KEEPALIVE_TIMEOUT,
    KEY_LEN,
    MAC_LEN,
    MESSAGE_COOKIE_REPLY,
    MESSAGE_INITIATION,
    MESSAGE_PADDING_MULTIPLE,
    MESSAGE_RESPONSE,
    MESSAGE_TRANSPORT,
    REJECT_AFTER_MESSAGES,
    REJECT_AFTER_TIME,
    REKEY_AFTER_TIME,
    REKEY_ATTEMPT_TIME,
    REKEY_TIMEOUT,
    REKEY_TIMEOUT_JITTER_MAX,
    TRANSPORT_OVERHEAD,
)
from wgpy.inet import parse_ip
from wgpy.noise.cookie import cookie_key, mac1_key
from wgpy.noise.handshake import (
    INITIAL_CHAINING_KEY,
    Handshake,
    create_initiation,
    initial_hash,
)
from wgpy.noise.keypair import Keypair
from wgpy.noise.messages import (
    MAC1_OFFSET_INITIATION,
    TRANSPORT_HEADER,
    MessageCookieReply,
    MessageInitiation,
)
from wgpy.noise.primitives import (
    CryptoError,
    StaticKey,
    clamp,
    mac,
    public_key,
    xaead_decrypt,
    xaead_encrypt,
)
from wgpy.noise.symmetric import SymmetricState
from wgpy.noise.tai64n import tai64n

from .control import ControlError, PeerSpec, UapiControl
from .runner import Failed, Inbound, Runner, Scenario, Skipped

__all__ = ["LOW_ORDER_POINTS", "SCENARIOS", "scenario", "select"]

#: The seven low-order Curve25519 points the kernel's netns.sh configures as
#: peers (X25519 with any of them yields the all-zero secret).
LOW_ORDER_POINTS: Final = tuple(
    bytes.fromhex(h)
    for h in (
        "00" * 32,
        "01" + "00" * 31,
        "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
        "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
        "ec" + "ff" * 30 + "7f",
        "ed" + "ff" * 30 + "7f",
        "ee" + "ff" * 30 + "7f",
    )
)

#: Every scenario by name, in the default order.
SCENARIOS: dict[str, Scenario] = {}


def scenario(
    name: str, *, tunnel: bool = False, control: bool = False, long: bool = False
) -> Callable[[Callable[[Runner], str]], Callable[[Runner], str]]:
    """Register a scenario; its description is the docstring's first paragraph."""

    def deco(func: Callable[[Runner], str]) -> Callable[[Runner], str]:
        doc = (func.__doc__ or "").strip().split("\n\n")[0]
        SCENARIOS[name] = Scenario(name, func, " ".join(doc.split()), tunnel, control, long)
        return func

    return deco


def select(names: Sequence[str] = (), *, long: bool = False) -> list[Scenario]:
    """The scenarios to run: the named ones (in the given order), or every
    default one (plus the long ones with ``long``).  ValueError for an
    unknown name."""
    if names:
        unknown = [n for n in names if n not in SCENARIOS]
        if unknown:
            raise ValueError(f"unknown scenario(s): {', '.join(unknown)}")
        return [SCENARIOS[n] for n in names]
    return [sc for sc in SCENARIOS.values() if long or not sc.long]


# -- helpers ---------------------------------------------------------------------------


def _replies(r: Runner, duration: float) -> list[Inbound]:
    """What the target sent in ``duration`` that was not background traffic."""
    return [m for m in r.collect(duration) if not m.background]


def _expect_silence(r: Runner, duration: float, what: str) -> None:
    replies = _replies(r, duration)
    if replies:
        first = r.describe(replies[0]).removeprefix("<- ")
        raise Failed(f"{what} were answered ({len(replies)} datagrams, first: {first})")


def _need_reply(reply: Inbound | None, what: str) -> Inbound:
    if reply is None:
        raise Failed(f"no echo reply to {what}")
    return reply


def _elapsed_ms(start: float, m: Inbound) -> str:
    return f"{(m.at - start) * 1000:.1f} ms"


def _junk_initiation(r: Runner) -> tuple[bytes, int]:
    """A well-formed initiation with a valid mac1 and no mac2 from a static
    key the target does not know: it costs the target its DH work and is
    never answered with a response."""
    junk = StaticKey(clamp(os.urandom(KEY_LEN)))
    hs = Handshake(r.target_public)
    hs.precompute(junk)
    idx = r.new_index()
    body = create_initiation(junk, hs, idx, clamp(os.urandom(KEY_LEN)), tai64n(r.wall_ns()))
    assert body is not None
    return body + mac(mac1_key(r.target_public), body) + bytes(MAC_LEN), idx


def _forge_low_order(r: Runner, point: bytes) -> tuple[bytes, int]:
    """An initiation whose ephemeral is a low-order point, built as if the
    all-zero DH result were acceptable: a target that skips the zero check
    would find it authentic."""
    idx = r.new_index()
    st = SymmetricState.from_state(INITIAL_CHAINING_KEY, initial_hash(r.target_public))
    st.mix_hash(point)
    st.mix_chain(point)
    st.mix_key(bytes(KEY_LEN))  # es: X25519 with a low-order point is all zero
    enc_static = st.encrypt_and_hash(r.our_public)
    assert r.hs.precomputed_ss is not None
    st.mix_key(bytes(r.hs.precomputed_ss))  # ss
    enc_ts = st.encrypt_and_hash(r.stamper.stamp(r.wall_ns()))
    body = MessageInitiation(idx, point, enc_static, enc_ts).pack()[:MAC1_OFFSET_INITIATION]
    return r.add_macs(body), idx


def _target_initiates(r: Runner, psk: bytes | bool | None = False) -> tuple[Inbound, str]:
    """Make the target send us an initiation; returns it and how."""
    if r.control is not None:
        # A fresh peer entry with persistent keepalive: turning it on sends a
        # keepalive at once, and with no session that starts a handshake.
        r.fresh(psk=psk, keepalive=1)
        how = "persistent keepalive set on a fresh peer"
        m = r.wait_initiation(r.t(REKEY_TIMEOUT + 2))
    else:
        if not r.tunnel_ready:
            raise Skipped("without a setup mode this needs the tunnel IPs")
        kp = r.initiate()
        _need_reply(r.ping(kp), "the echo request that should make the target send data")
        # The target sent data and hears nothing back: after KEEPALIVE_TIMEOUT +
        # REKEY_TIMEOUT (+ jitter) it must start a new handshake.
        how = "data from the target, then silence (new-handshake timer)"
        m = r.wait_initiation(KEEPALIVE_TIMEOUT + REKEY_TIMEOUT + r.t(8))
    if m is None:
        raise Failed(f"the target never sent a handshake initiation ({how})")
    return m, how


def _describe_stamp(r: Runner) -> str:
    """How the target writes TAI64N (informational: label base, whitening)."""
    if r.last_target_stamp is None:
        return "no timestamp seen"
    stamp, wall_ns = r.last_target_stamp
    seconds = int.from_bytes(stamp[:8], "big") - (1 << 62)
    nanos = int.from_bytes(stamp[8:], "big")
    offset = round(seconds + nanos / 1e9 - wall_ns / 1e9)
    whitened = "whitened to 2^24 ns" if nanos % (1 << 24) == 0 else "not whitened"
    return f"TAI64N label ≈ Unix time + 2^62 {offset:+d} s, nanoseconds {whitened}"


def _confirms(kp: Keypair) -> Callable[[Inbound], bool]:
    """Matches transport on ``kp`` or a cookie reply to the response that made it."""
    idx = kp.local_index
    return lambda x: x.keypair is kp or (x.kind == MESSAGE_COOKIE_REPLY and x.receiver == idx)


#: How soon an initiator must confirm a session after our response.
_CONFIRM_WITHIN: Final = 0.5


def _accept_and_confirm(r: Runner, m: Inbound) -> Keypair:
    """Answer the target's initiation and wait for its key confirmation.

    A target under load answers our response with a cookie reply instead; we
    store the cookie and answer its retransmitted initiation with mac2.
    """
    for _ in range(3):
        kp = r.accept(m)
        sent = r.now()
        conf = r.wait_for(_confirms(kp), r.t(3.0))
        if conf is None:
            raise Failed(
                "after our response the target sent nothing on the new session "
                "(the initiator must confirm the session with data or a keepalive)"
            )
        if conf.kind != MESSAGE_COOKIE_REPLY:
            delay = conf.at - sent
            if delay > r.t(_CONFIRM_WITHIN):
                # A timer (persistent keepalive, data later) is not confirmation.
                raise Failed(
                    f"the target confirmed the session only {delay:.2f} s after our response, "
                    "not at once"
                )
            return kp
        r.take_cookie(conf)
        nxt = r.wait_initiation(REKEY_TIMEOUT + r.t(3.0))
        if nxt is None:
            raise Failed("after its cookie reply the target did not retransmit its initiation")
        m = nxt
    raise Failed("the target kept answering our responses with cookie replies")


def _garbage() -> list[tuple[str, bytes]]:
    """Malformed datagrams: wrong lengths for every type, random bodies of
    the right length (invalid mac1 / unknown index), unknown types."""
    rnd = os.urandom
    out = [("empty datagram", b"")]
    out += [(f"{n} random bytes", rnd(n)) for n in (1, 2, 3, 100, 1000, 1500)]
    for kind, size in (
        (MESSAGE_INITIATION, 148),
        (MESSAGE_RESPONSE, 92),
        (MESSAGE_COOKIE_REPLY, 64),
    ):
        for n in (4, size - 1, size + 1, 2 * size):
            out.append((f"type {kind} with {n} bytes", bytes([kind, 0, 0, 0]) + rnd(n - 4)))
        out.append(
            (f"type {kind} of the right size, random", bytes([kind, 0, 0, 0]) + rnd(size - 4))
        )
    for n in (4, 16, 31):
        out.append((f"type 4 with {n} bytes", bytes([MESSAGE_TRANSPORT, 0, 0, 0]) + rnd(n - 4)))
    for n in (32, 128):
        out.append((f"type 4, {n} random bytes", bytes([MESSAGE_TRANSPORT, 0, 0, 0]) + rnd(n - 4)))
    for kind in (0, 5, 255):
        out.append((f"unknown type {kind}", bytes([kind, 0, 0, 0]) + rnd(144)))
    return out


def _send_all(r: Runner, datagrams: Iterable[bytes], via: str = "main") -> int:
    n = 0
    for data in datagrams:
        try:
            r.transmit(data, via)
        except BlockingIOError:
            r.sleep(0.001)
            continue
        n += 1
    return n


# -- handshakes ------------------------------------------------------------------------


@scenario("handshake-initiator")
def handshake_initiator(r: Runner) -> str:
    """Runner initiates: the target answers a valid initiation with one 92-byte
    response whose mac1 is keyed with our public key and which authenticates
    (whitepaper 5.4.3)."""
    start = r.now()
    m, idx = r.initiate_raw()
    r.complete(m)
    extra = [x for x in r.collect(r.t(0.5)) if x.kind == MESSAGE_RESPONSE and x.receiver == idx]
    if extra:
        raise Failed("the target sent more than one response to one initiation")
    psk = "with the configured PSK" if r.psk else "without PSK"
    return f"valid response {psk} after {_elapsed_ms(start, m)}"


@scenario("handshake-responder")
def handshake_responder(r: Runner) -> str:
    """Target initiates: its initiation authenticates, and after our response it
    confirms the session with a transport message at once (whitepaper
    5.4.2; key confirmation)."""
    m, how = _target_initiates(r)
    kp = _accept_and_confirm(r, m)
    if r.control is not None:
        r.control.set_keepalive(r.our_public, 0)
    extra = ""
    if r.tunnel_ready:
        _need_reply(r.ping(kp), "an echo request on the session the target initiated")
        extra = "; echo answered on it"
    else:
        r.unchecked("data on the session (needs the tunnel IPs)")
    return f"target initiated ({how}); session confirmed{extra}; {_describe_stamp(r)}"


@scenario("handshake-psk")
def handshake_psk(r: Runner) -> str:
    """Preshared key: handshakes in both roles succeed when both sides hold the
    same PSK, and a response does not authenticate when the PSKs differ
    (psk token, whitepaper 5.4.3)."""
    if r.control is None and r.config.psk is None:
        raise Skipped("needs --psk or a setup mode")
    done = []
    psk = os.urandom(KEY_LEN) if r.control is not None else r.config.psk
    r.fresh(psk=psk)
    kp = r.initiate()
    if r.tunnel_ready:
        _need_reply(r.ping(kp), "an echo request on the PSK session")
    else:
        r.unchecked("data on the PSK session (needs the tunnel IPs)")
    done.append("initiator")
    if r.control is not None:
        m, _ = _target_initiates(r, psk=psk)
        _accept_and_confirm(r, m)
        r.control.set_keepalive(r.our_public, 0)
        done.append("responder")
    # Different PSKs: the target answers (it cannot tell yet) but the response
    # must fail to authenticate.
    r.fresh(psk=psk)
    r.psk = os.urandom(KEY_LEN)
    r.reset_handshake()
    m, _ = r.initiate_raw()
    try:
        r.complete(m, confirm=False)
    except Failed:
        done.append("mismatch rejected")
    else:
        raise Failed("a response authenticated although the two PSKs differ")
    return "PSK handshake: " + ", ".join(done)


# -- transport -------------------------------------------------------------------------


@scenario("transport", tunnel=True)
def transport(r: Runner) -> str:
    """Data both ways: an ICMP echo request sent through the tunnel is answered
    by an echo reply from the target's tunnel IP on the same session."""
    kp = r.initiate()
    for n in (56, 1000):
        reply = _need_reply(r.ping(kp, n), f"a {n}-byte echo request")
        if reply.keypair is not kp:
            raise Failed("the echo reply came on a different session")
        assert reply.plaintext is not None
        ip = parse_ip(reply.plaintext)
        assert ip is not None
        src, dst = (str(ipaddress.ip_address(a)) for a in (ip.src, ip.dst))
        if src != r.config.target_tunnel_ip or dst != r.config.our_tunnel_ip:
            raise Failed(f"echo reply from {src} to {dst}")
    return "echo requests of 56 and 1000 bytes answered on the session"


@scenario("padding-mtu", tunnel=True)
def padding_mtu(r: Runner) -> str:
    """Padding: the target pads each plaintext with zeros to a multiple of 16
    but never past its MTU, and an inner packet exactly at the MTU passes
    (kernel send.c calculate_skb_padding)."""
    kp = r.initiate()
    mtu = r.config.target_mtu
    ov = r.echo_overhead()
    lengths = sorted(
        {ov, ov + 1, ov + 7, ov + 16, 100, 333, 1000, mtu - 17, mtu - 15, mtu - 1, mtu}
    )
    problems: list[str] = []
    for length in lengths:
        reply = r.ping(kp, length - ov)
        if reply is None:
            problems.append(f"no reply for an IP length of {length}")
            continue
        assert reply.plaintext is not None
        got = len(reply.plaintext)
        m = MESSAGE_PADDING_MULTIPLE
        want = min((length + m - 1) // m * m, mtu)
        if got != want:
            problems.append(f"IP length {length}: plaintext padded to {got}, expected {want}")
        if any(reply.plaintext[length:]):
            problems.append(f"IP length {length}: padding is not zero")
        if len(reply.data) != got + TRANSPORT_OVERHEAD:
            problems.append(f"IP length {length}: message {len(reply.data)} B")
    if problems:
        raise Failed("; ".join(problems[:4]))
    return f"{len(lengths)} sizes from {lengths[0]} to the MTU ({mtu}) padded correctly"


@scenario("replay-transport", tunnel=True)
def replay_transport(r: Runner) -> str:
    """Transport replay: the same encrypted packet sent twice is delivered
    once, packets reordered inside the window are each delivered, and a forged
    packet with a far-ahead counter and a bad tag does not move the replay
    window (RFC 6479 window checked after authentication)."""
    kp = r.initiate()
    e = r.send_echo(kp)
    _need_reply(r.wait_for(r.is_reply(e), r.t(3.0)), "the original echo request")
    r.collect(r.t(0.3))
    r.send(e.message, what="the same transport message again (replay)")
    again = r.wait_for(r.is_reply(e), r.t(2.0))
    if again is not None:
        raise Failed("a replayed transport message was delivered again (second echo reply)")
    # Reordered inside the window: each is new, so each is delivered once.
    later = [r.echo_request() for _ in range(3)]
    for e2 in later:
        e2.message = r.seal(kp, e2.packet)
    for e2 in reversed(later):
        r.send(e2.message, what=f"echo request seq {e2.seq} (sent out of order)")
    missing = list(later)
    deadline = r.now() + r.t(3.0)
    while missing and (m := r.receive(deadline - r.now())) is not None:
        missing = [e2 for e2 in missing if not r.is_reply(e2)(m)]
    if missing:
        raise Failed(f"no echo reply to reordered echo seq {missing[0].seq}")
    far = kp.send_counter + 20000
    forged = TRANSPORT_HEADER.pack(MESSAGE_TRANSPORT, kp.remote_index, far) + os.urandom(100)
    r.send(forged, what=f"forged transport, counter {far}, bad tag")
    _need_reply(r.ping(kp), "an echo request after the forged counter (window moved?)")
    return "replay dropped; reordered packets accepted; forged counter did not move the window"


@scenario("replay-initiation")
def replay_initiation(r: Runner) -> str:
    """Handshake replay: re-sending an initiation the target already accepted
    gets no response and leaves the session intact (the responder accepts only
    a strictly greater TAI64N timestamp)."""
    kp = r.initiate()
    first = r.last_initiation
    assert first is not None
    idx = int.from_bytes(first[4:8], "little")
    r.sleep(0.1)  # past the 20 ms flood limit: only the timestamp can reject it
    r.send(first, what="the accepted initiation again (replay)")
    m = r.wait_for(lambda x: x.kind == MESSAGE_RESPONSE and x.receiver == idx, r.t(2.0))
    if m is not None:
        raise Failed("the replayed initiation was answered with a new response")
    extra = ""
    if r.tunnel_ready:
        _need_reply(r.ping(kp), "an echo request on the session after the replay")
        extra = "; session still carries data"
    else:
        r.unchecked("that the session still carries data (needs the tunnel IPs)")
    return "replayed initiation ignored" + extra


@scenario("stale-timestamp")
def stale_timestamp(r: Runner) -> str:
    """Timestamps: after a handshake, initiations with an equal or older TAI64N
    (fresh ephemeral, valid macs) get no response, and a newer one still does."""
    r.initiate()
    accepted = r.last_accepted_stamp
    assert accepted is not None
    old = tai64n(r.wall_ns() - 3600 * 10**9)
    for label, stamp in (("equal", accepted), ("one hour older", old)):
        r.sleep(0.05)
        body, idx, _ = r.initiation_body(stamp=stamp)
        r.note(f"   initiation with a timestamp {label} than the accepted one:")
        if r.send_body(body, idx, timeout=r.t(1.5)) is not None:
            raise Failed(f"an initiation with a timestamp {label} was answered")
    r.sleep(0.05)
    r.initiate()
    return "equal and older timestamps ignored; a newer one accepted"


@scenario("initiation-rate")
def initiation_rate(r: Runner) -> str:
    """Per-peer flood limit: of two valid initiations from the same peer
    arriving back to back (distinct, increasing timestamps), only the first is
    answered; one sent 100 ms later is answered again (kernel and
    wireguard-go: at most one initiation per peer every 20 ms)."""
    # A handshake first: under load it leaves us a cookie for mac2.
    r.initiate()
    r.sleep(0.1)
    first, idx1 = r.initiation()
    second, idx2 = r.initiation()
    r.send(first, what=f"initiation (sender {idx1:#010x})")
    r.send(second, what=f"a second one at once (sender {idx2:#010x})")
    got = {m.receiver for m in r.collect(r.t(1.5)) if m.kind == MESSAGE_RESPONSE}
    if idx1 not in got and idx2 not in got:
        cookies = [m for m in r.history if m.kind == MESSAGE_COOKIE_REPLY]
        if cookies:
            raise Skipped("the target is under load (cookie replies); run it without load")
        raise Failed("neither initiation was answered")
    if idx1 in got and idx2 in got:
        raise Failed("both initiations were answered: no per-peer flood limit")
    r.sleep(0.1)
    r.initiate()
    which = "first" if idx1 in got else "second"
    return f"only the {which} of two back-to-back initiations answered; 100 ms later accepted"


# -- silence -----------------------------------------------------------------------------


@scenario("garbage")
def garbage(r: Runner) -> str:
    """Silence: malformed datagrams (wrong lengths for every type, random
    bodies, unknown types, forged transport on a live session) and a burst of
    4000 random handshake-sized packets get no answer at all, and the target
    still completes a valid handshake afterwards."""
    kp = r.initiate()
    samples = _garbage()
    samples.append(
        (
            "transport on the live session with a bad tag",
            TRANSPORT_HEADER.pack(MESSAGE_TRANSPORT, kp.remote_index, 5) + os.urandom(48),
        )
    )
    samples.append(
        (
            "keepalive-sized transport on the live session, bad tag",
            TRANSPORT_HEADER.pack(MESSAGE_TRANSPORT, kp.remote_index, 6) + os.urandom(16),
        )
    )
    for label, data in samples:
        r.send(data, what=f"{label} ({len(data)} B)")
    _expect_silence(r, r.t(2.0), f"{len(samples)} malformed datagrams")
    burst = [bytes([MESSAGE_INITIATION, 0, 0, 0]) + os.urandom(144) for _ in range(2000)]
    burst += [os.urandom(1 + i % 300) for i in range(2000)]
    n = _send_all(r, burst)
    r.note(f"-> burst of {n} random datagrams (half of them initiation-sized with type 1)")
    _expect_silence(r, r.t(3.0), "random datagrams of the burst")
    r.sleep(1.1)  # let an under-load state from the burst lapse
    r.initiate()
    extra = ""
    if r.tunnel_ready:
        _need_reply(r.ping(), "an echo request after the garbage")
        extra = ", and data flows"
    else:
        r.unchecked("that data still flows (needs the tunnel IPs)")
    return f"{len(samples)} malformed + {n} random datagrams ignored; handshake still works{extra}"


@scenario("reserved-bytes")
def reserved_bytes(r: Runner) -> str:
    """Framing: messages whose three reserved header bytes are not zero are
    dropped, even with a mac1 computed over them; the same initiation with
    zero reserved bytes is then accepted (the type is a little-endian u32)."""
    body, idx, _ = r.initiation_body()
    for pos in (1, 2, 3):
        bad = bytearray(body)
        bad[pos] = 0x5A
        r.send(r.add_macs(bytes(bad)), what=f"initiation with reserved byte {pos} = 0x5a")
    _expect_silence(r, r.t(1.5), "initiations with non-zero reserved bytes")
    m = r.send_body(body, idx)
    if m is None:
        raise Failed("the same initiation with zero reserved bytes was not answered")
    kp = r.complete(m)
    extra = ""
    if r.tunnel_ready:
        e = r.echo_request()
        msg = bytearray(r.seal(kp, e.packet))
        msg[2] = 0x01
        r.send(bytes(msg), what=f"echo request seq {e.seq} with reserved byte 2 = 0x01")
        if r.wait_for(r.is_reply(e), r.t(1.5)) is not None:
            raise Failed("a transport message with a non-zero reserved byte was delivered")
        msg[2] = 0
        r.send(bytes(msg), what=f"the same echo request seq {e.seq} with zero reserved bytes")
        _need_reply(r.wait_for(r.is_reply(e), r.t(3.0)), "the corrected transport message")
        extra = " (initiation and transport)"
    else:
        r.unchecked("transport messages with reserved bytes (needs the tunnel IPs)")
    return "non-zero reserved bytes dropped" + extra


@scenario("mac1-wrong")
def mac1_wrong(r: Runner) -> str:
    """mac1: an initiation whose mac1 is wrong (one bit flipped, keyed with
    another public key, all zero, random) gets no answer, not even a cookie
    reply; the same initiation with the right mac1 is then accepted."""
    body, idx, _ = r.initiation_body()
    good = mac(mac1_key(r.target_public), body)
    zero = bytes(MAC_LEN)
    variants = [
        ("one bit flipped", body + bytes([good[0] ^ 1]) + good[1:] + zero),
        ("keyed with our own public key", body + mac(mac1_key(r.our_public), body) + zero),
        ("all zero", body + zero + zero),
        ("random", body + os.urandom(MAC_LEN) + zero),
    ]
    for label, msg in variants:
        r.send(msg, what=f"initiation, mac1 {label}")
    _expect_silence(r, r.t(1.5), "initiations with a wrong mac1")
    m = r.send_body(body, idx)
    if m is None:
        raise Failed("the same initiation with the right mac1 was not answered")
    r.complete(m)
    return f"{len(variants)} wrong mac1 variants ignored; the right one accepted"


@scenario("low-order")
def low_order(r: Runner) -> str:
    """Low-order points: initiations whose ephemeral is one of the seven
    low-order points get no answer; peers configured with low-order public
    keys produce no traffic (kernel netns.sh)."""
    # A handshake first: under load it leaves us a cookie, so the forged
    # initiations carry a valid mac2 and reach the DH.
    r.initiate()
    r.sleep(0.05)  # past the per-peer 20 ms flood limit, which would hide a bug
    for point in LOW_ORDER_POINTS:
        msg, _ = _forge_low_order(r, point)
        r.send(msg, what=f"initiation with low-order ephemeral {point[:4].hex()}..")
    _expect_silence(r, r.t(1.5), "initiations with a low-order ephemeral")
    r.sleep(0.05)
    r.initiate()
    if r.control is None:
        r.unchecked("peers configured with low-order keys (needs a setup mode)")
        return "low-order ephemerals ignored"
    aux = r.local_endpoint("aux")
    refused = 0
    try:
        for point in LOW_ORDER_POINTS:
            try:
                r.control.set_peer(
                    PeerSpec(point, endpoint=aux, persistent_keepalive=1), fresh=True
                )
            except ControlError:
                refused += 1
        r.note(f"   configured {7 - refused} low-order peers with endpoint {aux}, keepalive 1")
        seen = [m for m in r.collect(r.t(3.0)) if m.via == "aux"]
    finally:
        for point in LOW_ORDER_POINTS:
            with contextlib.suppress(ControlError):
                r.control.remove_peer(point)
    if seen:
        raise Failed(f"{len(seen)} datagrams sent to low-order peers ({r.describe(seen[0])})")
    how = f", {refused} refused at configuration" if refused else ""
    return f"low-order ephemerals ignored; low-order peers sent nothing{how}"


# -- endpoints and timers ------------------------------------------------------------------


#: Copies of a forgery sent right behind an authenticated echo request.
_HIJACK_BURST: Final = 32
#: How often each forgery races an echo reply (the race is not certain).
_HIJACK_TRIES: Final = 12


def _forgeries(r: Runner, kp: Keypair, replay: bytes) -> list[tuple[str, bytes]]:
    """Packets anyone on the path can send without the session keys: none of
    them may move the target's endpoint for us."""
    hdr = TRANSPORT_HEADER.pack
    return [
        ("a replayed transport message", replay),
        (
            "transport with a bad tag",
            hdr(MESSAGE_TRANSPORT, kp.remote_index, 1 << 40) + os.urandom(48),
        ),
        (
            "a 32-byte keepalive-shaped forgery",
            hdr(MESSAGE_TRANSPORT, kp.remote_index, 1 << 41) + os.urandom(16),
        ),
        (
            "a 32-byte forgery for no session",
            hdr(MESSAGE_TRANSPORT, r.new_index(), 7) + os.urandom(16),
        ),
        ("an initiation with a bad mac1", bytes([MESSAGE_INITIATION, 0, 0, 0]) + os.urandom(144)),
    ]


@scenario("roaming", tunnel=True)
def roaming(r: Runner) -> str:
    """Roaming: after an authenticated packet from a new address:port, the
    target's replies go there; unauthenticated or replayed packets from yet
    another address (a replay, a bad tag, a 32-byte forgery, a bad-mac1
    initiation) do not move its endpoint: judged on the wire by where the
    target's next datagram arrives, and with a control also read back
    (whitepaper 2.1)."""
    kp = r.initiate()
    first = r.send_echo(kp, via="main")
    a = _need_reply(r.wait_for(r.is_reply(first), r.t(3.0)), "the echo from the main socket")
    b = _need_reply(r.ping(kp, via="roam"), "the echo sent from the second socket")
    if b.via != "roam":
        raise Failed(f"reply went to {b.via}, not to the new address the packet came from")
    checked = []
    readback = False  # whether the control can read the endpoint back
    if r.control is not None:
        try:
            ep = r.control.peer_endpoint(r.our_public)
        except NotImplementedError:
            pass
        else:
            if ep != r.local_endpoint("roam"):
                raise Failed(f"target's endpoint is {ep}, not {r.local_endpoint('roam')}")
            readback = True
            checked.append("endpoint read back")
    c = _need_reply(r.ping(kp, via="main"), "the echo sent from the main socket again")
    if c.via != "main" or a.via != "main":
        raise Failed("after roaming back, the reply did not return to the main socket")
    # The hijack race: an echo request from main and, right behind it, a burst
    # of one forgery from aux; the reply is built after some of them arrived,
    # so a target that lets a forgery move its endpoint sends it to aux.
    forged = _forgeries(r, kp, first.message)
    moved = []
    for what, data in forged:
        for _ in range(_HIJACK_TRIES):
            e = r.echo_request()
            e.message = r.seal(kp, e.packet)
            r.transmit(e.message, "main")
            for _ in range(_HIJACK_BURST):
                r.transmit(data, "aux")
            r.note(f"-> echo request seq {e.seq} via main, then {_HIJACK_BURST} x {what} via aux")
            reply = r.wait_for(r.is_reply(e), r.t(3.0))
            if reply is None:
                raise Failed(f"no echo reply after {what} from a third address")
            if reply.via != "main":
                moved.append(what)
                break
    if moved:
        # The next echo from main re-authenticated it each time, so each
        # forgery was tried on its own.
        raise Failed(
            f"unauthenticated packets from a third address moved the target's endpoint "
            f"(its echo reply went there): {'; '.join(moved)}"
        )
    checked.append("echo replies stayed on main after each forgery")
    # Deterministic: data from main, then every forgery from aux, then wait
    # for the passive keepalive and see where it lands.
    e = r.echo_request(reply=True)
    r.send_packet(e.packet, kp, what="unsolicited echo reply (data that gets no answer)")
    for what, data in forged:
        r.send(data, "aux", f"{what} from a third address")
    ka = r.wait_for(lambda m: m.keypair is kp and m.is_keepalive, KEEPALIVE_TIMEOUT + r.t(6.0))
    if ka is None:
        r.unchecked("where the target sends on its own after forgeries (no passive keepalive)")
    elif ka.via != "main":
        raise Failed(
            f"after forgeries from a third address the target's keepalive went to {ka.via}"
        )
    else:
        checked.append("its passive keepalive after all of them went to main")
    if readback:
        assert r.control is not None
        ep = r.control.peer_endpoint(r.our_public)
        if ep != r.local_endpoint("main"):
            raise Failed(f"unauthenticated packets moved the target's endpoint to {ep}")
        checked.append("endpoint read back unmoved")
    return f"replies followed the new address and came back ({'; '.join(checked)})"


@scenario("keepalive-passive", tunnel=True)
def keepalive_passive(r: Runner) -> str:
    """Passive keepalive: when the target received data and had nothing to send
    back, it sends one 32-byte keepalive about KEEPALIVE_TIMEOUT (10 s) later
    (whitepaper 6.5)."""
    kp = r.initiate()
    # An unsolicited echo *reply* is data the target's IP stack will not answer.
    e = r.echo_request(reply=True)
    r.send_packet(e.packet, kp, what="unsolicited echo reply (data that gets no answer)")
    sent = r.now()
    ka = r.wait_for(lambda m: m.keypair is kp and m.is_keepalive, KEEPALIVE_TIMEOUT + r.t(6.0))
    if ka is None:
        raise Failed(f"no keepalive within {KEEPALIVE_TIMEOUT + r.t(6.0):.0f} s after our data")
    delay = ka.at - sent
    if delay < KEEPALIVE_TIMEOUT - 1.0:
        raise Failed(f"keepalive after only {delay:.1f} s (KEEPALIVE_TIMEOUT is 10 s)")
    if len(ka.data) != 32:
        raise Failed(f"keepalive is {len(ka.data)} bytes, not 32")
    return f"32-byte keepalive {delay:.1f} s after our data"


@scenario("keepalive-persistent", control=True)
def keepalive_persistent(r: Runner) -> str:
    """Persistent keepalive: with an interval of 2 s set through the control,
    the target sends 32-byte keepalives on that schedule while both sides are
    otherwise silent (the first one at once)."""
    kp = r.initiate()
    assert r.control is not None
    r.drain(0.3, 2.0)
    start = r.now()
    r.control.set_keepalive(r.our_public, 2)
    got = [m for m in r.collect(7.5) if m.keypair is kp and m.is_keepalive]
    r.control.set_keepalive(r.our_public, 0)
    times = [m.at - start for m in got]
    shown = ", ".join(f"{t:.1f}" for t in times)
    if len(got) < 3:
        raise Failed(f"{len(got)} keepalives in 7.5 s with a 2 s interval (at {shown} s)")
    gaps = [b - a for a, b in itertools.pairwise(times)]
    if min(gaps) < 1.0 or max(gaps) > 4.5:
        raise Failed(f"keepalives at {shown} s: not every 2 s")
    if any(len(m.data) != 32 for m in got):
        raise Failed("a keepalive is not 32 bytes")
    return f"{len(got)} keepalives at {shown} s"


#: Retransmissions measured by retransmit-jitter, and the slack allowed
#: around REKEY_TIMEOUT + [0, REKEY_TIMEOUT_JITTER_MAX] (timer granularity).
_RETRIES: Final = 4
#: Gaps that differ by less than this show no jitter: timer noise on an idle
#: host is a few ms, while four gaps with a uniform 0-333 ms jitter span less
#: than 15 ms once in about 3,000 runs.
_MIN_JITTER_SPREAD: Final = 0.015
_EARLY_SLACK: Final = 0.05
_LATE_SLACK: Final = 0.25


def _unanswered_initiations(r: Runner, first: Inbound, count: int) -> list[Inbound]:
    """The target's next ``count`` initiations while nobody answers."""
    got = [first]
    for _ in range(count):
        nxt = r.wait_initiation(REKEY_TIMEOUT + REKEY_TIMEOUT_JITTER_MAX + r.t(2.0))
        if nxt is None:
            raise Failed(
                f"no retransmission within {REKEY_TIMEOUT + REKEY_TIMEOUT_JITTER_MAX + 2:.1f} s "
                f"of the initiation at +{got[-1].at - r.t0:.1f} s"
            )
        got.append(nxt)
    return got


@scenario("retransmit-jitter")
def retransmit_jitter(r: Runner) -> str:
    """Retransmission: an initiation that gets no answer is followed by a new
    one (fresh ephemeral) REKEY_TIMEOUT (5 s) plus a random jitter of up to
    1/3 s later; over four retries every gap lies in 5.0-5.333 s (with timer
    slack) and the gaps spread over at least 15 ms (whitepaper 6.1, 6.4)."""
    m, how = _target_initiates(r)
    if r.control is not None:
        r.control.set_keepalive(r.our_public, 0)  # only the retransmission timer now
    inits = _unanswered_initiations(r, m, _RETRIES)
    for a, b in itertools.pairwise(inits):
        if a.data[8:40] == b.data[8:40]:
            raise Failed("a retransmitted initiation reused the previous ephemeral key")
    gaps = [b.at - a.at for a, b in itertools.pairwise(inits)]
    shown = ", ".join(f"{g:.3f}" for g in gaps)
    lo = REKEY_TIMEOUT - _EARLY_SLACK
    hi = REKEY_TIMEOUT + REKEY_TIMEOUT_JITTER_MAX + r.t(_LATE_SLACK)
    if any(not lo <= g <= hi for g in gaps):
        raise Failed(f"retransmissions {shown} s apart: not REKEY_TIMEOUT + jitter (5.0-5.333 s)")
    spread = max(gaps) - min(gaps)
    if spread < _MIN_JITTER_SPREAD:
        raise Failed(f"retransmissions {shown} s apart: no jitter")
    return f"{_RETRIES} retransmissions ({how}) {shown} s apart (spread {spread * 1000:.0f} ms)"


@scenario("give-up", long=True)
def give_up(r: Runner) -> str:
    """Give-up (long): initiations nobody answers are retried for
    REKEY_ATTEMPT_TIME (90 s), then no more are sent (whitepaper 6.4).  The
    kernel and wireguard-go count 90 / 5 = 18 retries and give up when a 19th
    is due, so the last of 20 initiations goes out 19 x (5 s + jitter), up to
    101.3 s, after the first."""
    m, how = _target_initiates(r)
    if r.control is not None:
        r.control.set_keepalive(r.our_public, 0)
    last = m
    count = 1
    retries = int(REKEY_ATTEMPT_TIME / REKEY_TIMEOUT) + 1
    limit = retries * (REKEY_TIMEOUT + REKEY_TIMEOUT_JITTER_MAX) + r.t(1.0)
    while True:
        nxt = r.wait_initiation(REKEY_TIMEOUT + REKEY_TIMEOUT_JITTER_MAX + r.t(2.0))
        if nxt is None:
            break
        count += 1
        last = nxt
        if nxt.at - m.at > limit:
            raise Failed(
                f"still initiating {nxt.at - m.at:.1f} s after the first initiation "
                f"({count} sent; it should give up after {retries} retries, 90 s)"
            )
    span = last.at - m.at
    if span < REKEY_ATTEMPT_TIME - 1.0:
        raise Failed(f"gave up after only {span:.1f} s ({count} initiations)")
    _expect_silence_kind(r, r.t(10.0), MESSAGE_INITIATION, "an abandoned handshake")
    return f"{count} initiations ({how}) over {span:.1f} s, then none"


def _expect_silence_kind(r: Runner, duration: float, kind: int, what: str) -> None:
    late = [m for m in r.collect(duration) if m.kind == kind]
    if late:
        raise Failed(f"{what}: the target sent {len(late)} more (first {r.describe(late[0])[3:]})")


@scenario("reject-after-time", tunnel=True, long=True)
def reject_after_time(r: Runner) -> str:
    """Keypair expiry (long): once a session is REJECT_AFTER_TIME (180 s) old,
    the target sends nothing more on it (a keepalive it owes then needs a new
    handshake) and no longer accepts our data on it (whitepaper 6.2)."""
    kp = r.initiate()
    _need_reply(r.ping(kp), "an echo request on the fresh session")
    # Keep the target from rekeying on its own: we are the initiator, and we
    # send nothing until shortly before expiry.
    while r.now() - kp.created < REJECT_AFTER_TIME - 8.0:
        r.collect(min(5.0, REJECT_AFTER_TIME - 8.0 - (r.now() - kp.created)))
    # Data it will not answer: it owes a passive keepalive 10 s later, when
    # the session is past 180 s.
    e = r.echo_request(reply=True)
    r.send_packet(e.packet, kp, what="unsolicited echo reply (a keepalive is owed 10 s later)")
    wrong: list[Inbound] = []
    deadline = kp.created + REJECT_AFTER_TIME + KEEPALIVE_TIMEOUT + r.t(4.0)
    while (m := r.receive(deadline - r.now())) is not None:
        if m.keypair is kp and m.at - kp.created > REJECT_AFTER_TIME + r.t(0.2):
            wrong.append(m)
    if wrong:
        age = wrong[0].at - kp.created
        raise Failed(f"the target sent on a session {age:.1f} s old (REJECT_AFTER_TIME is 180 s)")
    late = r.send_echo(kp)
    if r.wait_for(r.is_reply(late), r.t(2.0)) is not None:
        raise Failed(f"data on a session {late.at - kp.created:.0f} s old was still delivered")
    return "nothing sent on, nor accepted on, the session after 180 s"


#: The whitepaper's REJECT_AFTER_MESSAGES (wireguard-go uses it); the kernel
#: (and wgpy) reject from U64_MAX - 8128 - 1, which is REJECT_AFTER_MESSAGES.
_WHITEPAPER_REJECT: Final = (1 << 64) - (1 << 13) - 1


@scenario("message-limit", tunnel=True)
def message_limit(r: Runner) -> str:
    """Receive-side message limit: authenticated transport messages with a
    counter at or above the limit (2^64 - 8130 for the kernel, the
    whitepaper's 2^64 - 2^13 - 1 for wireguard-go: at or above the larger one
    here) are not delivered, while one below both limits is.  Reports which
    of the two limits the target uses (whitepaper 5.4.6, 6.4)."""
    kp = r.initiate()
    _need_reply(r.ping(kp), "an echo request with a normal counter")
    for counter in (REJECT_AFTER_MESSAGES, REJECT_AFTER_MESSAGES + 1, (1 << 64) - 1):
        kp.send_counter = counter
        e = r.send_echo(kp)
        if r.wait_for(r.is_reply(e), r.t(1.0)) is not None:
            raise Failed(f"an echo request with counter 2^64 - {(1 << 64) - counter} was delivered")
    kp.send_counter = _WHITEPAPER_REJECT - 1
    _need_reply(r.ping(kp), "an echo request with counter 2^64 - 8194 (below every limit)")
    kp.send_counter = _WHITEPAPER_REJECT
    e = r.send_echo(kp)
    which = (
        "the kernel's limit (2^64 - 8193 delivered)"
        if r.wait_for(r.is_reply(e), r.t(1.0)) is not None
        else "the whitepaper's limit (2^64 - 8193 dropped)"
    )
    return f"counters from 2^64 - 8130 dropped, 2^64 - 8194 delivered; {which}"


@scenario("simultaneous-initiation", tunnel=True)
def simultaneous_initiation(r: Runner) -> str:
    """Simultaneous initiation: the moment the target initiates, we send our
    own initiation and then answer its one.  A peer has one handshake state,
    so the messages processed last decide which handshake completes; at
    least one must, data on it must be answered both ways, and the target
    must then settle (no further handshake for 3 s) (whitepaper 5.4)."""
    m, how = _target_initiates(r)
    body, idx, _ = r.initiation_body()
    r.send(r.add_macs(body), what=f"our initiation (sender {idx:#010x}) crossing the target's")
    # Two handshakes at once: answer the target's with a record of its own,
    # keeping ours waiting for its response.
    mine, r.hs = r.hs, Handshake(r.target_public, r.psk)
    r.hs.precompute(r.static)
    theirs = r.accept(m)
    r.hs = mine
    resp = r.wait_for(lambda x: x.kind == MESSAGE_RESPONSE and x.receiver == idx, r.t(2.0))
    ours = r.complete(resp) if resp is not None else None
    confirmed = r.wait_for(lambda x: x.keypair is theirs, r.t(1.5)) is not None
    if r.control is not None:
        r.control.set_keepalive(r.our_public, 0)
    if ours is None and not confirmed:
        raise Failed("neither of the two crossing handshakes completed")
    session = ours if ours is not None else theirs
    for _ in range(3):
        _need_reply(r.ping(session), "an echo request after the crossing handshakes")
    more = [x for x in r.collect(r.t(3.0)) if x.kind == MESSAGE_INITIATION]
    if more:
        raise Failed(f"the target started {len(more)} more handshakes after one completed")
    done = [w for w, ok in (("ours", ours is not None), ("its own", confirmed)) if ok]
    return f"{' and '.join(done)} completed ({how}); data flows; no further handshake"


@scenario("key-confirmation", tunnel=True)
def key_confirmation(r: Runner) -> str:
    """Key confirmation: as responder, the target sends nothing on a new
    session before our first message on it arrives; until then its replies
    go on the previous session, and data it has waiting (with a setup: a
    persistent keepalive switched on) is not sent on the unconfirmed one
    (whitepaper 5.4.7: the responder waits for the initiator's first
    transport message)."""
    old = r.initiate()
    _need_reply(r.ping(old), "an echo request on the first session")
    m, _ = r.initiate_raw()
    new = r.complete(m, confirm=False)
    reply = _need_reply(r.ping(old), "an echo request on the first session after a new handshake")
    if reply.keypair is new:
        raise Failed("the target answered on the new session before we confirmed it")
    checked = "replies stayed on the old session"
    if r.control is not None:
        r.fresh()
        m, _ = r.initiate_raw()
        fresh = r.complete(m, confirm=False)
        r.control.set_keepalive(r.our_public, 1)  # it now has a keepalive to send
        early = r.wait_for(lambda x: x.keypair is fresh, r.t(2.5))
        r.control.set_keepalive(r.our_public, 0)
        if early is not None:
            raise Failed("with data waiting, the target sent on a session we had not confirmed")
        r.send(r.seal(fresh, b""), what="keepalive 32 B (key confirmation, late)")
        if r.wait_for(lambda x: x.keypair is fresh, r.t(3.0)) is None:
            raise Failed("after our late confirmation the target never used the new session")
        checked += "; a waiting keepalive went out only after our confirmation"
    else:
        r.unchecked("with data waiting at the target (needs a setup mode)")
    return checked


def _uapi_blocks(text: str) -> tuple[dict[str, str], list[dict[str, list[str]]], int | None]:
    """Parse a get response: device keys, peer blocks (key -> values), errno."""
    device: dict[str, str] = {}
    peers: list[dict[str, list[str]]] = []
    errno = None
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue
        if key == "errno":
            errno = int(value)
        elif key == "public_key":
            peers.append({"public_key": [value]})
        elif peers:
            peers[-1].setdefault(key, []).append(value)
        else:
            device[key] = value
    return device, peers, errno


def _errno(text: str) -> int | None:
    return _uapi_blocks(text)[2]


#: Peers and allowed IPs per peer of the big configuration.
_BIG_PEERS: Final = 200
_BIG_IPS: Final = 8


@scenario("uapi", control=True)
def uapi(r: Runner) -> str:
    """UAPI (with --setup-uapi): last_handshake_time_sec is Unix time;
    update_only creates nothing; allowed_ip adds and replace_allowed_ips
    replaces; remove removes; a malformed value gets errno=-22 (EINVAL) and
    what was configured stays; 200 peers with 1,600 allowed IPs set in one
    request are read back whole (the cross-platform UAPI, wireguard-go's
    device/uapi.go)."""
    ctl = r.control
    if not isinstance(ctl, UapiControl):
        raise Skipped("needs --setup-uapi")
    r.initiate()
    r.collect(r.t(0.3))
    _, peers, errno = _uapi_blocks(ctl.raw("get=1\n\n"))
    if errno != 0:
        raise Failed(f"get answered errno={errno}")
    ours = [p for p in peers if p["public_key"] == [r.our_public.hex()]]
    if not ours:
        raise Failed("our peer is missing from get")
    sec = int(ours[0].get("last_handshake_time_sec", ["0"])[0])
    nsec = int(ours[0].get("last_handshake_time_nsec", ["0"])[0])
    now = r.wall_ns() / 1e9
    if abs(sec + nsec / 1e9 - now) > 10 or not 0 <= nsec < 10**9:
        raise Failed(f"last_handshake_time {sec}.{nsec:09d} is not the Unix time of the handshake")
    key = public_key(clamp(os.urandom(KEY_LEN))).hex()

    def peer_ips() -> list[str] | None:
        for p in _uapi_blocks(ctl.raw("get=1\n\n"))[1]:
            if p["public_key"] == [key]:
                return sorted(p.get("allowed_ip", []))
        return None

    def set_(*lines: str) -> int | None:
        return _errno(ctl.raw("set=1\n" + "".join(f"{x}\n" for x in lines) + "\n"))

    if set_(f"public_key={key}", "update_only=true", "persistent_keepalive_interval=7") != 0:
        raise Failed("set with update_only on an unknown peer did not answer errno=0")
    if peer_ips() is not None:
        raise Failed("update_only created a peer")
    set_(f"public_key={key}", "allowed_ip=10.200.0.1/32")
    set_(f"public_key={key}", "allowed_ip=10.200.0.2/32")
    if peer_ips() != ["10.200.0.1/32", "10.200.0.2/32"]:
        raise Failed(f"allowed_ip without replace should add: {peer_ips()}")
    set_(f"public_key={key}", "replace_allowed_ips=true", "allowed_ip=10.200.0.3/32")
    if peer_ips() != ["10.200.0.3/32"]:
        raise Failed(f"replace_allowed_ips=true should replace: {peer_ips()}")
    bad = set_(f"public_key={key}", "persistent_keepalive_interval=lots")
    if bad != -22:
        raise Failed(f"a malformed persistent_keepalive_interval got errno={bad}, not -22 (EINVAL)")
    if peer_ips() != ["10.200.0.3/32"]:
        raise Failed("a rejected set changed what was configured")
    set_(f"public_key={key}", "remove=true")
    if peer_ips() is not None:
        raise Failed("remove=true left the peer in place")
    # A big configuration in one request, read back whole.
    big = [os.urandom(32) for _ in range(_BIG_PEERS)]
    lines: list[str] = []
    for n, k in enumerate(big):
        lines.append(f"public_key={k.hex()}")
        lines += [f"allowed_ip=10.{201 + n // 250}.{n % 250}.{i}/32" for i in range(_BIG_IPS)]
    try:
        if (e := set_(*lines)) != 0:
            raise Failed(f"a set of {_BIG_PEERS} peers answered errno={e}")
        _, got, errno = _uapi_blocks(ctl.raw("get=1\n\n"))
        have = {p["public_key"][0]: len(p.get("allowed_ip", [])) for p in got}
        missing = [k for k in big if have.get(k.hex()) != _BIG_IPS]
        if errno != 0 or missing:
            raise Failed(f"get returned {len(missing)} of {_BIG_PEERS} big-config peers incomplete")
    finally:
        set_(*[x for k in big for x in (f"public_key={k.hex()}", "remove=true")])
    return (
        "last_handshake_time is Unix time; update_only, replace_allowed_ips, remove and "
        f"errno=-22 as specified; {_BIG_PEERS} peers x {_BIG_IPS} allowed IPs read back"
    )


# -- load --------------------------------------------------------------------------------------


#: Genuine handshakes made during the junk flood, and how long each may take.
_JUNK_HANDSHAKES: Final = 3
_JUNK_ANSWER_WITHIN: Final = 1.0


@scenario("junk-flood")
def junk_flood(r: Runner) -> str:
    """Keyless junk: while initiations with a wrong mac1 (which anyone can
    send, no key needed) flood the target from another address, each genuine
    initiation is answered within 1 s by a response, never a cookie reply:
    junk must cost no more than the mac1 check, so it may neither count toward
    "under load" nor crowd the genuine handshakes out (whitepaper 5.3)."""
    junk = [bytes([MESSAGE_INITIATION, 0, 0, 0]) + os.urandom(144) for _ in range(512)]
    latencies: list[float] = []
    pending: dict[int, float] = {}
    problem: list[str] = []

    def step(elapsed: float) -> None:
        now = r.now()
        for idx, at in list(pending.items()):
            if now - at > _JUNK_ANSWER_WITHIN:
                problem.append(
                    f"no answer within {_JUNK_ANSWER_WITHIN:.0f} s to initiation {idx:#010x}"
                )
                raise _Stop
        if not pending and elapsed >= 0.5 * (len(latencies) + 1):
            body, idx, _ = r.initiation_body()
            msg = r.add_macs(body)
            r.transmit(msg, "main")
            pending[idx] = r.now()

    def answered(m: Inbound) -> bool:
        if m.via == "aux" and not m.background:
            problem.append(f"junk with a wrong mac1 was answered ({r.describe(m)[3:]})")
            return True
        if m.receiver not in pending or m.kind not in (MESSAGE_RESPONSE, MESSAGE_COOKIE_REPLY):
            return False
        at = pending.pop(m.receiver)
        if m.kind == MESSAGE_COOKIE_REPLY:
            problem.append("a genuine initiation got a cookie reply: junk counted toward load")
            return True
        latencies.append(m.at - at)
        r.complete(m)
        return len(latencies) >= _JUNK_HANDSHAKES

    try:
        sent, secs, _ = r.flood(junk, seconds=r.t(2.0 + _JUNK_HANDSHAKES), step=step, stop=answered)
    except _Stop:
        sent, secs = -1, 0.0
    shown = ", ".join(f"{x * 1000:.1f}" for x in latencies)
    r.note(f"-> junk flood (wrong mac1) from aux; genuine handshakes answered in [{shown}] ms")
    if problem:
        raise Failed(problem[0] + (f" (answered before: [{shown}] ms)" if latencies else ""))
    if len(latencies) < _JUNK_HANDSHAKES:
        raise Failed(f"only {len(latencies)} of {_JUNK_HANDSHAKES} genuine handshakes completed")
    _expect_silence(r, r.t(0.5), "junk initiations")
    return (
        f"{sent} junk initiations in {secs:.1f} s ({sent / max(secs, 1e-9):.0f}/s); genuine "
        f"handshakes answered in [{shown}] ms, no cookie reply"
    )


class _Stop(Exception):
    """Ends a flood from inside its step once the verdict is known."""


def _flood_for_cookie(r: Runner, seconds: float) -> tuple[Inbound | None, bytes, int, float]:
    """Send valid-mac1 initiations (bounded like every flood) until a cookie
    reply to them comes back; returns (reply, the flood message, count,
    seconds)."""
    msg, idx = _junk_initiation(r)
    sent, secs, reply = r.flood(
        [msg],
        via="main",
        seconds=seconds,
        stop=lambda m: m.kind == MESSAGE_COOKIE_REPLY and m.receiver == idx,
    )
    return reply, msg, sent, secs


@scenario("cookie-under-load")
def cookie_under_load(r: Runner) -> str:
    """Cookies: flooded with valid-mac1 initiations the target comes under load
    and answers with a 64-byte cookie reply bound to our mac1; while still
    under load, an initiation with mac2 computed from that cookie completes
    the handshake (whitepaper 5.4.7)."""
    confirmed = False
    floods = []
    kp: Keypair | None = None
    for _ in range(3):
        reply, flood, sent, secs = _flood_for_cookie(r, 10.0 * r.config.timeout_scale)
        floods.append(f"{sent} in {secs:.2f} s")
        r.note(f"-> flood of {sent} valid-mac1 initiations in {secs:.2f} s ({sent / secs:.0f}/s)")
        if reply is None:
            raise Failed(f"no cookie reply during a flood of {sent} initiations in {secs:.1f} s")
        r.note(r.describe(reply) + " (first cookie reply)")
        if len(reply.data) != COOKIE_REPLY_SIZE:  # pragma: no cover - framing guarantees it
            raise Failed("cookie reply is not 64 bytes")
        cr = MessageCookieReply.parse(reply.data)
        ad = flood[MAC1_OFFSET_INITIATION : MAC1_OFFSET_INITIATION + MAC_LEN]
        try:
            cookie = xaead_decrypt(cookie_key(r.target_public), cr.nonce, cr.encrypted_cookie, ad)
        except CryptoError:
            raise Failed("the cookie reply does not decrypt with the mac1 we sent") from None
        # Let the target work through its queue (it answers the rest of the
        # flood with cookie replies), then act within its one-second
        # under-load hold: a control initiation without mac2 must still get a
        # cookie reply, ours with mac2 a response.
        with r.quietly():
            backlog = r.drain(0.15, 10.0)
        r.note(f"<- {backlog} more datagrams (cookie replies) until the target went quiet")
        control, control_idx = _junk_initiation(r)
        body, idx, _ = r.initiation_body()
        mac1 = mac(mac1_key(r.target_public), body)
        real = body + mac1 + mac(cookie, body + mac1)
        mark = len(r.history)
        r.send(control, what="control initiation without mac2 (unknown static key)")
        r.send(real, what=f"initiation with mac2 from the cookie (sender {idx:#010x})")
        m = r.wait_for(r.answers(idx), r.t(5.0))
        if m is None:
            r.note("   no answer to the initiation with mac2 (dropped under load?); again")
            r.drain(0.5, 15.0)
            continue
        if m.kind == MESSAGE_COOKIE_REPLY:
            raise Failed("the initiation with a valid mac2 got another cookie reply")
        r.collect(r.t(0.3))
        confirmed = any(
            x.kind == MESSAGE_COOKIE_REPLY and x.receiver == control_idx for x in r.history[mark:]
        )
        kp = r.complete(m)
        if confirmed:
            break
        r.note("   the control initiation got no cookie reply: load had ended; again")
        r.drain(0.5, 15.0)
    if kp is None:
        raise Failed("no answer to initiations carrying a valid mac2 in three attempts")
    if r.tunnel_ready:
        _need_reply(r.ping(kp), "an echo request on the session made with mac2")
    else:
        r.unchecked("data on the session made with mac2 (needs the tunnel IPs)")
    r.drain(1.5, 30.0)  # let the target leave the under-load state
    how = "mac2 accepted under load" if confirmed else "load not confirmed at completion"
    return f"cookie reply after a flood of {floods[-1]}; handshake completed ({how})"


@scenario("cookie-initiator")
def cookie_initiator(r: Runner) -> str:
    """Cookies, target as initiator: it ignores a cookie reply not bound to the
    mac1 it sent, and after genuine ones its next initiation (no sooner than
    REKEY_TIMEOUT) carries mac2 = MAC(cookie, message), with which the
    handshake completes; cookie replies from another address do not move its
    endpoint.  Reports which of two replies for one mac1 it kept (whitepaper
    5.4.4, 5.4.7)."""
    m, _ = _target_initiates(r)
    sender = int.from_bytes(m.data[4:8], "little")
    off = MAC1_OFFSET_INITIATION
    # A cookie reply sealed with the wrong associated data must be ignored.
    nonce = os.urandom(24)
    bogus = xaead_encrypt(cookie_key(r.our_public), nonce, os.urandom(MAC_LEN), bytes(MAC_LEN))
    r.send(
        MessageCookieReply(sender, nonce, bogus).pack(), what="cookie reply NOT bound to its mac1"
    )
    nxt = r.wait_initiation(REKEY_TIMEOUT + r.t(3.0))
    if nxt is None:
        raise Failed("the target did not retransmit its initiation after REKEY_TIMEOUT")
    if nxt.data[off + MAC_LEN :] != bytes(MAC_LEN):
        raise Failed("the target used a cookie from a reply that was not bound to its mac1")
    # Now two genuine cookie replies bound to the mac1 of that initiation,
    # with different cookies.  Either may be used: the kernel (and wgpy) take
    # one reply per message sent, wireguard-go takes each valid one.
    ad = nxt.data[off : off + MAC_LEN]
    sender = int.from_bytes(nxt.data[4:8], "little")
    cookies = [os.urandom(MAC_LEN), os.urandom(MAC_LEN)]
    for n, cookie in enumerate(cookies, 1):
        nonce = os.urandom(24)
        sealed = xaead_encrypt(cookie_key(r.our_public), nonce, cookie, ad)
        r.send(
            MessageCookieReply(sender, nonce, sealed).pack(),
            "aux",
            f"cookie reply {n} for its mac1, from another address",
        )
    third = r.wait_initiation(REKEY_TIMEOUT + r.t(3.0))
    if third is None:
        raise Failed("no initiation from the target after our cookie replies")
    gap = third.at - nxt.at
    macs = [mac(cookie, third.data[: off + MAC_LEN]) for cookie in cookies]
    got = third.data[off + MAC_LEN :]
    if got not in macs:
        raise Failed("the initiation after our cookie replies does not carry mac2 from a cookie")
    if gap < REKEY_TIMEOUT - 0.5:
        raise Failed(f"the target re-initiated {gap:.1f} s after the previous initiation")
    if third.via != "main":
        raise Failed("a cookie reply from another address moved the target's endpoint")
    which = "the first (one reply per mac1)" if got == macs[0] else "the second (latest reply)"
    _accept_and_confirm(r, third)
    if r.control is not None:
        r.control.set_keepalive(r.our_public, 0)
    return (
        f"bogus cookie ignored; of two cookie replies {which} used for mac2 "
        f"{gap:.1f} s later; handshake completed"
    )


@scenario("rekey", tunnel=True, long=True)
def rekey(r: Runner) -> str:
    """Rekey (long): on a session the target initiated, the target starts a new
    handshake once it sends on a keypair older than REKEY_AFTER_TIME (120 s);
    data continues on the new session."""
    m, _ = _target_initiates(r)
    kp = _accept_and_confirm(r, m)
    if r.control is not None:
        r.control.set_keepalive(r.our_public, 0)
    start = kp.created
    limit = REKEY_AFTER_TIME + r.t(30.0)
    while r.now() - start < limit:
        r.send_echo(kp)
        init = r.wait_for(lambda x: x.kind == MESSAGE_INITIATION, 2.0)
        if init is None:
            continue
        age = init.at - start
        if age < REKEY_AFTER_TIME - 5.0:
            raise Failed(f"the target re-initiated after only {age:.1f} s")
        new = _accept_and_confirm(r, init)
        _need_reply(r.ping(new), "an echo request on the new session")
        return f"target re-initiated {age:.1f} s into the session; data continues on the new one"
    raise Failed(f"no new handshake from the target within {limit:.0f} s of the session")
