"""Every constant wgpy uses, in two groups.

Section 1 holds the values fixed by the WireGuard protocol (whitepaper names;
the kernel's ``messages.h`` and wireguard-go's ``device/constants.go`` agree on
them unless noted).  Section 2 holds wgpy's own tunables: changing one changes
behaviour or resource use but never the wire format.
"""

from __future__ import annotations

from typing import Final

# ---------------------------------------------------------------------------
# Section 1: protocol constants
# ---------------------------------------------------------------------------

#: Noise protocol name, hashed to form the initial chaining key (whitepaper 5.4).
CONSTRUCTION: Final = b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s"
#: Prologue mixed into the handshake hash (whitepaper 5.4).
IDENTIFIER: Final = b"WireGuard v1 zx2c4 Jason@zx2c4.com"
#: Label for the mac1 key: HASH(LABEL_MAC1 || responder static public key).
LABEL_MAC1: Final = b"mac1----"
#: Label for the cookie-reply encryption key.
LABEL_COOKIE: Final = b"cookie--"

KEY_LEN: Final = 32  # X25519 keys, symmetric keys, hashes
HASH_LEN: Final = 32  # BLAKE2s-256
MAC_LEN: Final = 16  # keyed BLAKE2s-128 (mac1, mac2, cookie)
AEAD_TAG_LEN: Final = 16  # Poly1305 tag
TIMESTAMP_LEN: Final = 12  # TAI64N
COOKIE_NONCE_LEN: Final = 24  # XChaCha20 nonce

# Message types: the first byte; the next three must be zero (whitepaper 5.4).
MESSAGE_INITIATION: Final = 1
MESSAGE_RESPONSE: Final = 2
MESSAGE_COOKIE_REPLY: Final = 3
MESSAGE_TRANSPORT: Final = 4

# Exact wire sizes of the handshake messages; transport has a minimum.
INITIATION_SIZE: Final = 148
RESPONSE_SIZE: Final = 92
COOKIE_REPLY_SIZE: Final = 64
TRANSPORT_HEADER_SIZE: Final = 16  # type(4) receiver(4) counter(8)
TRANSPORT_MIN_SIZE: Final = TRANSPORT_HEADER_SIZE + AEAD_TAG_LEN  # a keepalive
#: Bytes a transport message adds to its (padded) plaintext.
TRANSPORT_OVERHEAD: Final = TRANSPORT_HEADER_SIZE + AEAD_TAG_LEN

#: Sending counter value after which a new handshake is started.
REKEY_AFTER_MESSAGES: Final = 1 << 60
#: Width of the anti-replay window: 8192 bits minus one 64-bit word, as the
#: kernel and wireguard-go use on 64-bit machines (RFC 6479 ring).
COUNTER_WINDOW_SIZE: Final = 8192 - 64
#: Counters at or above this are never sent nor accepted.  Derived from the
#: window as the kernel does (U64_MAX - window - 1), which leaves headroom so
#: the window arithmetic cannot overflow.
REJECT_AFTER_MESSAGES: Final = (1 << 64) - 1 - COUNTER_WINDOW_SIZE - 1

REKEY_AFTER_TIME: Final = 120.0  # initiator rekeys when sending on an older keypair
REJECT_AFTER_TIME: Final = 180.0  # keypair unusable in both directions
REKEY_ATTEMPT_TIME: Final = 90.0  # give up retrying a handshake after this
REKEY_TIMEOUT: Final = 5.0  # retransmit an unanswered initiation; min spacing
KEEPALIVE_TIMEOUT: Final = 10.0  # passive keepalive after receiving data
#: Retransmissions allowed before giving up (kernel MAX_TIMER_HANDSHAKES).
MAX_TIMER_HANDSHAKES: Final = int(REKEY_ATTEMPT_TIME / REKEY_TIMEOUT)
#: Random extra delay added to handshake retransmissions, in seconds.
REKEY_TIMEOUT_JITTER_MAX: Final = 0.333
#: Receive-side rekey by the original initiator (180 - 10 - 5 = 165 s).
REKEY_ON_RECEIVE_AGE: Final = REJECT_AFTER_TIME - KEEPALIVE_TIMEOUT - REKEY_TIMEOUT
#: Key material is erased this long after the last session was derived.
ZERO_KEY_MATERIAL_AFTER: Final = REJECT_AFTER_TIME * 3

#: Age at which the responder's cookie secret is replaced.
COOKIE_SECRET_MAX_AGE: Final = 120.0
#: Allowance for latency: a stored cookie is used only while younger than
#: COOKIE_SECRET_MAX_AGE - COOKIE_SECRET_LATENCY (the kernel's rule).
COOKIE_SECRET_LATENCY: Final = 5.0

#: Per-peer initiation flood limit: initiations closer together are dropped.
INITIATIONS_PER_SECOND: Final = 50
MIN_INITIATION_INTERVAL: Final = 1.0 / INITIATIONS_PER_SECOND

#: Plaintext is padded to a multiple of this, capped by the MTU.
MESSAGE_PADDING_MULTIPLE: Final = 16

#: Token bucket of the handshake rate limiter (kernel ratelimiter.c).
RATELIMIT_PACKETS_PER_SECOND: Final = 20
RATELIMIT_PACKETS_BURSTABLE: Final = 5

#: TAI64N label base: 2^62 + 10 (TAI - UTC offset as the kernel uses it).
TAI64_BASE: Final = (1 << 62) + 10
#: Nanoseconds are rounded down to a multiple of this (timestamp whitening).
TAI64N_WHITENING_MASK: Final = (1 << 24) - 1

# Cross-platform UAPI (wireguard.com/xplatform): error numbers a response
# carries, negated (``errno=-22``).  wireguard-go writes the Linux values on
# Linux and on Windows alike, so these are fixed numbers, not ``errno.*``.
UAPI_EIO: Final = 5  # reading or writing the connection failed
UAPI_EINVAL: Final = 22  # bad key, bad value, unknown key
UAPI_ENOANO: Final = 55  # any other (internal) error
UAPI_EPROTO: Final = 71  # a line without '='
UAPI_EADDRINUSE: Final = 98  # binding listen_port (or setting fwmark) failed

# ---------------------------------------------------------------------------
# Section 2: wgpy tunables
# ---------------------------------------------------------------------------

#: Default TUN MTU (wireguard-go and wg-quick use 1420).
DEFAULT_MTU: Final = 1420
#: Packets held per peer while no session exists (kernel MAX_STAGED_PACKETS).
MAX_STAGED_PACKETS: Final = 128
#: Handshake messages examined at all (mac1, cookie replies, DH) per second,
#: and the burst allowed; beyond that they are dropped unexamined, as the
#: kernel drops handshakes when its 4096-entry queue is full.  4096/s is
#: about what one core here completes (~240 µs of DH and hashing each), so a
#: genuine burst is answered at full speed while a flood cannot take more
#: than that core's share of the loop the data path shares.
HANDSHAKE_BUDGET_PER_SECOND: Final = 4096
HANDSHAKE_BUDGET_BURST: Final = 512
#: The device is under load (every handshake needs a cookie) once the budget
#: holds fewer tokens than this: more than 256 valid-mac1 messages beyond the
#: sustained rate arrived recently.  The kernel and wireguard-go go under
#: load when their handshake queue holds 512 or 128 entries; the sans-IO core
#: has no queue, so the budget's deficit stands for its depth.  A runtime that
#: has a queue (the handshake socket) also reports it: see
#: ``Device.handshake_backlog`` and :data:`UNDER_LOAD_BACKLOG`.
UNDER_LOAD_BUDGET_LEFT: Final = 256
#: Valid-mac1 handshake messages read in one wakeup, with more still queued
#: behind them, that put the device under load (wireguard-go: 1024/8 queued).
UNDER_LOAD_BACKLOG: Final = 128
#: How long "under load" persists after the last overload observation.
UNDER_LOAD_AFTER_TIME: Final = 1.0
#: Most peers a device holds (wireguard-go MaxPeers).
MAX_PEERS: Final = 1 << 20
#: Rate-limiter table cap; a new source is refused when the table is full.
RATELIMIT_MAX_ENTRIES: Final = 65536
#: Idle rate-limiter entries are collected after this many seconds.
RATELIMIT_GC_INTERVAL: Final = 1.0
#: Destination-to-peer cache entries kept before the cache is cleared.
ROUTE_CACHE_MAX: Final = 4096
#: Packets (TUN) or datagrams (UDP) drained per ready descriptor in one batch.
IO_BATCH_SIZE: Final = 64
#: Requested SO_RCVBUF/SO_SNDBUF of the UDP sockets (wireguard-go: 7 MiB).
UDP_SOCKET_BUFFER_SIZE: Final = 7 << 20
#: Random ports tried for listen port 0 until IPv4 and IPv6 both bind
#: (wireguard-go tries 100).
UDP_BIND_PORT_ATTEMPTS: Final = 100
#: Datagrams merged into one UDP_SEGMENT send (the kernel's UDP_MAX_SEGMENTS).
UDP_GSO_MAX_SEGMENTS: Final = 64
#: Whether TUN write coalescing first verifies each packet's TCP/UDP
#: checksum (a merged super-packet is trusted by the kernel).  Off: every
#: packet written to the TUN was authenticated by Poly1305 end to end, and
#: the kernel's own WireGuard marks decrypted packets CHECKSUM_UNNECESSARY
#: for the same reason (receive.c, wg_packet_consume_data_done), so a
#: checksum error here could only come from the authenticated peer itself.
TUN_GRO_VERIFY_CHECKSUMS: Final = False
#: Where UAPI sockets live: ``DIR/NAME.sock`` (wireguard-go, wg).
UAPI_SOCKET_DIRECTORY: Final = "/var/run/wireguard"
#: Seconds a client may stay silent in the middle of a UAPI ``set`` (which
#: holds the operation lock) before it gets EIO and is disconnected.
UAPI_SET_IDLE_TIMEOUT: Final = 10.0
#: Longest UAPI request line accepted (without its newline), the limit of
#: wireguard-go's line scanner; a longer line fails the set with EIO and
#: ends the connection, so a client cannot make the server buffer without end.
UAPI_MAX_LINE: Final = 64 * 1024
#: Set lines applied per hold of the interface lock, so a long ``setconf``
#: never stalls the packet path for its whole duration.
UAPI_SET_BATCH: Final = 1024
