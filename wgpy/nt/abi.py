"""The WireGuardNT ``wireguard.h`` ABI: ctypes layouts, enums, error codes and a codec.

Everything here mirrors the binary interface of ``wireguard.dll`` on 64-bit Windows
(x64 and ARM64 share one layout); the facts are collected in
``shared/reference/wireguard-h-abi.md`` sections 1 and 3.

Three groups of names:

* ctypes structures with the exact Windows layout (``WIREGUARD_INTERFACE`` is 80 bytes,
  ``WIREGUARD_PEER`` 136, ``WIREGUARD_ALLOWED_IP`` 24, ``SOCKADDR_INET`` 28).  The
  header declares the three WireGuard structs ``ALIGNED(8)``; ctypes on Python 3.11 has
  no alignment attribute, so each of them starts with a zero-length ``c_uint64`` array,
  which gives the struct 8-byte alignment and the tail padding the C compiler adds.
* the enums, flags and Win32 error codes the driver uses, as ``IntEnum``/``IntFlag``,
  with the header's upper-case names as module-level aliases.
* a pure-Python codec for the configuration buffer that ``WireGuardSetConfiguration``
  takes and ``WireGuardGetConfiguration`` fills: :func:`pack_configuration` and
  :func:`parse_configuration`.  The parser performs the structural checks the driver
  performs, in the driver's order, and raises :class:`AbiError` with the Win32 error the
  driver would report.

On this ABI ``AF_INET6`` is 23 (the Windows value), not the host's ``socket.AF_INET6``.
Ports inside ``SOCKADDR_IN``/``SOCKADDR_IN6`` are in network byte order; the
interface ``ListenPort`` is in host (little-endian) order.
"""

from __future__ import annotations

import ctypes
import ipaddress
import struct
import uuid
from dataclasses import dataclass
from enum import IntEnum, IntFlag
from typing import Final

from wgpy.win32 import IF_TYPE_PROP_VIRTUAL, MAX_ADAPTER_NAME, ErrorCode

__all__ = [
    "AF_INET",
    "AF_INET6",
    "ALLOWED_IP_SIZE",
    "FILETIME_UNIX_EPOCH",
    "GUID",
    "IF_TYPE_PROP_VIRTUAL",
    "IN6_ADDR",
    "INTERFACE_SIZE",
    "IN_ADDR",
    "MAX_ADAPTER_NAME",
    "NET_LUID",
    "PEER_SIZE",
    "SOCKADDR_IN",
    "SOCKADDR_IN6",
    "SOCKADDR_INET",
    "WIREGUARD_ALLOWED_IP",
    "WIREGUARD_FUNCTIONS",
    "WIREGUARD_INTERFACE",
    "WIREGUARD_KEY_LENGTH",
    "WIREGUARD_PEER",
    "AbiError",
    "AdapterLogState",
    "AdapterState",
    "AllowedIPConfig",
    "AllowedIPFlag",
    "ErrorCode",
    "InterfaceConfig",
    "InterfaceFlag",
    "LoggerLevel",
    "PeerConfig",
    "PeerFlag",
    "configuration_size",
    "driver_version",
    "filetime_from_unix_ns",
    "filetime_to_unix_ns",
    "net_luid_fields",
    "net_luid_value",
    "pack_configuration",
    "parse_configuration",
    "split_driver_version",
]

#: The twelve functions of wireguard.h, in the header's order: the one list
#: the Python API, the C library and the DLL binding are checked against.
WIREGUARD_FUNCTIONS: Final = (
    "WireGuardCreateAdapter",
    "WireGuardOpenAdapter",
    "WireGuardCloseAdapter",
    "WireGuardDeleteDriver",
    "WireGuardGetAdapterLUID",
    "WireGuardGetRunningDriverVersion",
    "WireGuardSetLogger",
    "WireGuardSetAdapterLogging",
    "WireGuardSetAdapterState",
    "WireGuardGetAdapterState",
    "WireGuardSetConfiguration",
    "WireGuardGetConfiguration",
)

# ---------------------------------------------------------------------------
# Constants
# ---------------------------------------------------------------------------

#: Length of every key in the ABI (Curve25519 keys and the preshared key).
WIREGUARD_KEY_LENGTH: Final = 32
#: Windows address families.  AF_INET6 is 23 on Windows (Linux uses 10).
AF_INET: Final = 2
AF_INET6: Final = 23
#: FILETIME of 1970-01-01T00:00:00Z (100 ns ticks since 1601-01-01).
FILETIME_UNIX_EPOCH: Final = 116_444_736_000_000_000

_U16_MAX: Final = 0xFFFF
_U32_MAX: Final = 0xFFFF_FFFF
_U64_MAX: Final = 0xFFFF_FFFF_FFFF_FFFF


# ---------------------------------------------------------------------------
# Enums, flags and error codes
# ---------------------------------------------------------------------------


class LoggerLevel(IntEnum):
    """``WIREGUARD_LOGGER_LEVEL``: the level passed to the logger callback."""

    INFO = 0
    WARN = 1
    ERR = 2


class AdapterLogState(IntEnum):
    """``WIREGUARD_ADAPTER_LOG_STATE``: whether driver log lines reach the callback."""

    OFF = 0
    ON = 1
    #: Lines are prefixed with the interface index, as ``"<index>: "``.
    ON_WITH_PREFIX = 2


class AdapterState(IntEnum):
    """``WIREGUARD_ADAPTER_STATE``."""

    DOWN = 0
    UP = 1


class AllowedIPFlag(IntFlag):
    """``WIREGUARD_ALLOWED_IP_FLAG`` (driver 0.11 and later)."""

    #: Remove this exact prefix from the peer instead of adding it.
    REMOVE = 0x1


class PeerFlag(IntFlag):
    """``WIREGUARD_PEER_FLAG``."""

    HAS_PUBLIC_KEY = 0x01
    HAS_PRESHARED_KEY = 0x02
    HAS_PERSISTENT_KEEPALIVE = 0x04
    HAS_ENDPOINT = 0x08
    #: Driver-internal (not in the public header): the Reserved field carries a
    #: protocol version; the driver rejects versions above 1.
    HAS_PROTOCOL_VERSION = 0x10
    REPLACE_ALLOWED_IPS = 0x20
    REMOVE = 0x40
    #: Never create the peer; an unknown key is a silent no-op.  Named
    #: ``WIREGUARD_PEER_UPDATE`` in the 0.10.1 header.
    UPDATE_ONLY = 0x80


class InterfaceFlag(IntFlag):
    """``WIREGUARD_INTERFACE_FLAG``."""

    HAS_PUBLIC_KEY = 0x1
    HAS_PRIVATE_KEY = 0x2
    HAS_LISTEN_PORT = 0x4
    REPLACE_PEERS = 0x8


# Header spellings, for code that mirrors C.
WIREGUARD_LOG_INFO: Final = LoggerLevel.INFO
WIREGUARD_LOG_WARN: Final = LoggerLevel.WARN
WIREGUARD_LOG_ERR: Final = LoggerLevel.ERR
WIREGUARD_ADAPTER_LOG_OFF: Final = AdapterLogState.OFF
WIREGUARD_ADAPTER_LOG_ON: Final = AdapterLogState.ON
WIREGUARD_ADAPTER_LOG_ON_WITH_PREFIX: Final = AdapterLogState.ON_WITH_PREFIX
WIREGUARD_ADAPTER_STATE_DOWN: Final = AdapterState.DOWN
WIREGUARD_ADAPTER_STATE_UP: Final = AdapterState.UP
WIREGUARD_ALLOWED_IP_REMOVE: Final = AllowedIPFlag.REMOVE
WIREGUARD_PEER_HAS_PUBLIC_KEY: Final = PeerFlag.HAS_PUBLIC_KEY
WIREGUARD_PEER_HAS_PRESHARED_KEY: Final = PeerFlag.HAS_PRESHARED_KEY
WIREGUARD_PEER_HAS_PERSISTENT_KEEPALIVE: Final = PeerFlag.HAS_PERSISTENT_KEEPALIVE
WIREGUARD_PEER_HAS_ENDPOINT: Final = PeerFlag.HAS_ENDPOINT
WIREGUARD_PEER_REPLACE_ALLOWED_IPS: Final = PeerFlag.REPLACE_ALLOWED_IPS
WIREGUARD_PEER_REMOVE: Final = PeerFlag.REMOVE
WIREGUARD_PEER_UPDATE_ONLY: Final = PeerFlag.UPDATE_ONLY
WIREGUARD_INTERFACE_HAS_PUBLIC_KEY: Final = InterfaceFlag.HAS_PUBLIC_KEY
WIREGUARD_INTERFACE_HAS_PRIVATE_KEY: Final = InterfaceFlag.HAS_PRIVATE_KEY
WIREGUARD_INTERFACE_HAS_LISTEN_PORT: Final = InterfaceFlag.HAS_LISTEN_PORT
WIREGUARD_INTERFACE_REPLACE_PEERS: Final = InterfaceFlag.REPLACE_PEERS


class AbiError(ValueError):
    """A buffer or argument the driver would reject; ``error_code`` is the Win32 error."""

    def __init__(self, error_code: int, reason: str) -> None:
        self.error_code = int(error_code)
        self.reason = reason
        try:
            name = ErrorCode(self.error_code).name
        except ValueError:
            name = "error"
        super().__init__(f"{name} ({self.error_code}): {reason}")


# ---------------------------------------------------------------------------
# ctypes layouts (Windows x64)
# ---------------------------------------------------------------------------

# A zero-length array of an 8-byte type: occupies no bytes, raises the struct's
# alignment to 8.  This stands in for the header's ALIGNED(8).
_Align8 = ctypes.c_uint64 * 0


class _InAddrBytes(ctypes.Structure):
    _fields_ = [
        ("s_b1", ctypes.c_ubyte),
        ("s_b2", ctypes.c_ubyte),
        ("s_b3", ctypes.c_ubyte),
        ("s_b4", ctypes.c_ubyte),
    ]


class _InAddrWords(ctypes.Structure):
    _fields_ = [("s_w1", ctypes.c_uint16), ("s_w2", ctypes.c_uint16)]


class _InAddrUnion(ctypes.Union):
    _fields_ = [("S_un_b", _InAddrBytes), ("S_un_w", _InAddrWords), ("S_addr", ctypes.c_uint32)]


class IN_ADDR(ctypes.Structure):
    """``IN_ADDR``: 4 bytes, network byte order.  Use ``S_un.S_addr`` or ``bytes(addr)``."""

    _fields_ = [("S_un", _InAddrUnion)]


class _In6AddrUnion(ctypes.Union):
    _fields_ = [("Byte", ctypes.c_ubyte * 16), ("Word", ctypes.c_uint16 * 8)]


class IN6_ADDR(ctypes.Structure):
    """``IN6_ADDR``: 16 bytes, 2-byte aligned.  Use ``u.Byte`` or ``bytes(addr)``."""

    _fields_ = [("u", _In6AddrUnion)]


class SOCKADDR_IN(ctypes.Structure):
    """Windows ``SOCKADDR_IN`` (16 bytes); ``sin_port`` holds the network-order bytes."""

    _fields_ = [
        ("sin_family", ctypes.c_uint16),
        ("sin_port", ctypes.c_uint16),
        ("sin_addr", IN_ADDR),
        ("sin_zero", ctypes.c_ubyte * 8),
    ]


class SOCKADDR_IN6(ctypes.Structure):
    """Windows ``SOCKADDR_IN6`` (28 bytes); port and flowinfo are network order."""

    _fields_ = [
        ("sin6_family", ctypes.c_uint16),
        ("sin6_port", ctypes.c_uint16),
        ("sin6_flowinfo", ctypes.c_uint32),
        ("sin6_addr", IN6_ADDR),
        ("sin6_scope_id", ctypes.c_uint32),
    ]


class SOCKADDR_INET(ctypes.Union):
    """``SOCKADDR_INET``: 28 bytes, 4-byte aligned; ``si_family`` selects the member."""

    _fields_ = [("Ipv4", SOCKADDR_IN), ("Ipv6", SOCKADDR_IN6), ("si_family", ctypes.c_uint16)]


class _NetLuidInfo(ctypes.Structure):
    _fields_ = [
        ("Reserved", ctypes.c_uint64, 24),
        ("NetLuidIndex", ctypes.c_uint64, 24),
        ("IfType", ctypes.c_uint64, 16),
    ]


class NET_LUID(ctypes.Union):
    """``NET_LUID``: a 64-bit value with bitfields Reserved:24, NetLuidIndex:24, IfType:16."""

    _fields_ = [("Value", ctypes.c_uint64), ("Info", _NetLuidInfo)]


class GUID(ctypes.Structure):
    """``GUID``: 16 bytes, 4-byte aligned (DWORD, WORD, WORD, BYTE[8])."""

    _fields_ = [
        ("Data1", ctypes.c_uint32),
        ("Data2", ctypes.c_uint16),
        ("Data3", ctypes.c_uint16),
        ("Data4", ctypes.c_ubyte * 8),
    ]

    @classmethod
    def from_uuid(cls, value: uuid.UUID) -> GUID:
        """The GUID with the same value as ``value`` (Windows stores it little-endian)."""
        return cls.from_buffer_copy(value.bytes_le)

    def to_uuid(self) -> uuid.UUID:
        """This GUID as a :class:`uuid.UUID`."""
        return uuid.UUID(bytes_le=bytes(self))


class _AllowedIPAddress(ctypes.Union):
    _fields_ = [("V4", IN_ADDR), ("V6", IN6_ADDR)]


class WIREGUARD_ALLOWED_IP(ctypes.Structure):
    """``WIREGUARD_ALLOWED_IP``: 24 bytes, 8-byte aligned."""

    _fields_ = [
        ("_align8", _Align8),
        ("Address", _AllowedIPAddress),
        ("AddressFamily", ctypes.c_uint16),
        ("Cidr", ctypes.c_ubyte),
        ("Flags", ctypes.c_uint32),  # WIREGUARD_ALLOWED_IP_FLAG (a C enum: 4 bytes)
    ]


class WIREGUARD_PEER(ctypes.Structure):
    """``WIREGUARD_PEER``: 136 bytes, 8-byte aligned."""

    _fields_ = [
        ("_align8", _Align8),
        ("Flags", ctypes.c_uint32),  # WIREGUARD_PEER_FLAG
        ("Reserved", ctypes.c_uint32),
        ("PublicKey", ctypes.c_ubyte * WIREGUARD_KEY_LENGTH),
        ("PresharedKey", ctypes.c_ubyte * WIREGUARD_KEY_LENGTH),
        ("PersistentKeepalive", ctypes.c_uint16),
        ("Endpoint", SOCKADDR_INET),
        ("TxBytes", ctypes.c_uint64),
        ("RxBytes", ctypes.c_uint64),
        ("LastHandshake", ctypes.c_uint64),  # FILETIME; 0 = never
        ("AllowedIPsCount", ctypes.c_uint32),
    ]


class WIREGUARD_INTERFACE(ctypes.Structure):
    """``WIREGUARD_INTERFACE``: 80 bytes (76 of fields plus ALIGNED(8) tail padding)."""

    _fields_ = [
        ("_align8", _Align8),
        ("Flags", ctypes.c_uint32),  # WIREGUARD_INTERFACE_FLAG
        ("ListenPort", ctypes.c_uint16),  # host byte order
        ("PrivateKey", ctypes.c_ubyte * WIREGUARD_KEY_LENGTH),
        ("PublicKey", ctypes.c_ubyte * WIREGUARD_KEY_LENGTH),
        ("PeersCount", ctypes.c_uint32),
    ]


INTERFACE_SIZE: Final = 80
PEER_SIZE: Final = 136
ALLOWED_IP_SIZE: Final = 24

# struct formats of the same records, for the codec (little-endian, explicit padding).
_INTERFACE = struct.Struct("<IH32s32s2xI4x")
_PEER_HEAD = struct.Struct("<II32s32sH2x")  # Flags .. PersistentKeepalive + pad
_PEER_TAIL = struct.Struct("<QQQI4x")  # TxBytes .. AllowedIPsCount + tail pad
_ENDPOINT_OFFSET: Final = _PEER_HEAD.size  # 76
_ENDPOINT_SIZE: Final = 28
_ALLOWED_IP = struct.Struct("<16sHBxI")
_SOCKADDR_HEAD = struct.Struct("<H")  # family, little-endian
_PORT = struct.Struct(">H")  # ports are big-endian
_SCOPE_ID = struct.Struct("<I")

assert _INTERFACE.size == INTERFACE_SIZE
assert _PEER_HEAD.size + _ENDPOINT_SIZE + _PEER_TAIL.size == PEER_SIZE
assert _ALLOWED_IP.size == ALLOWED_IP_SIZE


# ---------------------------------------------------------------------------
# Small encoders
# ---------------------------------------------------------------------------


def filetime_from_unix_ns(unix_ns: int) -> int:
    """FILETIME (100 ns ticks since 1601-01-01 UTC) for a Unix time in nanoseconds.

    Rounds down to whole ticks.  Raises ValueError outside the unsigned 64-bit range.
    """
    ticks = unix_ns // 100 + FILETIME_UNIX_EPOCH
    if not 0 <= ticks <= _U64_MAX:
        raise ValueError(f"time {unix_ns} ns is outside the FILETIME range")
    return ticks


def filetime_to_unix_ns(filetime: int) -> int:
    """Unix time in nanoseconds for a FILETIME value (may be negative before 1970).

    Note that ``LastHandshake == 0`` means "never"; callers check that first.
    """
    if not 0 <= filetime <= _U64_MAX:
        raise ValueError(f"FILETIME {filetime} is not an unsigned 64-bit value")
    return (filetime - FILETIME_UNIX_EPOCH) * 100


def net_luid_value(net_luid_index: int, if_type: int = IF_TYPE_PROP_VIRTUAL) -> int:
    """``NET_LUID.Value`` as the DLL builds it: ``(IfType << 48) | (NetLuidIndex << 24)``."""
    if not 0 <= net_luid_index < 1 << 24:
        raise ValueError(f"NetLuidIndex {net_luid_index} does not fit in 24 bits")
    if not 0 <= if_type <= _U16_MAX:
        raise ValueError(f"IfType {if_type} does not fit in 16 bits")
    return (if_type << 48) | (net_luid_index << 24)


def net_luid_fields(value: int) -> tuple[int, int]:
    """``(NetLuidIndex, IfType)`` of a ``NET_LUID.Value``."""
    if not 0 <= value <= _U64_MAX:
        raise ValueError(f"NET_LUID {value} is not an unsigned 64-bit value")
    return (value >> 24) & 0xFF_FFFF, value >> 48


def driver_version(major: int, minor: int) -> int:
    """The DWORD ``GetRunningDriverVersion`` returns: ``(major << 16) | minor``."""
    if not (0 <= major <= _U16_MAX and 0 <= minor <= _U16_MAX):
        raise ValueError(f"version {major}.{minor} does not fit in two 16-bit halves")
    return (major << 16) | minor


def split_driver_version(version: int) -> tuple[int, int]:
    """``(major, minor)`` of a driver version DWORD."""
    if not 0 <= version <= _U32_MAX:
        raise ValueError(f"version {version} is not a DWORD")
    return version >> 16, version & _U16_MAX


# ---------------------------------------------------------------------------
# Configuration buffer codec
# ---------------------------------------------------------------------------


_NO_ALLOWED_IP_FLAGS: Final = AllowedIPFlag(0)
_NO_INTERFACE_FLAGS: Final = InterfaceFlag(0)


@dataclass(frozen=True)
class AllowedIPConfig:
    """One ``WIREGUARD_ALLOWED_IP`` record.  ``address`` is a textual IPv4/IPv6 address.

    Host bits beyond ``cidr`` are kept as given; the driver ignores them.
    """

    address: str
    cidr: int
    flags: AllowedIPFlag = _NO_ALLOWED_IP_FLAGS


@dataclass(frozen=True)
class PeerConfig:
    """One ``WIREGUARD_PEER`` record with its allowed IPs.

    ``endpoint`` is ``(host, port)``; an IPv6 host carries a non-zero scope id as
    ``"fe80::1%3"``.  ``last_handshake`` is a FILETIME (0 = never).  ``reserved`` is the
    raw Reserved field (the driver's protocol version when ``HAS_PROTOCOL_VERSION``).
    """

    flags: PeerFlag = PeerFlag.HAS_PUBLIC_KEY
    public_key: bytes = bytes(WIREGUARD_KEY_LENGTH)
    preshared_key: bytes = bytes(WIREGUARD_KEY_LENGTH)
    persistent_keepalive: int = 0
    endpoint: tuple[str, int] | None = None
    tx_bytes: int = 0
    rx_bytes: int = 0
    last_handshake: int = 0
    allowed_ips: tuple[AllowedIPConfig, ...] = ()
    reserved: int = 0


@dataclass(frozen=True)
class InterfaceConfig:
    """A whole configuration buffer: the ``WIREGUARD_INTERFACE`` record and its peers."""

    flags: InterfaceFlag = _NO_INTERFACE_FLAGS
    listen_port: int = 0
    private_key: bytes = bytes(WIREGUARD_KEY_LENGTH)
    public_key: bytes = bytes(WIREGUARD_KEY_LENGTH)
    peers: tuple[PeerConfig, ...] = ()


def configuration_size(config: InterfaceConfig) -> int:
    """Bytes :func:`pack_configuration` produces: ``80 + sum(136 + 24 * n_allowed)``."""
    return INTERFACE_SIZE + sum(
        PEER_SIZE + ALLOWED_IP_SIZE * len(peer.allowed_ips) for peer in config.peers
    )


def _check_key(name: str, key: bytes) -> bytes:
    if len(key) != WIREGUARD_KEY_LENGTH:
        raise ValueError(f"{name} must be {WIREGUARD_KEY_LENGTH} bytes, not {len(key)}")
    return bytes(key)


def _check_range(name: str, value: int, top: int) -> int:
    if not 0 <= value <= top:
        raise ValueError(f"{name} {value} is out of range 0..{top}")
    return value


def _pack_endpoint(endpoint: tuple[str, int] | None) -> bytes:
    if endpoint is None:
        return bytes(_ENDPOINT_SIZE)
    host, port = endpoint
    _check_range("endpoint port", port, _U16_MAX)
    address = ipaddress.ip_address(host)
    out = bytearray(_ENDPOINT_SIZE)
    if isinstance(address, ipaddress.IPv4Address):
        _SOCKADDR_HEAD.pack_into(out, 0, AF_INET)
        _PORT.pack_into(out, 2, port)
        out[4:8] = address.packed
    else:
        scope = address.scope_id
        if scope is None:
            scope_id = 0
        elif scope.isdigit():
            scope_id = _check_range("IPv6 scope id", int(scope), _U32_MAX)
        else:
            raise ValueError(f"IPv6 scope {scope!r} must be a numeric interface index")
        _SOCKADDR_HEAD.pack_into(out, 0, AF_INET6)
        _PORT.pack_into(out, 2, port)
        # flowinfo (bytes 4..8) stays 0
        out[8:24] = address.packed
        _SCOPE_ID.pack_into(out, 24, scope_id)
    return bytes(out)


def _pack_allowed_ip(allowed: AllowedIPConfig) -> bytes:
    address = ipaddress.ip_address(allowed.address)
    if isinstance(address, ipaddress.IPv4Address):
        family, max_cidr, raw = AF_INET, 32, address.packed + bytes(12)
    else:
        if address.scope_id is not None:
            raise ValueError(f"allowed IP {allowed.address!r} must not carry a scope")
        family, max_cidr, raw = AF_INET6, 128, address.packed
    _check_range("cidr", allowed.cidr, max_cidr)
    flags = _check_range("allowed IP flags", int(allowed.flags), _U32_MAX)
    return _ALLOWED_IP.pack(raw, family, allowed.cidr, flags)


def pack_configuration(config: InterfaceConfig) -> bytes:
    """Encode ``config`` as the contiguous buffer ``WireGuardSetConfiguration`` takes.

    Writes exactly what ``config`` holds (flags are not derived from the fields);
    padding bytes are zero.  Raises ValueError for values that cannot be encoded
    (wrong key length, out-of-range numbers, cidr too large for the family).
    """
    if len(config.peers) > _U32_MAX:
        raise ValueError("too many peers for a DWORD count")
    parts = [
        _INTERFACE.pack(
            _check_range("interface flags", int(config.flags), _U32_MAX),
            _check_range("listen port", config.listen_port, _U16_MAX),
            _check_key("private_key", config.private_key),
            _check_key("public_key", config.public_key),
            len(config.peers),
        )
    ]
    for peer in config.peers:
        if len(peer.allowed_ips) > _U32_MAX:
            raise ValueError("too many allowed IPs for a DWORD count")
        parts.append(
            _PEER_HEAD.pack(
                _check_range("peer flags", int(peer.flags), _U32_MAX),
                _check_range("reserved", peer.reserved, _U32_MAX),
                _check_key("public_key", peer.public_key),
                _check_key("preshared_key", peer.preshared_key),
                _check_range("persistent_keepalive", peer.persistent_keepalive, _U16_MAX),
            )
        )
        parts.append(_pack_endpoint(peer.endpoint))
        parts.append(
            _PEER_TAIL.pack(
                _check_range("tx_bytes", peer.tx_bytes, _U64_MAX),
                _check_range("rx_bytes", peer.rx_bytes, _U64_MAX),
                _check_range("last_handshake", peer.last_handshake, _U64_MAX),
                len(peer.allowed_ips),
            )
        )
        parts.extend(_pack_allowed_ip(allowed) for allowed in peer.allowed_ips)
    buf = b"".join(parts)
    if len(buf) > _U32_MAX:
        raise ValueError("configuration does not fit in a DWORD byte count")
    return buf


def _parse_endpoint(raw: bytes) -> tuple[str, int] | None:
    # The driver copies the endpoint only for AF_INET/AF_INET6 and silently ignores
    # any other family, so an unknown family is "no endpoint", never an error.
    (family,) = _SOCKADDR_HEAD.unpack_from(raw, 0)
    (port,) = _PORT.unpack_from(raw, 2)
    if family == AF_INET:
        return str(ipaddress.IPv4Address(raw[4:8])), port
    if family == AF_INET6:
        host = str(ipaddress.IPv6Address(raw[8:24]))
        (scope_id,) = _SCOPE_ID.unpack_from(raw, 24)
        if scope_id:
            host = f"{host}%{scope_id}"
        return host, port
    return None


def _parse_allowed_ip(data: memoryview, offset: int) -> AllowedIPConfig:
    raw, family, cidr, flags = _ALLOWED_IP.unpack_from(data, offset)
    if family == AF_INET:
        if cidr > 32:
            raise AbiError(ErrorCode.ERROR_INVALID_PARAMETER, f"IPv4 cidr {cidr} > 32")
        address = str(ipaddress.IPv4Address(raw[:4]))
    elif family == AF_INET6:
        if cidr > 128:
            raise AbiError(ErrorCode.ERROR_INVALID_PARAMETER, f"IPv6 cidr {cidr} > 128")
        address = str(ipaddress.IPv6Address(raw))
    else:
        raise AbiError(ErrorCode.ERROR_INVALID_PARAMETER, f"allowed IP family {family}")
    return AllowedIPConfig(address, cidr, AllowedIPFlag(flags))


def parse_configuration(buf: bytes | bytearray | memoryview, size: int) -> InterfaceConfig:
    """Decode a configuration buffer of ``size`` bytes, checking it as the driver does.

    Raises :class:`AbiError` (never anything else for any ``buf``/``size``) with:

    * ``ERROR_INVALID_PARAMETER`` when ``size`` is not a DWORD, is smaller than the
      80-byte interface record, when fewer than 136 bytes remain for a peer, when a
      peer lacks ``HAS_PUBLIC_KEY``, when ``AllowedIPsCount * 24`` overflows 32 bits or
      overruns ``size``, and for an allowed IP whose family is neither 2 nor 23 or
      whose cidr exceeds 32/128;
    * ``ERROR_INVALID_FUNCTION`` when a peer sets the driver-internal
      ``HAS_PROTOCOL_VERSION`` flag with ``Reserved > 1`` (otherwise Reserved is
      ignored, as in the driver);
    * ``ERROR_NOACCESS`` when ``size`` exceeds ``len(buf)`` (on Windows the I/O
      manager's probe of the buffer fails first; the exact code is unverified).

    Checks run in the driver's order, peer by peer.  The driver ignores the rest of a
    ``REMOVE`` record, so the allowed IPs of a ``REMOVE`` peer are skipped without
    checks and returned as ``()``.  Unlike the driver (which skips an unknown
    ``UPDATE_ONLY`` peer before looking at its allowed IPs), this state-free parser
    checks every other peer's allowed IPs.  Bytes after the last declared record are
    ignored.  An endpoint of unknown family parses as ``None``.
    """
    try:
        data = memoryview(buf).cast("B")
    except TypeError as exc:  # e.g. a non-contiguous view
        raise AbiError(ErrorCode.ERROR_INVALID_PARAMETER, "buffer is not contiguous") from exc
    if not isinstance(size, int) or not 0 <= size <= _U32_MAX:
        raise AbiError(ErrorCode.ERROR_INVALID_PARAMETER, f"size {size!r} is not a DWORD")
    if size > len(data):
        raise AbiError(ErrorCode.ERROR_NOACCESS, f"size {size} exceeds the {len(data)}-byte buffer")
    if size < INTERFACE_SIZE:
        raise AbiError(ErrorCode.ERROR_INVALID_PARAMETER, f"size {size} < {INTERFACE_SIZE}")
    data = data[:size]
    iface_flags, listen_port, private_key, public_key, peers_count = _INTERFACE.unpack_from(data, 0)
    offset = INTERFACE_SIZE
    peers: list[PeerConfig] = []
    # PeersCount is not checked up front (nor is it by the driver): each peer must
    # fit in what is left, so a huge count fails after at most size/136 rounds.
    for index in range(peers_count):
        if size - offset < PEER_SIZE:
            raise AbiError(
                ErrorCode.ERROR_INVALID_PARAMETER,
                f"peer {index}: {size - offset} bytes left, a peer needs {PEER_SIZE}",
            )
        flags, reserved, peer_public, psk, keepalive = _PEER_HEAD.unpack_from(data, offset)
        endpoint_raw = bytes(data[offset + _ENDPOINT_OFFSET : offset + _ENDPOINT_OFFSET + 28])
        tx_bytes, rx_bytes, last_handshake, allowed_count = _PEER_TAIL.unpack_from(
            data, offset + _ENDPOINT_OFFSET + _ENDPOINT_SIZE
        )
        if not flags & PeerFlag.HAS_PUBLIC_KEY:
            raise AbiError(ErrorCode.ERROR_INVALID_PARAMETER, f"peer {index}: no public key")
        if flags & PeerFlag.HAS_PROTOCOL_VERSION and reserved > 1:
            raise AbiError(
                ErrorCode.ERROR_INVALID_FUNCTION, f"peer {index}: protocol version {reserved}"
            )
        offset += PEER_SIZE
        allowed_bytes = allowed_count * ALLOWED_IP_SIZE
        if allowed_bytes > _U32_MAX or allowed_bytes > size - offset:
            raise AbiError(
                ErrorCode.ERROR_INVALID_PARAMETER,
                f"peer {index}: {allowed_count} allowed IPs overrun the buffer",
            )
        allowed: tuple[AllowedIPConfig, ...] = ()
        if not flags & PeerFlag.REMOVE:
            allowed = tuple(
                _parse_allowed_ip(data, offset + i * ALLOWED_IP_SIZE) for i in range(allowed_count)
            )
        offset += allowed_bytes
        peers.append(
            PeerConfig(
                flags=PeerFlag(flags),
                public_key=peer_public,
                preshared_key=psk,
                persistent_keepalive=keepalive,
                endpoint=_parse_endpoint(endpoint_raw),
                tx_bytes=tx_bytes,
                rx_bytes=rx_bytes,
                last_handshake=last_handshake,
                allowed_ips=allowed,
                reserved=reserved,
            )
        )
    return InterfaceConfig(
        flags=InterfaceFlag(iface_flags),
        listen_port=listen_port,
        private_key=private_key,
        public_key=public_key,
        peers=tuple(peers),
    )
