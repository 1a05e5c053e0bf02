"""Where wgpy keeps its UAPI sockets and adapter records: one home for both.

* UAPI sockets: ``/var/run/wireguard/NAME.sock`` (what ``wg`` and every
  userspace implementation use: :data:`UAPI_SYSTEM_DIRECTORY`).  A process
  that cannot write there (an unprivileged user running a userspace adapter)
  uses its per-user directory instead: ``$XDG_RUNTIME_DIR/wgpy/wireguard``,
  or ``/tmp/wgpy-UID/wireguard`` without ``XDG_RUNTIME_DIR``.  ``wgpy show``
  and ``WireGuardOpenAdapter`` look in both; the real ``wg`` looks only in
  the system directory.
* Adapter records (:mod:`wgpy.nt.registry`): ``$WGPY_NT_RUN_DIR`` if set, else
  ``/var/run/wgpy-nt`` (``%ProgramData%\\wgpy\\nt`` on Windows), else the
  per-user ``nt`` directory beside the sockets (``%LOCALAPPDATA%\\wgpy\\nt``).

A per-user directory is created with mode 0700 and used only if it is a real
directory owned by the user (never a symlink someone else planted in /tmp).
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
import tempfile

from wgpy.constants import UAPI_SOCKET_DIRECTORY

__all__ = [
    "UAPI_SYSTEM_DIRECTORY",
    "find_uapi_socket",
    "registry_directories",
    "registry_directory",
    "uapi_directories",
    "uapi_directory",
    "user_runtime_directory",
    "writable_directory",
]

#: The directory ``wg`` and wireguard-go use for UAPI sockets.
UAPI_SYSTEM_DIRECTORY = UAPI_SOCKET_DIRECTORY
_ENV_RUN_DIR = "WGPY_NT_RUN_DIR"
_SYSTEM_RUN_DIR = "/var/run/wgpy-nt"


def _owned_private_dir(path: str) -> bool:
    """True when ``path`` is a directory (not a symlink) of ours, mode 0700."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    if not stat.S_ISDIR(st.st_mode):
        return False
    if sys.platform == "win32":
        return True
    return st.st_uid == os.getuid() and stat.S_IMODE(st.st_mode) & 0o077 == 0


def _ensure_private_dir(path: str) -> str:
    """Create ``path`` (0700) if needed; OSError if it is not ours alone."""
    with contextlib.suppress(FileExistsError):
        os.makedirs(path, mode=0o700, exist_ok=True)
    if not _owned_private_dir(path):
        raise PermissionError(f"{path} is not a private directory of this user")
    return path


def user_runtime_directory(create: bool = True) -> str:
    """This user's private wgpy directory (see the module docstring)."""
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or tempfile.gettempdir()
        path = os.path.join(base, "wgpy")
    else:
        xdg = os.environ.get("XDG_RUNTIME_DIR")
        if xdg and os.path.isabs(xdg) and _owned_private_dir(xdg):
            path = os.path.join(xdg, "wgpy")
        else:
            path = os.path.join(tempfile.gettempdir(), f"wgpy-{os.getuid()}")
    return _ensure_private_dir(path) if create else path


def writable_directory(path: str) -> bool:
    """Whether this process can create files in ``path`` (creating it if
    its parent allows)."""
    try:
        os.makedirs(path, mode=0o755, exist_ok=True)
    except OSError:
        return False
    return os.access(path, os.W_OK | os.X_OK)


def _user_subdir(name: str, create: bool) -> str:
    base = user_runtime_directory(create)
    path = os.path.join(base, name)
    return _ensure_private_dir(path) if create else path


def uapi_directory() -> str:
    """Where this process creates its UAPI sockets: the system directory when
    it may write there, else its per-user one."""
    if writable_directory(UAPI_SYSTEM_DIRECTORY):
        return UAPI_SYSTEM_DIRECTORY
    return _user_subdir("wireguard", True)


def uapi_directories() -> list[str]:
    """Every directory a UAPI socket of this user may be in, system first."""
    dirs = [UAPI_SYSTEM_DIRECTORY]
    user = _user_subdir("wireguard", False)
    if user not in dirs and os.path.isdir(user):
        dirs.append(user)
    return dirs


def find_uapi_socket(name: str) -> str | None:
    """The path of interface ``name``'s UAPI socket, in the first directory
    that has one, or None."""
    for directory in uapi_directories():
        path = os.path.join(directory, f"{name}.sock")
        if os.path.exists(path):
            return path
    return None


def registry_directory() -> str:
    """Where this process writes adapter records (module docstring)."""
    env = os.environ.get(_ENV_RUN_DIR)
    if env:
        return env
    system = _system_registry_directory()
    if writable_directory(system):
        return system
    return _user_subdir("nt", True)


def registry_directories() -> list[str]:
    """Every directory an adapter record visible to this user may be in."""
    env = os.environ.get(_ENV_RUN_DIR)
    if env:
        return [env]
    dirs = [_system_registry_directory()]
    user = _user_subdir("nt", False)
    if user not in dirs and os.path.isdir(user):
        dirs.append(user)
    return dirs


def _system_registry_directory() -> str:
    if sys.platform == "win32":
        base = os.environ.get("PROGRAMDATA", tempfile.gettempdir())
        return os.path.join(base, "wgpy", "nt")
    return _SYSTEM_RUN_DIR
