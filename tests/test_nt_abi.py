"""wgpy.nt.abi and wgpy/nt/include/wireguard.h: layouts, constants and the config codec.

Layout facts come from shared/reference/wireguard-h-abi.md section 1.4; the C side is
checked by compiling our own header with gcc and comparing what it reports with ctypes.
"""

from __future__ import annotations

import ctypes
import shutil
import struct
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wgpy.nt import abi
from wgpy.nt.abi import (
    AbiError,
    AllowedIPConfig,
    AllowedIPFlag,
    ErrorCode,
    InterfaceConfig,
    InterfaceFlag,
    PeerConfig,
    PeerFlag,
    configuration_size,
    pack_configuration,
    parse_configuration,
)

HEADER_DIR = Path(__file__).resolve().parent.parent / "wgpy" / "nt" / "include"
INVALID = ErrorCode.ERROR_INVALID_PARAMETER

# ---------------------------------------------------------------------------
# ctypes layout against the reference tables
# ---------------------------------------------------------------------------

# (struct, sizeof, alignof, {field: offset})
LAYOUTS = [
    (
        abi.WIREGUARD_INTERFACE,
        80,
        8,
        {"Flags": 0, "ListenPort": 4, "PrivateKey": 6, "PublicKey": 38, "PeersCount": 72},
    ),
    (
        abi.WIREGUARD_PEER,
        136,
        8,
        {
            "Flags": 0,
            "Reserved": 4,
            "PublicKey": 8,
            "PresharedKey": 40,
            "PersistentKeepalive": 72,
            "Endpoint": 76,
            "TxBytes": 104,
            "RxBytes": 112,
            "LastHandshake": 120,
            "AllowedIPsCount": 128,
        },
    ),
    (
        abi.WIREGUARD_ALLOWED_IP,
        24,
        8,
        {"Address": 0, "AddressFamily": 16, "Cidr": 18, "Flags": 20},
    ),
    (
        abi.SOCKADDR_IN,
        16,
        4,
        {"sin_family": 0, "sin_port": 2, "sin_addr": 4, "sin_zero": 8},
    ),
    (
        abi.SOCKADDR_IN6,
        28,
        4,
        {
            "sin6_family": 0,
            "sin6_port": 2,
            "sin6_flowinfo": 4,
            "sin6_addr": 8,
            "sin6_scope_id": 24,
        },
    ),
    (abi.SOCKADDR_INET, 28, 4, {"Ipv4": 0, "Ipv6": 0, "si_family": 0}),
    (abi.NET_LUID, 8, 8, {"Value": 0}),
    (abi.GUID, 16, 4, {"Data1": 0, "Data2": 4, "Data3": 6, "Data4": 8}),
    (abi.IN_ADDR, 4, 4, {"S_un": 0}),
    (abi.IN6_ADDR, 16, 2, {"u": 0}),
]


@pytest.mark.parametrize(("cls", "size", "align", "offsets"), LAYOUTS, ids=lambda v: str(v))
def test_ctypes_layout(
    cls: type[ctypes.Structure], size: int, align: int, offsets: dict[str, int]
) -> None:
    assert ctypes.sizeof(cls) == size
    assert ctypes.alignment(cls) == align
    for field, offset in offsets.items():
        assert getattr(cls, field).offset == offset, field


def test_structs_stack_without_gaps() -> None:
    # The driver asserts the records are "stackable": an array adds no padding.
    for cls in (abi.WIREGUARD_INTERFACE, abi.WIREGUARD_PEER, abi.WIREGUARD_ALLOWED_IP):
        assert ctypes.sizeof(cls * 3) == 3 * ctypes.sizeof(cls)
        assert ctypes.sizeof(cls) % 8 == 0


def test_net_luid_bitfields() -> None:
    luid = abi.NET_LUID()
    luid.Value = abi.net_luid_value(0x123456, 53)
    assert luid.Info.NetLuidIndex == 0x123456
    assert luid.Info.IfType == 53
    assert luid.Info.Reserved == 0
    assert abi.net_luid_fields(luid.Value) == (0x123456, 53)
    assert abi.net_luid_value(7) == (53 << 48) | (7 << 24)
    with pytest.raises(ValueError):
        abi.net_luid_value(1 << 24)
    with pytest.raises(ValueError):
        abi.net_luid_value(1, 1 << 16)


def test_guid_uuid_round_trip() -> None:
    u = uuid.UUID("deadc001-beef-babe-0123-456789abcdef")  # example.c's GUID
    g = abi.GUID.from_uuid(u)
    assert g.Data1 == 0xDEADC001
    assert g.Data2 == 0xBEEF
    assert g.Data3 == 0xBABE
    assert bytes(g.Data4) == bytes.fromhex("0123456789abcdef")
    assert g.to_uuid() == u


def test_enum_and_flag_values() -> None:
    assert [int(v) for v in abi.LoggerLevel] == [0, 1, 2]
    assert [int(v) for v in abi.AdapterLogState] == [0, 1, 2]
    assert [int(v) for v in abi.AdapterState] == [0, 1]
    assert abi.AllowedIPFlag.REMOVE == 1
    assert [int(f) for f in PeerFlag] == [0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80]
    assert abi.WIREGUARD_PEER_UPDATE_ONLY == 0x80
    assert [int(f) for f in InterfaceFlag] == [1, 2, 4, 8]
    assert (abi.AF_INET, abi.AF_INET6) == (2, 23)
    assert abi.MAX_ADAPTER_NAME == 128
    codes = {
        "ERROR_SUCCESS": 0,
        "ERROR_INVALID_FUNCTION": 1,
        "ERROR_FILE_NOT_FOUND": 2,
        "ERROR_ACCESS_DENIED": 5,
        "ERROR_INVALID_HANDLE": 6,
        "ERROR_NOT_ENOUGH_MEMORY": 8,
        "ERROR_INVALID_DATA": 13,
        "ERROR_HANDLE_EOF": 38,
        "ERROR_INVALID_PARAMETER": 87,
        "ERROR_BUFFER_OVERFLOW": 111,
        "ERROR_INSUFFICIENT_BUFFER": 122,
        "ERROR_ALREADY_EXISTS": 183,
        "ERROR_MORE_DATA": 234,
        "ERROR_NO_MORE_ITEMS": 259,
        "ERROR_VERSION_PARSE_ERROR": 777,
        "ERROR_OPERATION_ABORTED": 995,
        "ERROR_NOT_FOUND": 1168,
        "ERROR_NO_SYSTEM_RESOURCES": 1450,
    }
    for name, value in codes.items():
        assert ErrorCode[name] == value, name


def test_filetime_helpers() -> None:
    assert abi.filetime_from_unix_ns(0) == 116444736000000000
    assert abi.filetime_to_unix_ns(116444736000000000) == 0
    # wireguard-windows converts with (ts - 116444736000000000) * 100.
    ts = 133_000_000_000_000_000
    assert abi.filetime_to_unix_ns(ts) == (ts - 116444736000000000) * 100
    assert abi.filetime_from_unix_ns(abi.filetime_to_unix_ns(ts)) == ts
    assert abi.filetime_from_unix_ns(1_699) == 116444736000000016  # rounds down
    with pytest.raises(ValueError):
        abi.filetime_from_unix_ns(-116444736000000000 * 100 - 100)
    with pytest.raises(ValueError):
        abi.filetime_to_unix_ns(-1)


def test_driver_version_helpers() -> None:
    assert abi.driver_version(1, 0) == 0x00010000
    assert abi.driver_version(0, 14) == 0x0000000E
    assert abi.split_driver_version(0x0001000B) == (1, 11)
    with pytest.raises(ValueError):
        abi.driver_version(0x10000, 0)


# ---------------------------------------------------------------------------
# Our wireguard.h, compiled
# ---------------------------------------------------------------------------

_C_FIELDS = {
    "WIREGUARD_INTERFACE": ["Flags", "ListenPort", "PrivateKey", "PublicKey", "PeersCount"],
    "WIREGUARD_PEER": [
        "Flags",
        "Reserved",
        "PublicKey",
        "PresharedKey",
        "PersistentKeepalive",
        "Endpoint",
        "TxBytes",
        "RxBytes",
        "LastHandshake",
        "AllowedIPsCount",
    ],
    "WIREGUARD_ALLOWED_IP": ["Address", "AddressFamily", "Cidr", "Flags"],
    "SOCKADDR_IN": ["sin_family", "sin_port", "sin_addr", "sin_zero"],
    "SOCKADDR_IN6": ["sin6_family", "sin6_port", "sin6_flowinfo", "sin6_addr", "sin6_scope_id"],
    "SOCKADDR_INET": ["Ipv4", "Ipv6", "si_family"],
    "NET_LUID": ["Value"],
    "GUID": ["Data1", "Data2", "Data3", "Data4"],
    "IN_ADDR": ["S_un"],
    "IN6_ADDR": ["u"],
}

_C_CONSTANTS = {
    "WIREGUARD_LOG_INFO": 0,
    "WIREGUARD_LOG_WARN": 1,
    "WIREGUARD_LOG_ERR": 2,
    "WIREGUARD_ADAPTER_LOG_OFF": 0,
    "WIREGUARD_ADAPTER_LOG_ON": 1,
    "WIREGUARD_ADAPTER_LOG_ON_WITH_PREFIX": 2,
    "WIREGUARD_ADAPTER_STATE_DOWN": 0,
    "WIREGUARD_ADAPTER_STATE_UP": 1,
    "WIREGUARD_ALLOWED_IP_REMOVE": 1,
    "WIREGUARD_PEER_HAS_PUBLIC_KEY": 0x01,
    "WIREGUARD_PEER_HAS_PRESHARED_KEY": 0x02,
    "WIREGUARD_PEER_HAS_PERSISTENT_KEEPALIVE": 0x04,
    "WIREGUARD_PEER_HAS_ENDPOINT": 0x08,
    "WIREGUARD_PEER_REPLACE_ALLOWED_IPS": 0x20,
    "WIREGUARD_PEER_REMOVE": 0x40,
    "WIREGUARD_PEER_UPDATE_ONLY": 0x80,
    "WIREGUARD_INTERFACE_HAS_PUBLIC_KEY": 1,
    "WIREGUARD_INTERFACE_HAS_PRIVATE_KEY": 2,
    "WIREGUARD_INTERFACE_HAS_LISTEN_PORT": 4,
    "WIREGUARD_INTERFACE_REPLACE_PEERS": 8,
    "WIREGUARD_KEY_LENGTH": 32,
    "MAX_ADAPTER_NAME": 128,
    "AF_INET": 2,
    "AF_INET6": 23,
    "WIREGUARD_AF_INET": 2,
    "WIREGUARD_AF_INET6": 23,
}

# Functions with the exact signatures of the reference table (section 1.2).  Assigning
# them to pointers of our *_FUNC types fails to compile (-Werror) on any mismatch.
_C_SIGNATURES = r"""
static WIREGUARD_ADAPTER_HANDLE f_create(LPCWSTR n, LPCWSTR t, const GUID *g)
{ (void)n; (void)t; (void)g; return 0; }
static WIREGUARD_ADAPTER_HANDLE f_open(LPCWSTR n) { (void)n; return 0; }
static void f_close(WIREGUARD_ADAPTER_HANDLE a) { (void)a; }
static BOOL f_delete(void) { return 0; }
static void f_luid(WIREGUARD_ADAPTER_HANDLE a, NET_LUID *l) { (void)a; (void)l; }
static DWORD f_version(void) { return 0; }
static void f_logger(WIREGUARD_LOGGER_LEVEL l, DWORD64 t, LPCWSTR m) { (void)l; (void)t; (void)m; }
static void f_set_logger(WIREGUARD_LOGGER_CALLBACK cb) { (void)cb; }
static BOOL f_logging(WIREGUARD_ADAPTER_HANDLE a, WIREGUARD_ADAPTER_LOG_STATE s)
{ (void)a; (void)s; return 0; }
static BOOL f_set_state(WIREGUARD_ADAPTER_HANDLE a, WIREGUARD_ADAPTER_STATE s)
{ (void)a; (void)s; return 0; }
static BOOL f_get_state(WIREGUARD_ADAPTER_HANDLE a, WIREGUARD_ADAPTER_STATE *s)
{ (void)a; (void)s; return 0; }
static BOOL f_set_config(WIREGUARD_ADAPTER_HANDLE a, const WIREGUARD_INTERFACE *c, DWORD b)
{ (void)a; (void)c; (void)b; return 0; }
static BOOL f_get_config(WIREGUARD_ADAPTER_HANDLE a, WIREGUARD_INTERFACE *c, DWORD *b)
{ (void)a; (void)c; (void)b; return 0; }

WIREGUARD_CREATE_ADAPTER_FUNC *p_create = f_create;
WIREGUARD_OPEN_ADAPTER_FUNC *p_open = f_open;
WIREGUARD_CLOSE_ADAPTER_FUNC *p_close = f_close;
WIREGUARD_DELETE_DRIVER_FUNC *p_delete = f_delete;
WIREGUARD_GET_ADAPTER_LUID_FUNC *p_luid = f_luid;
WIREGUARD_GET_RUNNING_DRIVER_VERSION_FUNC *p_version = f_version;
WIREGUARD_LOGGER_CALLBACK p_logger = f_logger;
WIREGUARD_SET_LOGGER_FUNC *p_set_logger = f_set_logger;
WIREGUARD_SET_ADAPTER_LOGGING_FUNC *p_logging = f_logging;
WIREGUARD_SET_ADAPTER_STATE_FUNC *p_set_state = f_set_state;
WIREGUARD_GET_ADAPTER_STATE_FUNC *p_get_state = f_get_state;
WIREGUARD_SET_CONFIGURATION_FUNC *p_set_config = f_set_config;
WIREGUARD_GET_CONFIGURATION_FUNC *p_get_config = f_get_config;
WIREGUARD_GET_LAST_ERROR_FUNC WireGuardGetLastError;
WIREGUARD_GET_LAST_ERROR_FUNC *p_last_error = WireGuardGetLastError;
"""


def _layout_program(prelude: str = "") -> str:
    lines = [prelude, '#include "wireguard.h"', "#include <stddef.h>", "#include <stdio.h>"]
    lines.append(_C_SIGNATURES)
    lines.append("DWORD WireGuardGetLastError(void) { return 0; }")
    lines.append("int main(void) {")
    for struct_name, fields in _C_FIELDS.items():
        lines.append(f'printf("{struct_name} sizeof %zu\\n", sizeof({struct_name}));')
        lines.append(f'printf("{struct_name} alignof %zu\\n", __alignof__({struct_name}));')
        for field in fields:
            lines.append(
                f'printf("{struct_name} {field} %zu\\n", offsetof({struct_name}, {field}));'
            )
    for name in _C_CONSTANTS:
        lines.append(f'printf("const {name} %ld\\n", (long)({name}));')
    lines.append("return 0; }")
    return "\n".join(lines)


def _compile_and_run(tmp_path: Path, source: str, *flags: str) -> str:
    if not sys.platform.startswith("linux"):
        pytest.skip("compiles the header's non-Windows branch (checked on Linux)")
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("needs gcc to compile wgpy/nt/include/wireguard.h")
    src = tmp_path / "layout.c"
    exe = tmp_path / "layout"
    src.write_text(source)
    proc = subprocess.run(
        [gcc, "-Wall", "-Wextra", "-Werror", *flags, f"-I{HEADER_DIR}", str(src), "-o", str(exe)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    return subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout


def _ctypes_report() -> dict[tuple[str, str], int]:
    report: dict[tuple[str, str], int] = {}
    for struct_name, fields in _C_FIELDS.items():
        cls = getattr(abi, struct_name)
        report[(struct_name, "sizeof")] = ctypes.sizeof(cls)
        report[(struct_name, "alignof")] = ctypes.alignment(cls)
        for field in fields:
            report[(struct_name, field)] = getattr(cls, field).offset
    return report


@pytest.mark.parametrize(
    "flags", [("-std=c11", "-pedantic"), ("-std=c99", "-pedantic"), ("-std=gnu17", "-O2")]
)
def test_header_layout_matches_ctypes(tmp_path: Path, flags: tuple[str, ...]) -> None:
    out = _compile_and_run(tmp_path, _layout_program(), *flags)
    c_report: dict[tuple[str, str], int] = {}
    constants: dict[str, int] = {}
    for line in out.splitlines():
        a, b, value = line.split()
        if a == "const":
            constants[b] = int(value)
        else:
            c_report[(a, b)] = int(value)
    assert c_report == _ctypes_report()
    assert constants == _C_CONSTANTS


def test_header_with_host_socket_headers_first(tmp_path: Path) -> None:
    # A program that includes the Linux socket headers first keeps the host AF_INET6
    # (10); WIREGUARD_AF_INET6 stays 23.  Both compile cleanly together.
    prelude = "#include <sys/socket.h>\n#include <netinet/in.h>\n#define WIREGUARD_PROTOTYPES"
    source = (
        prelude
        + '\n#include "wireguard.h"\n#include <stdio.h>\n'
        + "int main(void) { IN_ADDR a; struct in_addr b; a.s_addr = 0x0100007fu;\n"
        + "b.s_addr = a.S_un.S_addr; SOCKADDR_INET e; e.si_family = WIREGUARD_AF_INET6;\n"
        + 'printf("%d %d %u %d\\n", AF_INET6, WIREGUARD_AF_INET6, a.S_un.S_un_b.s_b1,'
        + " (int)(b.s_addr == a.s_addr) + e.si_family - 23);\n"
        + "(void)WireGuardCreateAdapter; return 0; }\n"
    )
    out = _compile_and_run(tmp_path, source, "-std=c11", "-pedantic")
    assert out.split() == ["10", "23", "127", "1"]


def test_header_compiles_as_cpp(tmp_path: Path) -> None:
    gxx = shutil.which("g++")
    if not sys.platform.startswith("linux"):
        pytest.skip("compiles the header's non-Windows branch (checked on Linux)")
    if gxx is None:
        pytest.skip("needs g++ to check the header from C++")
    src = tmp_path / "t.cpp"
    src.write_text(
        '#define WIREGUARD_PROTOTYPES\n#include "wireguard.h"\n'
        'static_assert(sizeof(WIREGUARD_INTERFACE) == 80, "iface");\n'
        'static_assert(sizeof(WIREGUARD_PEER) == 136, "peer");\n'
        'static_assert(sizeof(WIREGUARD_ALLOWED_IP) == 24, "aip");\n'
        "int main() { return 0; }\n"
    )
    proc = subprocess.run(
        [
            gxx,
            "-std=c++11",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-pedantic",
            f"-I{HEADER_DIR}",
            "-fsyntax-only",
            str(src),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr


# ---------------------------------------------------------------------------
# Configuration codec
# ---------------------------------------------------------------------------

KEY_A = bytes(range(32))
KEY_B = bytes(range(32, 64))
PSK = bytes([0xAA]) * 32


def _example_config() -> InterfaceConfig:
    """The shape of example.c's configuration: one peer, one allowed IP (0.0.0.0/0)."""
    return InterfaceConfig(
        flags=InterfaceFlag.HAS_PRIVATE_KEY,
        private_key=KEY_A,
        peers=(
            PeerConfig(
                flags=PeerFlag.HAS_PUBLIC_KEY | PeerFlag.HAS_ENDPOINT,
                public_key=KEY_B,
                endpoint=("163.172.161.0", 42912),
                allowed_ips=(AllowedIPConfig("0.0.0.0", 0),),
            ),
        ),
    )


def test_pack_example_layout_byte_for_byte() -> None:
    cfg = _example_config()
    buf = pack_configuration(cfg)
    assert len(buf) == configuration_size(cfg) == 240
    iface = abi.WIREGUARD_INTERFACE.from_buffer_copy(buf, 0)
    assert iface.Flags == InterfaceFlag.HAS_PRIVATE_KEY
    assert bytes(iface.PrivateKey) == KEY_A
    assert iface.PeersCount == 1
    peer = abi.WIREGUARD_PEER.from_buffer_copy(buf, 80)
    assert peer.Flags == PeerFlag.HAS_PUBLIC_KEY | PeerFlag.HAS_ENDPOINT
    assert bytes(peer.PublicKey) == KEY_B
    assert peer.Endpoint.si_family == 2
    assert peer.Endpoint.Ipv4.sin_port == struct.unpack("<H", struct.pack(">H", 42912))[0]
    assert bytes(peer.Endpoint.Ipv4.sin_addr) == bytes([163, 172, 161, 0])
    assert peer.AllowedIPsCount == 1
    aip = abi.WIREGUARD_ALLOWED_IP.from_buffer_copy(buf, 216)
    assert (aip.AddressFamily, aip.Cidr, aip.Flags) == (2, 0, 0)
    assert parse_configuration(buf, len(buf)) == cfg


def test_parse_reads_a_ctypes_built_buffer() -> None:
    # Build the buffer with the ctypes structures, the way a C caller would.
    class Config(ctypes.Structure):
        _fields_ = [
            ("Interface", abi.WIREGUARD_INTERFACE),
            ("Peer", abi.WIREGUARD_PEER),
            ("V6", abi.WIREGUARD_ALLOWED_IP),
            ("V4", abi.WIREGUARD_ALLOWED_IP),
        ]

    c = Config()
    assert ctypes.sizeof(c) == 264
    c.Interface.Flags = InterfaceFlag.HAS_LISTEN_PORT | InterfaceFlag.REPLACE_PEERS
    c.Interface.ListenPort = 51820
    c.Interface.PeersCount = 1
    c.Peer.Flags = PeerFlag.HAS_PUBLIC_KEY | PeerFlag.HAS_ENDPOINT | PeerFlag.HAS_PRESHARED_KEY
    ctypes.memmove(c.Peer.PublicKey, KEY_B, 32)
    ctypes.memmove(c.Peer.PresharedKey, PSK, 32)
    c.Peer.PersistentKeepalive = 25
    c.Peer.Endpoint.Ipv6.sin6_family = abi.AF_INET6
    c.Peer.Endpoint.Ipv6.sin6_port = int.from_bytes((51821).to_bytes(2, "big"), "little")
    ctypes.memmove(
        c.Peer.Endpoint.Ipv6.sin6_addr.u.Byte, bytes.fromhex("fe80" + "00" * 13 + "01"), 16
    )
    c.Peer.Endpoint.Ipv6.sin6_scope_id = 7
    c.Peer.TxBytes = 1 << 40
    c.Peer.RxBytes = 12345
    c.Peer.LastHandshake = abi.filetime_from_unix_ns(1_700_000_000 * 10**9)
    c.Peer.AllowedIPsCount = 2
    c.V6.AddressFamily = abi.AF_INET6
    c.V6.Cidr = 64
    ctypes.memmove(c.V6.Address.V6.u.Byte, bytes.fromhex("fd00" + "00" * 14), 16)
    c.V4.AddressFamily = abi.AF_INET
    c.V4.Cidr = 24
    c.V4.Flags = AllowedIPFlag.REMOVE
    ctypes.memmove(ctypes.addressof(c.V4.Address.V4), bytes([10, 1, 2, 0]), 4)
    cfg = parse_configuration(bytes(c), ctypes.sizeof(c))
    assert cfg.listen_port == 51820
    assert cfg.flags == InterfaceFlag.HAS_LISTEN_PORT | InterfaceFlag.REPLACE_PEERS
    (peer,) = cfg.peers
    assert peer.endpoint == ("fe80::1%7", 51821)
    assert peer.preshared_key == PSK
    assert peer.persistent_keepalive == 25
    assert (peer.tx_bytes, peer.rx_bytes) == (1 << 40, 12345)
    assert abi.filetime_to_unix_ns(peer.last_handshake) == 1_700_000_000 * 10**9
    assert peer.allowed_ips == (
        AllowedIPConfig("fd00::", 64),
        AllowedIPConfig("10.1.2.0", 24, AllowedIPFlag.REMOVE),
    )
    assert pack_configuration(cfg) == bytes(c)


def test_sizes_of_reference_examples() -> None:
    peer2 = PeerConfig(public_key=KEY_B, allowed_ips=(AllowedIPConfig("10.0.0.0", 8),) * 2)
    cfg = InterfaceConfig(peers=(peer2,))
    assert configuration_size(cfg) == len(pack_configuration(cfg)) == 264
    assert len(pack_configuration(InterfaceConfig())) == 80


def test_pack_rejects_unencodable_values() -> None:
    with pytest.raises(ValueError):
        pack_configuration(InterfaceConfig(private_key=b"short"))
    with pytest.raises(ValueError):
        pack_configuration(InterfaceConfig(listen_port=65536))
    with pytest.raises(ValueError):
        pack_configuration(
            InterfaceConfig(peers=(PeerConfig(allowed_ips=(AllowedIPConfig("10.0.0.0", 33),)),))
        )
    with pytest.raises(ValueError):
        pack_configuration(InterfaceConfig(peers=(PeerConfig(endpoint=("fe80::1%eth0", 1)),)))


def _peer_bytes(
    flags: int = PeerFlag.HAS_PUBLIC_KEY, reserved: int = 0, allowed_count: int = 0
) -> bytearray:
    raw = bytearray(136)
    struct.pack_into("<II", raw, 0, flags, reserved)
    raw[8:40] = KEY_B
    struct.pack_into("<I", raw, 128, allowed_count)
    return raw


def _iface_bytes(peers_count: int) -> bytearray:
    raw = bytearray(80)
    struct.pack_into("<I", raw, 72, peers_count)
    return raw


def _aip_bytes(family: int = 2, cidr: int = 32, flags: int = 0) -> bytes:
    return struct.pack("<16sHBxI", bytes(16), family, cidr, flags)


def _code(buf: bytes, size: int | None = None) -> int:
    with pytest.raises(AbiError) as info:
        parse_configuration(buf, len(buf) if size is None else size)
    return info.value.error_code


def test_malformed_buffers_give_invalid_parameter() -> None:
    peer = _peer_bytes(allowed_count=1)
    cases = {
        "empty": b"",
        "short header": bytes(79),
        "peer count overruns": bytes(_iface_bytes(1)),
        "peer truncated": bytes(_iface_bytes(1) + _peer_bytes()[:135]),
        "huge peer count": bytes(_iface_bytes(0xFFFFFFFF) + _peer_bytes()),
        "no public key flag": bytes(_iface_bytes(1) + _peer_bytes(flags=PeerFlag.HAS_ENDPOINT)),
        "allowed count overruns": bytes(_iface_bytes(1) + peer),
        "allowed count overflows 32 bits": bytes(
            _iface_bytes(1) + _peer_bytes(allowed_count=0xFFFFFFFF) + _aip_bytes()
        ),
        "allowed count * 24 just past size": bytes(
            _iface_bytes(1) + _peer_bytes(allowed_count=2) + _aip_bytes() + bytes(23)
        ),
        "bad family": bytes(_iface_bytes(1) + peer + _aip_bytes(family=10)),
        "family zero": bytes(_iface_bytes(1) + peer + _aip_bytes(family=0)),
        "ipv4 cidr 33": bytes(_iface_bytes(1) + peer + _aip_bytes(2, 33)),
        "ipv6 cidr 129": bytes(_iface_bytes(1) + peer + _aip_bytes(23, 129)),
    }
    for name, buf in cases.items():
        assert _code(buf) == INVALID, name
    # size itself out of range for a DWORD, or negative
    assert _code(bytes(80), -1) == INVALID
    assert _code(bytes(80), 1 << 32) == INVALID


def test_limits_that_are_accepted() -> None:
    for family, cidr in ((2, 32), (23, 128), (2, 0)):
        buf = bytes(_iface_bytes(1) + _peer_bytes(allowed_count=1) + _aip_bytes(family, cidr))
        (peer,) = parse_configuration(buf, len(buf)).peers
        assert peer.allowed_ips[0].cidr == cidr


def test_size_larger_than_buffer_is_noaccess() -> None:
    assert _code(bytes(80), 81) == ErrorCode.ERROR_NOACCESS


def test_size_limits_the_parse_and_trailing_bytes_are_ignored() -> None:
    buf = pack_configuration(_example_config())
    # Extra bytes after the declared records are ignored ...
    assert parse_configuration(buf + bytes(100), len(buf) + 100) == _example_config()
    # ... but the parser never reads past `size`, even if the buffer is longer.
    assert _code(buf, len(buf) - 1) == INVALID


def test_reserved_field_as_the_driver_treats_it() -> None:
    # Without the internal HAS_PROTOCOL_VERSION bit the field is ignored ...
    buf = bytes(_iface_bytes(1) + _peer_bytes(reserved=0xDEADBEEF))
    assert parse_configuration(buf, len(buf)).peers[0].reserved == 0xDEADBEEF
    # ... with it, versions 0 and 1 pass and anything larger is "not implemented".
    flags = PeerFlag.HAS_PUBLIC_KEY | PeerFlag.HAS_PROTOCOL_VERSION
    for version in (0, 1):
        buf = bytes(_iface_bytes(1) + _peer_bytes(flags, version))
        assert parse_configuration(buf, len(buf)).peers[0].reserved == version
    buf = bytes(_iface_bytes(1) + _peer_bytes(flags, 2))
    assert _code(buf) == ErrorCode.ERROR_INVALID_FUNCTION


def test_check_order_follows_the_driver() -> None:
    flags_v = PeerFlag.HAS_PUBLIC_KEY | PeerFlag.HAS_PROTOCOL_VERSION
    # Peer 0 has a bad allowed IP, peer 1 a bad version: peer 0 is seen first.
    buf = bytes(
        _iface_bytes(2)
        + _peer_bytes(allowed_count=1)
        + _aip_bytes(family=99)
        + _peer_bytes(flags_v, 5)
    )
    assert _code(buf) == INVALID
    # Peer 0 has a bad version, peer 1 is truncated: the version error wins.
    buf = bytes(_iface_bytes(2) + _peer_bytes(flags_v, 5) + bytes(10))
    assert _code(buf) == ErrorCode.ERROR_INVALID_FUNCTION
    # Missing public key is checked before the version.
    buf = bytes(_iface_bytes(1) + _peer_bytes(PeerFlag.HAS_PROTOCOL_VERSION, 5))
    assert _code(buf) == INVALID
    # The version is checked before the allowed-IP count.
    buf = bytes(_iface_bytes(1) + _peer_bytes(flags_v, 5, allowed_count=1000))
    assert _code(buf) == ErrorCode.ERROR_INVALID_FUNCTION


def test_remove_peer_skips_its_allowed_ips_unchecked() -> None:
    flags = PeerFlag.HAS_PUBLIC_KEY | PeerFlag.REMOVE
    buf = bytes(
        _iface_bytes(2)
        + _peer_bytes(flags, allowed_count=2)
        + _aip_bytes(family=77)
        + _aip_bytes(2, 200)
        + _peer_bytes(allowed_count=1)
        + _aip_bytes(2, 8)
    )
    removed, kept = parse_configuration(buf, len(buf)).peers
    assert removed.flags & PeerFlag.REMOVE
    assert removed.allowed_ips == ()
    assert kept.allowed_ips == (AllowedIPConfig("0.0.0.0", 8),)
    # The count is still checked against the buffer for a REMOVE peer.
    buf = bytes(_iface_bytes(1) + _peer_bytes(flags, allowed_count=3) + _aip_bytes())
    assert _code(buf) == INVALID


def test_unknown_endpoint_family_is_no_endpoint() -> None:
    raw = _peer_bytes(PeerFlag.HAS_PUBLIC_KEY | PeerFlag.HAS_ENDPOINT)
    struct.pack_into("<H", raw, 76, 10)  # Linux AF_INET6: not this ABI's value
    buf = bytes(_iface_bytes(1) + raw)
    assert parse_configuration(buf, len(buf)).peers[0].endpoint is None


def test_unknown_flag_bits_are_kept() -> None:
    raw = _peer_bytes(PeerFlag.HAS_PUBLIC_KEY | 0x100)
    iface = _iface_bytes(1)
    struct.pack_into("<I", iface, 0, 0x30)
    cfg = parse_configuration(bytes(iface + raw), 216)
    assert int(cfg.flags) == 0x30
    assert int(cfg.peers[0].flags) == 0x101


def test_parse_accepts_memoryview_and_bytearray() -> None:
    buf = pack_configuration(_example_config())
    assert parse_configuration(memoryview(buf), len(buf)) == _example_config()
    assert parse_configuration(bytearray(buf), len(buf)) == _example_config()
    assert parse_configuration(memoryview(bytearray(buf)).cast("I"), len(buf)) == _example_config()


# ---------------------------------------------------------------------------
# Property tests
# ---------------------------------------------------------------------------

keys = st.binary(min_size=32, max_size=32)
u16 = st.integers(0, 0xFFFF)
u64 = st.integers(0, (1 << 64) - 1)
ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)

allowed_ips = st.one_of(
    st.builds(
        AllowedIPConfig,
        ipv4,
        st.integers(0, 32),
        st.sampled_from([*AllowedIPFlag, AllowedIPFlag(0)]),
    ),
    st.builds(AllowedIPConfig, ipv6, st.integers(0, 128), st.just(AllowedIPFlag(0))),
)
endpoints = st.one_of(
    st.none(),
    st.tuples(ipv4, u16),
    st.tuples(ipv6, u16),
    st.tuples(st.builds(lambda a, s: f"{a}%{s}", ipv6, st.integers(1, 2**32 - 1)), u16),
)
peer_flags = st.integers(0, 0xFF).map(
    lambda f: PeerFlag(
        (f | PeerFlag.HAS_PUBLIC_KEY) & ~PeerFlag.REMOVE & ~PeerFlag.HAS_PROTOCOL_VERSION
    )
)
peers = st.builds(
    PeerConfig,
    flags=peer_flags,
    public_key=keys,
    preshared_key=keys,
    persistent_keepalive=u16,
    endpoint=endpoints,
    tx_bytes=u64,
    rx_bytes=u64,
    last_handshake=u64,
    allowed_ips=st.lists(allowed_ips, max_size=4).map(tuple),
    reserved=st.integers(0, 2**32 - 1),
)
configs = st.builds(
    InterfaceConfig,
    flags=st.integers(0, 0xF).map(InterfaceFlag),
    listen_port=u16,
    private_key=keys,
    public_key=keys,
    peers=st.lists(peers, max_size=4).map(tuple),
)


@settings(max_examples=200, deadline=None)
@given(configs)
def test_pack_parse_round_trip(cfg: InterfaceConfig) -> None:
    buf = pack_configuration(cfg)
    assert len(buf) == configuration_size(cfg)
    assert parse_configuration(buf, len(buf)) == cfg
    # Endpoint and keys land where the ctypes layout says.
    off = 80
    for peer in cfg.peers:
        c_peer = abi.WIREGUARD_PEER.from_buffer_copy(buf, off)
        assert bytes(c_peer.PublicKey) == peer.public_key
        assert c_peer.LastHandshake == peer.last_handshake
        assert c_peer.Endpoint.si_family == (
            0 if peer.endpoint is None else 2 if "." in peer.endpoint[0] else 23
        )
        off += 136 + 24 * len(peer.allowed_ips)


def _parse_only_abi_errors(buf: bytes, size: int) -> None:
    try:
        parse_configuration(buf, size)
    except AbiError as exc:
        assert exc.error_code in (
            ErrorCode.ERROR_INVALID_PARAMETER,
            ErrorCode.ERROR_INVALID_FUNCTION,
            ErrorCode.ERROR_NOACCESS,
        )


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=600), st.integers(-5, 700))
def test_fuzz_random_buffers_raise_only_abi_error(buf: bytes, size: int) -> None:
    _parse_only_abi_errors(buf, size)


@settings(max_examples=500, deadline=None)
@given(configs, st.data())
def test_fuzz_mutated_valid_buffers_raise_only_abi_error(
    cfg: InterfaceConfig, data: st.DataObject
) -> None:
    buf = bytearray(pack_configuration(cfg))
    for _ in range(data.draw(st.integers(1, 8))):
        pos = data.draw(st.integers(0, len(buf) - 1))
        buf[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(buf)))
    _parse_only_abi_errors(bytes(buf), cut)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))
def test_fuzz_huge_counts_never_exhaust_memory(peers_count: int, allowed_count: int) -> None:
    buf = bytes(_iface_bytes(peers_count) + _peer_bytes(allowed_count=allowed_count))
    _parse_only_abi_errors(buf, len(buf))
