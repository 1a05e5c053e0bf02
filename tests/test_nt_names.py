"""The twelve wireguard.h functions have one list (wgpy.nt.abi.WIREGUARD_FUNCTIONS);
every other place that names them is checked against it here: the header, the
C library's source, the Python API, the package's exports and the binding to
the real wireguard.dll."""

from __future__ import annotations

import re
from pathlib import Path

import wgpy.nt
from wgpy.nt import api, wireguard_dll
from wgpy.nt.abi import WIREGUARD_FUNCTIONS

NT = Path(wgpy.nt.__file__).resolve().parent


def test_the_header_declares_exactly_these_functions_in_this_order() -> None:
    header = (NT / "include" / "wireguard.h").read_text()
    declared = re.findall(r"^WIREGUARD_\w+_FUNC (WireGuard\w+);", header, re.M)
    # WireGuardGetLastError is wgpy's addition for systems without GetLastError.
    assert tuple(d for d in declared if d != "WireGuardGetLastError") == WIREGUARD_FUNCTIONS


def test_the_c_library_defines_each() -> None:
    source = (NT / "c" / "wgpy_nt.c").read_text()
    for name in WIREGUARD_FUNCTIONS:
        assert re.search(rf"(^|WINAPI ){name}\(", source, re.M), name


def test_python_api_package_and_dll_binding_name_each() -> None:
    assert set(WIREGUARD_FUNCTIONS) <= set(api.__all__)
    assert set(WIREGUARD_FUNCTIONS) <= set(wgpy.nt.__all__)
    for name in WIREGUARD_FUNCTIONS:
        assert callable(getattr(api, name)) and callable(getattr(wgpy.nt, name))
        assert callable(getattr(api.WgpyApi, name))
        assert callable(getattr(wireguard_dll.WireGuardDll, name)), name


def test_the_dll_binding_declares_them_in_the_headers_order() -> None:
    sigs = wireguard_dll.signatures(object())
    assert tuple(sigs) == WIREGUARD_FUNCTIONS
