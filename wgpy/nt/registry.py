"""Where wgpy's WireGuardNT-style adapters are recorded, so other processes find them.

WireGuardNT keeps an adapter's name in a device property that every process can
enumerate.  wgpy keeps one small JSON file per adapter in a run directory
(``$WGPY_NT_RUN_DIR``, else ``/var/run/wgpy-nt`` on Linux and
``%ProgramData%\\wgpy\\nt`` on Windows, else, for a process that may not write
there, the user's own directory: see :mod:`wgpy.paths`), written by the process
that owns the adapter and read by any process that opens it.  The file records the display name
(up to 127 UTF-16 units, matched ignoring case), the system interface name that
carries it (a Linux ifname is at most 15 bytes), the interface index (the LUID's
NetLuidIndex), the owner's PID and start time (to recognise entries of dead
processes, which are removed on sight), and the path of the owner's network
namespace (so other processes can bring the link up and down).

All changes happen under an exclusive lock on ``.lock`` in the run directory, so
concurrent creators agree on who holds which name.  Interface-name mapping:

* the display name itself, when it is a valid interface name (ASCII, at most 15
  bytes, no ``/``, ``:`` or white space, not ``.``/``..``) and neither an interface
  nor a UAPI socket of that name exists;
* otherwise a derived name: up to 9 characters of the name's ASCII letters, digits,
  ``_``, ``-`` and ``.`` (``wgnt`` if none), then ``-`` and 4 hex digits of a hash of
  the name and an attempt counter, e.g. ``My Tunnel #1`` -> ``MyTunnel1-3fa2``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from wgpy import paths

__all__ = [
    "AdapterRecord",
    "Registry",
    "fold_name",
    "process_start_time",
    "run_directory",
    "valid_ifname",
]

_IFNAMSIZ = 16
_DERIVED_STEM = 9
_ENV_RUN_DIR = "WGPY_NT_RUN_DIR"


def run_directory() -> str:
    """The registry directory (see the module docstring and :mod:`wgpy.paths`)."""
    return paths.registry_directory()


def fold_name(name: str) -> str:
    """The comparison key of an adapter name: ASCII letters folded to lower case
    (``_wcsicmp`` in the C locale leaves other characters alone)."""
    return name.translate(_ASCII_LOWER)


_ASCII_LOWER = {c: c + 32 for c in range(ord("A"), ord("Z") + 1)}


def valid_ifname(name: str) -> bool:
    """Whether ``name`` can be used unchanged as a Linux interface name."""
    if not name or not name.isascii() or len(name) >= _IFNAMSIZ:
        return False
    if name in (".", "..") or any(c in name for c in "/:%"):
        return False
    return all(c.isprintable() and not c.isspace() for c in name)


def process_start_time(pid: int) -> int | None:
    """The start time of ``pid`` in clock ticks since boot (Linux), None if the
    process does not exist; 0 where it cannot be read (other systems)."""
    if sys.platform == "win32":
        return 0 if _pid_alive(pid) else None
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        return None
    except OSError:
        return 0 if _pid_alive(pid) else None
    # Field 22 (starttime) counts from after the ")" closing the command name.
    rest = data[data.rfind(b")") + 2 :].split()
    try:
        return int(rest[19])
    except (IndexError, ValueError):
        return 0


def _pid_alive(pid: int) -> bool:
    if sys.platform == "win32":
        # Never os.kill(pid, 0) here: on Windows that terminates the process.
        return _win32_pid_alive(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


@dataclass(frozen=True)
class AdapterRecord:
    """One registry entry."""

    #: Display name (the WireGuardNT adapter name).
    name: str
    #: System interface name (Linux ifname / Wintun adapter name).
    ifname: str
    #: Interface index in the owner's namespace (the LUID's NetLuidIndex).
    ifindex: int
    tunnel_type: str
    guid: str
    pid: int
    start_time: int
    #: A path another process can open to enter the adapter's network namespace.
    netns: str
    #: The UAPI endpoint (Unix socket path or named pipe).
    uapi: str
    #: The adapter's inner side: "tun" (a TUN/Wintun device) or "userspace".
    inner: str = "tun"
    #: The adapter state, recorded by the owner of a userspace adapter (which
    #: has no link another process could read).
    up: bool = False

    def alive(self) -> bool:
        """Whether the owning process is still the one that wrote this entry."""
        now = process_start_time(self.pid)
        return now is not None and (now == self.start_time or now == 0 or self.start_time == 0)


class Registry:
    """The adapter registry in one run directory."""

    def __init__(self, directory: str | None = None) -> None:
        self.directory = directory or run_directory()

    # -- locking ---------------------------------------------------------------

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the registry lock (exclusive, across processes)."""
        os.makedirs(self.directory, mode=0o755, exist_ok=True)
        fd = os.open(os.path.join(self.directory, ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if sys.platform == "win32":
                import msvcrt

                msvcrt.locking(fd, msvcrt.LK_LOCK, 1)
                try:
                    yield
                finally:
                    os.lseek(fd, 0, os.SEEK_SET)
                    msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
            else:
                import fcntl

                fcntl.flock(fd, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    # -- entries ---------------------------------------------------------------

    def _path(self, ifname: str) -> str:
        return os.path.join(self.directory, ifname + ".json")

    def _read(self, path: str) -> AdapterRecord | None:
        try:
            with open(path, encoding="utf-8") as fh:
                data = json.load(fh)
            return AdapterRecord(**data)
        except (OSError, ValueError, TypeError):
            return None

    def write(self, record: AdapterRecord) -> None:
        """Create or replace an entry (atomically).  Call with the lock held."""
        os.makedirs(self.directory, mode=0o755, exist_ok=True)
        path = self._path(record.ifname)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(dataclasses.asdict(record), fh)
        os.replace(tmp, path)

    def remove(self, ifname: str, pid: int | None = None) -> None:
        """Delete the entry for ``ifname`` (only if written by ``pid``, when given)."""
        path = self._path(ifname)
        if pid is not None:
            record = self._read(path)
            if record is None or record.pid != pid:
                return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)

    def entries(self) -> list[AdapterRecord]:
        """Live entries; entries of dead owners are deleted.  Call with the lock held."""
        try:
            names = sorted(os.listdir(self.directory))
        except FileNotFoundError:
            return []
        out = []
        for fname in names:
            if not fname.endswith(".json"):
                continue
            path = os.path.join(self.directory, fname)
            record = self._read(path)
            if record is None:
                continue
            if not record.alive():
                with contextlib.suppress(OSError):
                    os.unlink(path)
                continue
            out.append(record)
        return out

    def lookup(self, ifname: str) -> AdapterRecord | None:
        """The entry for interface ``ifname``, if its owner lives.  Call with
        the lock held."""
        record = self._read(self._path(ifname))
        return record if record is not None and record.alive() else None

    def find(self, name: str) -> AdapterRecord | None:
        """The live entry whose display name matches ``name`` ignoring case."""
        key = fold_name(name)
        with self.locked():
            for record in self.entries():
                if fold_name(record.name) == key:
                    return record
        return None

    def rename(self, record: AdapterRecord, new_name: str) -> AdapterRecord:
        """Give an entry a new display name.  Call with the lock held."""
        renamed = dataclasses.replace(record, name=new_name)
        self.write(renamed)
        return renamed

    # -- names -----------------------------------------------------------------

    def choose_ifname(self, name: str, taken: Callable[[str], bool]) -> str:
        """The interface name for display name ``name`` (module docstring).
        ``taken(ifname)`` tells whether an interface name is already in use."""
        used = {r.ifname for r in self.entries()}

        def free(candidate: str) -> bool:
            return (
                candidate not in used
                and not taken(candidate)
                and paths.find_uapi_socket(candidate) is None
            )

        if valid_ifname(name) and free(name):
            return name
        stem = "".join(c for c in name if c.isascii() and (c.isalnum() or c in "_-."))
        stem = stem[:_DERIVED_STEM] or "wgnt"
        if stem in (".", ".."):
            stem = "wgnt"
        for attempt in range(1 << 16):
            digest = hashlib.blake2s(f"{name}\0{attempt}".encode("utf-8", "surrogatepass"))
            candidate = f"{stem}-{digest.hexdigest()[:4]}"
            if free(candidate):
                return candidate
        raise OSError("no free interface name")


def _win32_pid_alive(pid: int) -> bool:
    """OpenProcess + GetExitCodeProcess: True while ``pid`` runs (Windows)."""
    if sys.platform != "win32":
        raise OSError("Windows only")
    import ctypes

    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    kernel32.OpenProcess.argtypes = [ctypes.c_uint32, ctypes.c_int, ctypes.c_uint32]
    kernel32.OpenProcess.restype = ctypes.c_void_p
    kernel32.GetExitCodeProcess.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    kernel32.GetExitCodeProcess.restype = ctypes.c_int
    kernel32.CloseHandle.argtypes = [ctypes.c_void_p]
    handle = kernel32.OpenProcess(0x1000, 0, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
    if not handle:
        return ctypes.get_last_error() == 5  # ERROR_ACCESS_DENIED: it exists
    try:
        code = ctypes.c_uint32(0)
        if not kernel32.GetExitCodeProcess(handle, ctypes.byref(code)):
            return True
        return code.value == 259  # STILL_ACTIVE
    finally:
        kernel32.CloseHandle(handle)
