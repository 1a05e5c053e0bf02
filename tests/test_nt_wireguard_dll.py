"""wgpy.nt.wireguard_dll: the ctypes binding to a wireguard.dll.

On Linux the binding is pointed at wgpy's own C library (same twelve exports, plus
WireGuardGetLastError), so the binding and the Adapter layer run for real against
it.  On Windows, $WGPY_WIREGUARD_DLL may name a real wireguard.dll; without an
elevated process and the driver only the driver-version query can be checked, and
that is all the test does (never run by the authors, see docs/nt.md).
"""

from __future__ import annotations

import os
import secrets
import shutil
import sys
from pathlib import Path

import pytest

from wgpy.noise.primitives import clamp, public_key
from wgpy.nt.abi import (
    AdapterLogState,
    AdapterState,
    AllowedIPConfig,
    ErrorCode,
    InterfaceConfig,
    InterfaceFlag,
    LoggerLevel,
    PeerConfig,
    pack_configuration,
)
from wgpy.nt.adapter import Adapter
from wgpy.nt.errors import WireGuardError
from wgpy.nt.wireguard_dll import WireGuardDll

LINUX = sys.platform.startswith("linux")


@pytest.fixture(scope="session")
def our_library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not LINUX:
        pytest.skip("wgpy's C library is built on Linux")
    if shutil.which("gcc") is None:
        pytest.skip("needs gcc to build wgpy's C library")
    import sysconfig

    if not sysconfig.get_config_var("Py_ENABLE_SHARED"):
        pytest.skip("needs a shared libpython (cffi embedding)")
    from wgpy.nt import _build

    return _build.library_path(cache_dir=tmp_path_factory.getbasetemp() / "wgpy-cache")


def test_a_library_without_the_exports_is_refused(tmp_path: Path) -> None:
    if not LINUX:
        pytest.skip("uses the C library of Linux")
    import ctypes.util

    libc = ctypes.util.find_library("c")
    assert libc is not None
    with pytest.raises(OSError, match=r"WireGuardGetLastError|missing export"):
        WireGuardDll(libc)
    with pytest.raises(OSError):
        WireGuardDll(tmp_path / "absent.so")


@pytest.mark.skipif(not LINUX, reason="runs against wgpy's Linux library")
def test_adapter_through_the_binding(
    our_library: Path, fresh_netns: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from netns import call_in_ns

    from wgpy.nt import api

    if not os.path.exists("/dev/net/tun"):
        pytest.skip("needs /dev/net/tun")
    monkeypatch.setenv("WGPY_NT_RUN_DIR", str(tmp_path / "run"))
    dll = WireGuardDll(our_library)
    lines: list[tuple[int, int, str]] = []
    dll.WireGuardSetLogger(lambda level, ts, msg: lines.append((level, ts, msg)))
    name = f"Dll {secrets.token_hex(3)}"
    try:
        with call_in_ns(fresh_netns, Adapter.create, name, "Test", api=dll) as adapter:
            assert isinstance(adapter.handle, int)
            private = clamp(secrets.token_bytes(32))
            peer = public_key(clamp(secrets.token_bytes(32)))
            adapter.set_config(
                InterfaceConfig(
                    flags=InterfaceFlag.HAS_PRIVATE_KEY,
                    private_key=private,
                    peers=(
                        PeerConfig(public_key=peer, allowed_ips=(AllowedIPConfig("10.4.0.0", 16),)),
                    ),
                )
            )
            got = adapter.get_config()
            assert got.private_key == private and got.peers[0].public_key == peer
            adapter.set_logging(AdapterLogState.ON_WITH_PREFIX)
            index = adapter.ifindex
            assert (LoggerLevel.INFO, f"{index}: Interface created") in [
                (lv, m) for lv, _, m in lines
            ]
            assert adapter.state == AdapterState.DOWN
            adapter.up()
            assert adapter.state == AdapterState.UP
            # Same adapter as seen through wgpy's Python API, by name in other case.
            with Adapter.open(name.upper()) as same:
                assert same.luid == adapter.luid
                assert same.state == AdapterState.UP
            # Failures: the last error comes from WireGuardGetLastError.
            bad = pack_configuration(InterfaceConfig())
            assert not dll.WireGuardSetConfiguration(adapter.handle, bad, 79)
            assert dll.GetLastError() == ErrorCode.ERROR_INVALID_PARAMETER
            assert lines[-1][0] == LoggerLevel.ERR
            ok, needed = dll.WireGuardGetConfiguration(adapter.handle, None, 0)
            assert not ok and dll.GetLastError() == ErrorCode.ERROR_MORE_DATA and needed > 80
            with pytest.raises(WireGuardError) as info:
                Adapter.open("absent " + secrets.token_hex(3), api=dll)
            assert info.value.code == ErrorCode.ERROR_NOT_FOUND
            assert dll.WireGuardGetRunningDriverVersion() == api.WireGuardGetRunningDriverVersion()
            assert not dll.WireGuardDeleteDriver()
            assert dll.GetLastError() == ErrorCode.ERROR_INF_IN_USE_BY_DEVICES
    finally:
        dll.WireGuardSetLogger(None)


@pytest.mark.skipif(sys.platform != "win32", reason="a real wireguard.dll runs on Windows only")
def test_real_wireguard_dll_version_query() -> None:
    path = os.environ.get("WGPY_WIREGUARD_DLL")
    if not path:
        pytest.skip("set WGPY_WIREGUARD_DLL to a wireguard.dll to run this")
    dll = WireGuardDll(path)
    version = dll.WireGuardGetRunningDriverVersion()
    if version == 0:
        assert dll.GetLastError() == ErrorCode.ERROR_FILE_NOT_FOUND  # driver not loaded
    else:
        assert version >> 16 < 100
