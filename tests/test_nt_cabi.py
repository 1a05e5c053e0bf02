"""wgpy's C-ABI library (wgpy.nt._build): build, exports, and the C calling
convention exercised through ctypes in this process.

The library is built once per test session into a temporary cache.  Adapters are
created in namespaces made for the test (the C call runs on a thread that entered
the namespace) and closed at the end.  C programs that load the library themselves
are in test_nt_example.py.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import secrets
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from netns import call_in_ns

from wgpy.noise.primitives import clamp, public_key
from wgpy.nt import _build, api
from wgpy.nt.abi import (
    FILETIME_UNIX_EPOCH,
    INTERFACE_SIZE,
    NET_LUID,
    PEER_SIZE,
    WIREGUARD_FUNCTIONS,
    AdapterLogState,
    AdapterState,
    AllowedIPConfig,
    ErrorCode,
    InterfaceConfig,
    InterfaceFlag,
    LoggerLevel,
    PeerConfig,
    PeerFlag,
    pack_configuration,
    parse_configuration,
)

E = ErrorCode
EXPORTS = {
    # wgpy.h's extensions for userspace adapters.
    "WgpySetAdapterAddresses",
    "WgpyStartSession",
    "WgpyEndSession",
    "WgpyGetReadWaitEvent",
    "WgpyReceivePacket",
    "WgpyReleaseReceivePacket",
    "WgpyAllocateSendPacket",
    "WgpySendPacket",
    *WIREGUARD_FUNCTIONS,  # wireguard.h
    "WireGuardGetLastError",
}

LOGGER = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_uint64, ctypes.c_void_p)


def _can_build() -> str | None:
    if shutil.which("gcc") is None and shutil.which("cc") is None:
        return "a C compiler"
    import sysconfig

    if not sysconfig.get_config_var("Py_ENABLE_SHARED"):
        return "a shared libpython (cffi embedding)"
    if not Path(sysconfig.get_paths()["include"], "Python.h").exists():
        return "the Python headers (Python.h)"
    return None


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.getbasetemp() / "wgpy-cache"


@pytest.fixture(scope="session")
def library_file(cache_dir: Path) -> Path:
    missing = _can_build()
    if missing:
        pytest.skip(f"needs {missing} to build the C library")
    return _build.library_path(cache_dir=cache_dir)


@pytest.fixture(scope="session")
def lib(library_file: Path) -> ctypes.CDLL:
    dll = ctypes.CDLL(str(library_file), use_errno=True)
    vp, u32 = ctypes.c_void_p, ctypes.c_uint32
    sigs: dict[str, tuple[list[object], object]] = {
        "WireGuardCreateAdapter": ([vp, vp, vp], vp),
        "WireGuardOpenAdapter": ([vp], vp),
        "WireGuardCloseAdapter": ([vp], None),
        "WireGuardGetAdapterLUID": ([vp, vp], None),
        "WireGuardGetRunningDriverVersion": ([], u32),
        "WireGuardDeleteDriver": ([], ctypes.c_int),
        "WireGuardSetLogger": ([vp], None),
        "WireGuardSetAdapterLogging": ([vp, ctypes.c_int], ctypes.c_int),
        "WireGuardSetAdapterState": ([vp, ctypes.c_int], ctypes.c_int),
        "WireGuardGetAdapterState": ([vp, vp], ctypes.c_int),
        "WireGuardSetConfiguration": ([vp, vp, u32], ctypes.c_int),
        "WireGuardGetConfiguration": ([vp, vp, vp], ctypes.c_int),
        "WireGuardGetLastError": ([], u32),
    }
    for name, (args, res) in sigs.items():
        fn = getattr(dll, name)
        fn.argtypes = args
        fn.restype = res
    return dll


def wstr(text: str) -> ctypes.Array[ctypes.c_char]:
    raw = text.encode("utf-16-le", "surrogatepass") + b"\0\0"
    return ctypes.create_string_buffer(raw, len(raw))


@pytest.fixture
def c_adapter(
    lib: ctypes.CDLL,
    fresh_netns: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[int]:
    """A handle (pointer value) to an adapter created through the C ABI."""
    if not os.path.exists("/dev/net/tun"):
        pytest.skip("needs /dev/net/tun")
    monkeypatch.setenv("WGPY_NT_RUN_DIR", str(tmp_path / "run"))
    name = f"cabi{secrets.token_hex(3)}"

    def create() -> tuple[int | None, int]:
        handle = lib.WireGuardCreateAdapter(wstr(name), wstr("Test"), None)
        return handle, lib.WireGuardGetLastError()

    handle, err = call_in_ns(fresh_netns, create)
    assert handle, f"create failed: {err}"
    try:
        yield int(handle)
    finally:
        lib.WireGuardSetLogger(None)
        lib.WireGuardCloseAdapter(handle)


def c_set(
    lib: ctypes.CDLL, handle: int, buf: bytes | ctypes.Array[ctypes.c_char], size: int
) -> tuple[int, int, int]:
    """(result, WireGuardGetLastError, errno) of a SetConfiguration call."""
    ctypes.set_errno(0)
    ok = lib.WireGuardSetConfiguration(handle, buf, size)
    return ok, lib.WireGuardGetLastError(), ctypes.get_errno()


def c_get(lib: ctypes.CDLL, handle: int) -> InterfaceConfig:
    """GetConfiguration through C in the ERROR_MORE_DATA loop."""
    size = ctypes.c_uint32(INTERFACE_SIZE)
    while True:
        buf = ctypes.create_string_buffer(size.value)
        if lib.WireGuardGetConfiguration(handle, buf, ctypes.byref(size)):
            return parse_configuration(buf.raw, size.value)
        assert lib.WireGuardGetLastError() == E.ERROR_MORE_DATA


def key() -> bytes:
    return public_key(clamp(secrets.token_bytes(32)))


# ---------------------------------------------------------------------------
# Build and exports
# ---------------------------------------------------------------------------


def test_library_exports_exactly_the_api(library_file: Path) -> None:
    nm = shutil.which("nm")
    if nm is None:
        pytest.skip("needs nm (binutils) to list the exports")
    out = subprocess.run(
        [nm, "-D", "--defined-only", str(library_file)], capture_output=True, text=True, check=True
    ).stdout
    exported = {line.split()[-1] for line in out.splitlines() if " T " in line}
    # cffi also exports the module's init function; nothing else.
    assert {s for s in exported if not s.startswith("PyInit_")} == EXPORTS


def test_main_prints_paths_and_does_not_rebuild(library_file: Path, cache_dir: Path) -> None:
    env = dict(os.environ, WGPY_CACHE_DIR=str(cache_dir))
    run = [sys.executable, "-m", "wgpy.nt"]
    inc = subprocess.run(
        [*run, "--include-path"], capture_output=True, text=True, env=env, check=True
    )
    assert Path(inc.stdout.strip(), "wireguard.h").is_file()
    before = library_file.stat().st_mtime_ns
    out = subprocess.run(
        [*run, "--library-path"], capture_output=True, text=True, env=env, check=True
    )
    assert Path(out.stdout.strip()) == library_file
    assert library_file.stat().st_mtime_ns == before
    out = subprocess.run(
        [*run, "--library-path", "--no-build"], capture_output=True, text=True, env=env, check=True
    )
    assert Path(out.stdout.strip()) == library_file
    empty = dict(os.environ, WGPY_CACHE_DIR=str(cache_dir / "nothing-here"))
    missing = subprocess.run(
        [*run, "--library-path", "--no-build"],
        capture_output=True,
        text=True,
        env=empty,
        check=False,
    )
    assert missing.returncode == 1 and "not built" in missing.stderr


def test_source_change_builds_a_new_library(
    library_file: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = _build.c_source() + "\n/* changed */\n"
    monkeypatch.setattr(_build, "c_source", lambda: source)
    with pytest.raises(FileNotFoundError):
        _build.library_path(build=False, cache_dir=cache_dir)
    rebuilt = _build.library_path(cache_dir=cache_dir)
    assert rebuilt != library_file and rebuilt.is_file()
    assert library_file.is_file()


# ---------------------------------------------------------------------------
# Calls through the C ABI
# ---------------------------------------------------------------------------


def test_configuration_luid_state_through_c(lib: ctypes.CDLL, c_adapter: int) -> None:
    handle = c_adapter
    py_handle = api.handle_from_id(handle)
    assert py_handle is not None  # the C handle is the Python handle's id
    luid = NET_LUID()
    lib.WireGuardGetAdapterLUID(handle, ctypes.byref(luid))
    assert luid.Info.IfType == 53 and luid.Info.NetLuidIndex == py_handle.backend.ifindex
    private = clamp(secrets.token_bytes(32))
    a = key()
    cfg = pack_configuration(
        InterfaceConfig(
            flags=InterfaceFlag.HAS_PRIVATE_KEY,
            private_key=private,
            peers=(PeerConfig(public_key=a, allowed_ips=(AllowedIPConfig("10.3.0.0", 16),)),),
        )
    )
    assert c_set(lib, handle, cfg, len(cfg))[0] == 1
    got = c_get(lib, handle)
    assert got.private_key == private and [p.public_key for p in got.peers] == [a]
    state = ctypes.c_int(-1)
    assert lib.WireGuardGetAdapterState(handle, ctypes.byref(state)) and state.value == 0
    assert lib.WireGuardSetAdapterState(handle, AdapterState.UP)
    assert lib.WireGuardGetAdapterState(handle, ctypes.byref(state)) and state.value == 1
    ctypes.set_errno(0)
    assert not lib.WireGuardSetAdapterState(handle, 2)
    assert lib.WireGuardGetLastError() == E.ERROR_INVALID_PARAMETER
    assert ctypes.get_errno() == errno.EINVAL
    assert not lib.WireGuardGetAdapterState(handle, None)
    assert lib.WireGuardGetLastError() == E.ERROR_INVALID_PARAMETER
    version = lib.WireGuardGetRunningDriverVersion()
    assert version == api.WireGuardGetRunningDriverVersion() and version != 0


def test_more_data_loop_and_size_query(lib: ctypes.CDLL, c_adapter: int) -> None:
    cfg = pack_configuration(
        InterfaceConfig(peers=(PeerConfig(public_key=key()), PeerConfig(public_key=key())))
    )
    assert c_set(lib, c_adapter, cfg, len(cfg))[0]
    size = ctypes.c_uint32(0)
    ctypes.set_errno(0)
    assert not lib.WireGuardGetConfiguration(c_adapter, None, ctypes.byref(size))
    assert lib.WireGuardGetLastError() == E.ERROR_MORE_DATA and ctypes.get_errno() == errno.ERANGE
    needed = INTERFACE_SIZE + 2 * PEER_SIZE
    assert size.value == needed
    # Room for one peer: it is written, PeersCount says 1, the size asked is the full one.
    size.value = INTERFACE_SIZE + PEER_SIZE
    buf = ctypes.create_string_buffer(size.value)
    assert not lib.WireGuardGetConfiguration(c_adapter, buf, ctypes.byref(size))
    assert size.value == needed
    assert len(parse_configuration(buf.raw, INTERFACE_SIZE + PEER_SIZE).peers) == 1
    assert not lib.WireGuardGetConfiguration(c_adapter, buf, None)
    assert lib.WireGuardGetLastError() == E.ERROR_INVALID_PARAMETER


def test_bad_buffers_through_c_keep_the_configuration(lib: ctypes.CDLL, c_adapter: int) -> None:
    keep = key()
    good = pack_configuration(
        InterfaceConfig(
            flags=InterfaceFlag.HAS_PRIVATE_KEY,
            private_key=clamp(secrets.token_bytes(32)),
            peers=(PeerConfig(public_key=keep, allowed_ips=(AllowedIPConfig("10.8.0.0", 16),)),),
        )
    )
    assert c_set(lib, c_adapter, good, len(good))[0]
    before = c_get(lib, c_adapter)

    replace = InterfaceConfig(
        flags=InterfaceFlag.REPLACE_PEERS,
        peers=(PeerConfig(public_key=key(), allowed_ips=(AllowedIPConfig("10.9.0.0", 16),)),),
    )
    packed = bytearray(pack_configuration(replace))
    overrun = bytearray(packed)
    overrun[INTERFACE_SIZE + 128 : INTERFACE_SIZE + 132] = (3).to_bytes(4, "little")
    bad_cidr = bytearray(packed)
    bad_cidr[INTERFACE_SIZE + PEER_SIZE + 18] = 40
    no_key = bytearray(packed)
    no_key[INTERFACE_SIZE : INTERFACE_SIZE + 4] = int(PeerFlag.HAS_ENDPOINT).to_bytes(4, "little")
    for buf, size in (
        (packed, 79),
        (overrun, len(overrun)),
        (bad_cidr, len(bad_cidr)),
        (no_key, len(no_key)),
    ):
        assert c_set(lib, c_adapter, bytes(buf), size) == (
            0,
            E.ERROR_INVALID_PARAMETER,
            errno.EINVAL,
        )
    assert c_set(lib, c_adapter, None, 100) == (0, E.ERROR_INVALID_PARAMETER, errno.EINVAL)  # type: ignore[arg-type]
    assert c_set(lib, c_adapter, bytes(packed), 0) == (0, E.ERROR_INVALID_PARAMETER, errno.EINVAL)

    # A byte count running into an unmapped page: ERROR_NOACCESS, no crash.
    page = mmap.PAGESIZE
    region = mmap.mmap(-1, 2 * page, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    try:
        base = ctypes.addressof(ctypes.c_char.from_buffer(region))
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        assert libc.mprotect(base + page, page, 0) == 0  # PROT_NONE guard page
        start = page - len(packed)
        region[start:page] = bytes(packed)
        assert c_set(lib, c_adapter, base + start, len(packed) + 64) == (
            0,
            E.ERROR_NOACCESS,
            errno.EFAULT,
        )
        # ... and the same for GetConfiguration writing into the guard page.
        size = ctypes.c_uint32(4096)
        assert not lib.WireGuardGetConfiguration(c_adapter, base + page, ctypes.byref(size))
        assert lib.WireGuardGetLastError() == E.ERROR_NOACCESS
        assert not lib.WireGuardGetConfiguration(c_adapter, None, base + page)
        assert lib.WireGuardGetLastError() == E.ERROR_NOACCESS
        assert libc.mprotect(base + page, page, mmap.PROT_READ | mmap.PROT_WRITE) == 0
    finally:
        del base
        region.close()
    assert c_get(lib, c_adapter) == before


def test_handles_names_and_errno(lib: ctypes.CDLL, c_adapter: int, fresh_netns: str) -> None:
    ctypes.set_errno(0)
    assert not lib.WireGuardOpenAdapter(wstr("no such " + secrets.token_hex(3)))
    assert lib.WireGuardGetLastError() == E.ERROR_NOT_FOUND and ctypes.get_errno() == errno.ENOENT
    assert not lib.WireGuardOpenAdapter(None)
    assert lib.WireGuardGetLastError() == E.ERROR_INVALID_PARAMETER

    def too_long() -> tuple[int | None, int, int]:
        ctypes.set_errno(0)
        handle = lib.WireGuardCreateAdapter(wstr("n" * 200), wstr("Test"), None)
        return handle, lib.WireGuardGetLastError(), ctypes.get_errno()

    assert call_in_ns(fresh_netns, too_long) == (None, E.ERROR_BUFFER_OVERFLOW, errno.ENAMETOOLONG)
    ctypes.set_errno(0)
    assert not lib.WireGuardSetAdapterLogging(0xDEAD0, AdapterLogState.ON)
    assert (
        lib.WireGuardGetLastError() == E.ERROR_INVALID_HANDLE and ctypes.get_errno() == errno.EBADF
    )
    lib.WireGuardCloseAdapter(None)
    lib.WireGuardCloseAdapter(0xDEAD0)
    luid = NET_LUID()
    luid.Value = 12345
    lib.WireGuardGetAdapterLUID(0xDEAD0, ctypes.byref(luid))
    assert luid.Value == 0
    # An opened handle through C, by the name in other case, is a different handle.
    py_handle = api.handle_from_id(c_adapter)
    assert py_handle is not None
    opened = lib.WireGuardOpenAdapter(wstr(py_handle.backend.display_name().upper()))
    assert opened and opened != c_adapter
    lib.WireGuardCloseAdapter(opened)
    assert lib.WireGuardSetAdapterState(c_adapter, AdapterState.DOWN)  # still there


def test_last_error_is_per_thread(lib: ctypes.CDLL, c_adapter: int) -> None:
    seen: list[int] = []

    def other() -> None:
        seen.append(lib.WireGuardGetLastError())
        lib.WireGuardOpenAdapter(wstr("missing " + secrets.token_hex(3)))
        seen.append(lib.WireGuardGetLastError())

    assert not lib.WireGuardSetAdapterState(c_adapter, 9)
    thread = threading.Thread(target=other)
    thread.start()
    thread.join()
    assert seen == [0, E.ERROR_NOT_FOUND]
    assert lib.WireGuardGetLastError() == E.ERROR_INVALID_PARAMETER


def test_logger_callback_from_python_into_c(lib: ctypes.CDLL, c_adapter: int) -> None:
    lines: list[tuple[int, int, str]] = []

    def on_line(level: int, timestamp: int, message: int) -> None:
        text = (
            ctypes.wstring_at(message) if ctypes.sizeof(ctypes.c_wchar) == 2 else _utf16z(message)
        )
        lines.append((level, timestamp, text))

    callback = LOGGER(on_line)
    lib.WireGuardSetLogger(callback)
    py_handle = api.handle_from_id(c_adapter)
    assert py_handle is not None
    index = py_handle.backend.ifindex
    assert lib.WireGuardSetAdapterLogging(c_adapter, AdapterLogState.ON_WITH_PREFIX)
    assert lines and lines[0][2] == f"{index}: Interface created"
    assert lib.WireGuardSetAdapterState(c_adapter, AdapterState.UP)
    assert lines[-1][:1] == (LoggerLevel.INFO,) and lines[-1][2] == f"{index}: Interface up"
    assert not lib.WireGuardOpenAdapter(wstr("nope\u00e9 " + secrets.token_hex(3)))
    assert lines[-1][0] == LoggerLevel.ERR
    assert lines[-1][2] == "WireGuardOpenAdapter: Element not found. (Code 0x00000490)"
    import time

    now = time.time_ns() // 100 + FILETIME_UNIX_EPOCH
    assert all(now - 600_000_000 < ts <= now for _, ts, _ in lines)
    count = len(lines)
    lib.WireGuardSetLogger(None)
    assert lib.WireGuardSetAdapterState(c_adapter, AdapterState.DOWN)
    assert len(lines) == count


def _utf16z(address: int) -> str:
    out = bytearray()
    while True:
        unit = ctypes.string_at(address + len(out), 2)
        if unit == b"\0\0":
            return out.decode("utf-16-le", "surrogatepass")
        out += unit


def test_delete_driver_through_c(lib: ctypes.CDLL, c_adapter: int) -> None:
    ctypes.set_errno(0)
    assert not lib.WireGuardDeleteDriver()
    assert lib.WireGuardGetLastError() == E.ERROR_INF_IN_USE_BY_DEVICES
    assert ctypes.get_errno() == errno.EBUSY
