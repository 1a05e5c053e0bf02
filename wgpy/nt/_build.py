"""Build (and cache) wgpy's C-ABI library with cffi's embedding mode.

The library exports the twelve ``wireguard.h`` functions plus
``WireGuardGetLastError``.  Each export is a small C wrapper (compiled against our
own ``wireguard.h`` with ``WIREGUARD_PROTOTYPES``, so the compiler checks every
signature) that copies the caller's memory, calls the Python implementation in
:mod:`wgpy.nt._cabi` through a cffi ``extern "Python"`` function, and records the
Win32 error in a per-thread variable (and ``errno``).  Copying goes through
``process_vm_readv``/``process_vm_writev`` on Linux, so a bad pointer or a byte
count larger than the real buffer gives ERROR_NOACCESS instead of a crash, as the
driver's probe of the buffer does.

The first call into the library starts an embedded Python (or uses the running one
when a Python program loaded the library).  Two things make that work (checked on
these machines, see shared/design.md):

* a constructor re-opens libpython with ``RTLD_GLOBAL`` (the library is usually
  loaded with ``dlopen(RTLD_LOCAL)``, and extension modules need libpython's
  symbols globally);
* the init code puts the directories wgpy was imported from (its parent and the
  site-packages of the interpreter that built the library, e.g. a virtual
  environment's) on ``sys.path``, because the embedded interpreter starts with the
  base installation's path.

The built library is cached under ``$WGPY_CACHE_DIR`` (else
``$XDG_CACHE_HOME/wgpy``, else ``~/.cache/wgpy``) in a directory named after a hash
of everything baked into it (C source, header, cffi and Python versions, the paths
above), so a change to any of them builds a new one.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import site
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "CABI_VERSION",
    "build_library",
    "c_source",
    "cache_root",
    "include_dir",
    "library_path",
]

#: Bumped whenever the C <-> Python contract below changes.
CABI_VERSION = 2

_NT_DIR = Path(__file__).resolve().parent
_LIBRARY_NAME = "wireguard.dll" if sys.platform == "win32" else "libwgpy-wireguard.so"

CDEF = r"""
extern "Python" uintptr_t _wgpy_create_adapter(const uint16_t *name, uint32_t name_len,
    const uint16_t *tunnel_type, uint32_t type_len, const uint8_t *guid, uint32_t *err);
extern "Python" uintptr_t _wgpy_open_adapter(const uint16_t *name, uint32_t name_len,
    uint32_t *err);
extern "Python" void _wgpy_close_adapter(uintptr_t adapter);
extern "Python" int _wgpy_delete_driver(uint32_t *err);
extern "Python" uint64_t _wgpy_get_adapter_luid(uintptr_t adapter);
extern "Python" uint32_t _wgpy_get_running_driver_version(uint32_t *err);
extern "Python" void _wgpy_set_logger(int enabled);
extern "Python" int _wgpy_set_adapter_logging(uintptr_t adapter, int state, uint32_t *err);
extern "Python" int _wgpy_set_adapter_state(uintptr_t adapter, int state, uint32_t *err);
extern "Python" int _wgpy_get_adapter_state(uintptr_t adapter, int *state, uint32_t *err);
extern "Python" int _wgpy_set_configuration(uintptr_t adapter, const uint8_t *buf,
    uint32_t bytes, uint32_t *err);
extern "Python" int _wgpy_get_configuration(uintptr_t adapter, uint8_t *buf,
    uint32_t capacity, uint32_t *bytes, uint32_t *written, uint32_t *err);
extern "Python" void _wgpy_atexit(void);
extern "Python" int _wgpy_set_adapter_addresses(uintptr_t adapter, const uint16_t *text,
    uint32_t len, uint32_t *err);
extern "Python" uintptr_t _wgpy_start_session(uintptr_t adapter, uint32_t capacity,
    uint32_t flags, uint32_t *err);
extern "Python" void _wgpy_end_session(uintptr_t session);
extern "Python" intptr_t _wgpy_read_wait_event(uintptr_t session, uint32_t *err);
extern "Python" int _wgpy_receive_packet(uintptr_t session, uint8_t *buf, uint32_t capacity,
    uint32_t *size, uint32_t *err);
extern "Python" int _wgpy_send_packet(uintptr_t session, const uint8_t *buf, uint32_t size,
    uint32_t *err);

void wgpy_emit_log(int level, uint64_t timestamp, const uint16_t *message);
int wgpy_embedded(void);
int wgpy_register_atexit(void);
int wgpy_cabi_version(void);
"""

#: The C source of the library, a real file in the package.
_C_SOURCE_FILE = _NT_DIR / "c" / "wgpy_nt.c"


def c_source() -> str:
    """The library's C source (``wgpy/nt/c/wgpy_nt.c``)."""
    return _C_SOURCE_FILE.read_text(encoding="utf-8")


INIT_CODE = r"""
import importlib
import importlib.util
import site
import sys

if "wgpy" not in sys.modules:
    _spec = importlib.util.find_spec("wgpy")
    if _spec is None or _spec.origin != EXPECTED_ORIGIN:
        for _dir in SITE_DIRS:
            if _dir not in sys.path:
                site.addsitedir(_dir)
        sys.path.insert(0, WGPY_PARENT)
        importlib.invalidate_caches()

from MODULE import ffi, lib
import wgpy.nt._cabi

wgpy.nt._cabi.install(ffi, lib, CABI_VERSION)
"""


def include_dir() -> Path:
    """The directory holding our ``wireguard.h``."""
    return _NT_DIR / "include"


def cache_root() -> Path:
    """Where built libraries are kept (see the module docstring)."""
    env = os.environ.get("WGPY_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "wgpy"


def _site_dirs() -> list[str]:
    dirs = list(site.getsitepackages())
    user = site.getusersitepackages()
    if isinstance(user, str) and os.path.isdir(user):
        dirs.append(user)
    return [d for d in dirs if os.path.isdir(d)]


def _libpython() -> str:
    name = sysconfig.get_config_var("INSTSONAME") or sysconfig.get_config_var("LDLIBRARY")
    return str(name or "")


def _sources(module: str) -> tuple[str, str]:
    """(C source, init code) for the cffi module ``module``."""
    import wgpy

    parent = str(Path(wgpy.__file__).resolve().parent.parent)
    origin = str(Path(wgpy.__file__).resolve())
    init = (
        INIT_CODE.replace("EXPECTED_ORIGIN", repr(origin))
        .replace("SITE_DIRS", repr(_site_dirs()))
        .replace("WGPY_PARENT", repr(parent))
        .replace("MODULE", module)
        .replace("CABI_VERSION", str(CABI_VERSION))
    )
    defines = f"#define WGPY_LIBPYTHON {_c_string(_libpython())}\n"
    defines += f"#define WGPY_CABI_VERSION {CABI_VERSION}\n"
    # The interpreter's home and complete module path, recorded now, so the
    # library starts the same Python with the same packages wherever it runs.
    defines += f"#define WGPY_PYTHON_HOME L{_c_string(sys.base_prefix)}\n"
    defines += f"#define WGPY_PYTHON_PATH L{_c_string(os.pathsep.join(_module_path(parent)))}\n"
    defines += f"#define WGPY_PACKAGE_DIR {_c_string(str(Path(origin).parent))}\n"
    return defines + c_source(), init


def _module_path(parent: str) -> list[str]:
    """The embedded interpreter's sys.path: this interpreter's (standard
    library, lib-dynload, site-packages, a virtual environment's included),
    the directory wgpy is imported from first."""
    # The standard library and lib-dynload: this interpreter's path entries
    # under the base installation (a virtual environment's own come after).
    bases = {os.path.realpath(sys.base_prefix), os.path.realpath(sys.base_exec_prefix)}
    stdlib = [
        p
        for p in sys.path
        if p
        and "-packages" not in p
        and any(os.path.realpath(p).startswith(b + os.sep) for b in bases)
    ]
    out = [parent]
    for entry in [*stdlib, *_site_dirs()]:
        if entry not in out and os.path.isdir(entry):
            out.append(entry)
    return out


def _c_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _cffi() -> Any:
    """The cffi module (imported only when a build is needed; it has no type stubs)."""
    import cffi  # type: ignore[import-untyped]

    return cffi


def _key() -> str:
    cffi = _cffi()
    digest = hashlib.sha256()
    header = b"".join((include_dir() / h).read_bytes() for h in ("wireguard.h", "wgpy.h"))
    source, init = _sources("MODULE")
    for part in (
        CDEF,
        source,
        init,
        header.decode("utf-8", "replace"),
        sys.version,
        sys.prefix,
        sys.platform,
        cffi.__version__,
        str(CABI_VERSION),
    ):
        digest.update(part.encode("utf-8", "surrogatepass"))
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def library_path(*, build: bool = True, cache_dir: Path | None = None) -> Path:
    """The path of the built library; builds it first when missing and ``build``.

    Raises FileNotFoundError when it is missing and ``build`` is false, and
    whatever the compiler step raises when the build fails.
    """
    key = _key()
    target = (cache_dir or cache_root()) / f"nt-{key}" / _LIBRARY_NAME
    if target.exists():
        return target
    if not build:
        raise FileNotFoundError(str(target))
    return build_library(cache_dir=cache_dir, key=key)


@contextlib.contextmanager
def _build_lock(directory: Path) -> Iterator[None]:
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / ".build-lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if sys.platform != "win32":
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def build_library(*, cache_dir: Path | None = None, key: str | None = None) -> Path:
    """Compile the library into the cache (replacing nothing that exists)."""
    cffi = _cffi()

    key = key or _key()
    root = cache_dir or cache_root()
    final_dir = root / f"nt-{key}"
    target = final_dir / _LIBRARY_NAME
    with _build_lock(root):
        if target.exists():  # another process built it while we waited
            return target
        module = f"_wgpy_nt_{key}"
        source, init = _sources(module)
        ffi = cffi.FFI()
        ffi.embedding_api("")
        ffi.cdef(CDEF)
        ffi.set_source(module, source, include_dirs=[str(include_dir())])
        ffi.embedding_init_code(init)
        work = Path(tempfile.mkdtemp(prefix="build-", dir=root))
        try:
            stem = _LIBRARY_NAME.rsplit(".", 1)[0]
            built = Path(ffi.compile(tmpdir=str(work), target=f"{stem}.*", verbose=False))
            staging = work / "out"
            staging.mkdir()
            shutil.copy2(built, staging / _LIBRARY_NAME)
            if final_dir.exists():  # left over by an interrupted build
                shutil.rmtree(final_dir)
            os.replace(staging, final_dir)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return target
