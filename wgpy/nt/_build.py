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

__all__ = ["CABI_VERSION", "build_library", "cache_root", "include_dir", "library_path"]

#: Bumped whenever the C <-> Python contract below changes.
CABI_VERSION = 1

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

void wgpy_emit_log(int level, uint64_t timestamp, const uint16_t *message);
int wgpy_embedded(void);
int wgpy_register_atexit(void);
int wgpy_cabi_version(void);
"""

C_SOURCE = r"""
#define WIREGUARD_PROTOTYPES
#include "wireguard.h"
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__linux__)
#    include <dlfcn.h>
#    include <sys/uio.h>
#    include <unistd.h>
#endif

#if defined(_WIN32)
#    define WGPY_EXPORT __declspec(dllexport)
#    define WGPY_TLS __declspec(thread)
#else
#    define WGPY_EXPORT __attribute__((visibility("default")))
#    define WGPY_TLS _Thread_local
#endif

/* Win32 codes used by the wrappers themselves. */
#define WGPY_ERROR_NOT_ENOUGH_MEMORY 8u
#define WGPY_ERROR_INVALID_PARAMETER 87u
#define WGPY_ERROR_NOACCESS 998u
#define WGPY_ERROR_DLL_INIT_FAILED 1114u
/* Units copied from a name: more than MAX_ADAPTER_NAME, so overlong ones show. */
#define WGPY_NAME_UNITS 130u

/* The Python side (cffi extern "Python"). */
static uintptr_t _wgpy_create_adapter(const uint16_t *, uint32_t, const uint16_t *, uint32_t,
                                      const uint8_t *, uint32_t *);
static uintptr_t _wgpy_open_adapter(const uint16_t *, uint32_t, uint32_t *);
static void _wgpy_close_adapter(uintptr_t);
static int _wgpy_delete_driver(uint32_t *);
static uint64_t _wgpy_get_adapter_luid(uintptr_t);
static uint32_t _wgpy_get_running_driver_version(uint32_t *);
static void _wgpy_set_logger(int);
static int _wgpy_set_adapter_logging(uintptr_t, int, uint32_t *);
static int _wgpy_set_adapter_state(uintptr_t, int, uint32_t *);
static int _wgpy_get_adapter_state(uintptr_t, int *, uint32_t *);
static int _wgpy_set_configuration(uintptr_t, const uint8_t *, uint32_t, uint32_t *);
static int _wgpy_get_configuration(uintptr_t, uint8_t *, uint32_t, uint32_t *, uint32_t *,
                                   uint32_t *);
static void _wgpy_atexit(void);

/* ---- last error ------------------------------------------------------------ */

static WGPY_TLS DWORD wgpy_last_error;

static int wgpy_errno_for(DWORD code)
{
    switch (code) {
    case 0: return 0;
    case 1: return ENOSYS;        /* ERROR_INVALID_FUNCTION */
    case 2: return ENOENT;        /* ERROR_FILE_NOT_FOUND */
    case 5: return EACCES;        /* ERROR_ACCESS_DENIED */
    case 6: return EBADF;         /* ERROR_INVALID_HANDLE */
    case 8: return ENOMEM;        /* ERROR_NOT_ENOUGH_MEMORY */
    case 52: return EEXIST;       /* ERROR_DUP_NAME */
    case 87: return EINVAL;       /* ERROR_INVALID_PARAMETER */
    case 111: return ENAMETOOLONG; /* ERROR_BUFFER_OVERFLOW */
    case 123: return EINVAL;      /* ERROR_INVALID_NAME */
    case 234: return ERANGE;      /* ERROR_MORE_DATA */
    case 998: return EFAULT;      /* ERROR_NOACCESS */
#ifdef ELIBBAD
    case 1114: return ELIBBAD;    /* ERROR_DLL_INIT_FAILED */
#endif
    case 1168: return ENOENT;     /* ERROR_NOT_FOUND */
    case 1227: return EADDRINUSE; /* ERROR_ADDRESS_ALREADY_ASSOCIATED */
    case 4319: return ENODEV;     /* ERROR_DEVICE_NOT_AVAILABLE */
    case 0xE000023Du: return EBUSY; /* ERROR_INF_IN_USE_BY_DEVICES */
    default: return EIO;
    }
}

/* Record a failure: the Win32 code for WireGuardGetLastError (SetLastError on
 * Windows) and the nearest errno.  Call it last, right before returning. */
static void wgpy_fail(DWORD code)
{
    wgpy_last_error = code;
#if defined(_WIN32)
    SetLastError(code);
#endif
    errno = wgpy_errno_for(code);
}

WGPY_EXPORT DWORD WireGuardGetLastError(VOID) { return wgpy_last_error; }

/* ---- memory the caller passed ------------------------------------------------ */

/* Copy n bytes from src without faulting on a bad address (0 if unreadable). */
static int wgpy_safe_read(void *dst, const void *src, size_t n)
{
#if defined(__linux__)
    char *d = (char *)dst;
    const char *s = (const char *)src;
    while (n) {
        size_t chunk = n > (1u << 30) ? (1u << 30) : n;
        struct iovec local = {d, chunk};
        struct iovec remote = {(void *)s, chunk};
        ssize_t got = process_vm_readv(getpid(), &local, 1, &remote, 1, 0);
        if (got < 0 && (errno == ENOSYS || errno == EPERM)) {
            memcpy(d, s, n); /* syscall filtered out (e.g. seccomp): plain copy */
            return 1;
        }
        if (got <= 0)
            return 0;
        d += got;
        s += got;
        n -= (size_t)got;
    }
    return 1;
#else
    memcpy(dst, src, n);
    return 1;
#endif
}

/* Copy n bytes to dst without faulting on a bad address (0 if unwritable). */
static int wgpy_safe_write(void *dst, const void *src, size_t n)
{
#if defined(__linux__)
    char *d = (char *)dst;
    const char *s = (const char *)src;
    while (n) {
        size_t chunk = n > (1u << 30) ? (1u << 30) : n;
        struct iovec local = {(void *)s, chunk};
        struct iovec remote = {d, chunk};
        ssize_t got = process_vm_writev(getpid(), &local, 1, &remote, 1, 0);
        if (got < 0 && (errno == ENOSYS || errno == EPERM)) {
            memcpy(d, s, n);
            return 1;
        }
        if (got <= 0)
            return 0;
        d += got;
        s += got;
        n -= (size_t)got;
    }
    return 1;
#else
    memcpy(dst, src, n);
    return 1;
#endif
}

/* Copy a NUL-terminated UTF-16 string of at most WGPY_NAME_UNITS units; *len is
 * its length, or WGPY_NAME_UNITS when no terminator came first. */
static int wgpy_copy_name(const WCHAR *src, uint16_t *dst, uint32_t *len)
{
    uint32_t i;
    for (i = 0; i < WGPY_NAME_UNITS; ++i) {
        uint16_t unit;
        if (!wgpy_safe_read(&unit, src + i, sizeof unit))
            return 0;
        dst[i] = unit;
        if (!unit)
            break;
    }
    *len = i;
    return 1;
}

/* ---- the twelve functions ----------------------------------------------------- */

WGPY_EXPORT WIREGUARD_ADAPTER_HANDLE WINAPI
WireGuardCreateAdapter(LPCWSTR Name, LPCWSTR TunnelType, const GUID *RequestedGUID)
{
    uint16_t name[WGPY_NAME_UNITS], type[WGPY_NAME_UNITS];
    uint32_t name_len, type_len, err = WGPY_ERROR_DLL_INIT_FAILED;
    uint8_t guid[16];
    uintptr_t handle;
    if (!Name || !TunnelType) {
        wgpy_fail(WGPY_ERROR_INVALID_PARAMETER);
        return NULL;
    }
    if (!wgpy_copy_name(Name, name, &name_len) || !wgpy_copy_name(TunnelType, type, &type_len) ||
        (RequestedGUID && !wgpy_safe_read(guid, RequestedGUID, sizeof guid))) {
        wgpy_fail(WGPY_ERROR_NOACCESS);
        return NULL;
    }
    handle = _wgpy_create_adapter(name, name_len, type, type_len, RequestedGUID ? guid : NULL,
                                  &err);
    if (!handle)
        wgpy_fail(err ? err : WGPY_ERROR_DLL_INIT_FAILED);
    return (WIREGUARD_ADAPTER_HANDLE)handle;
}

WGPY_EXPORT WIREGUARD_ADAPTER_HANDLE WINAPI WireGuardOpenAdapter(LPCWSTR Name)
{
    uint16_t name[WGPY_NAME_UNITS];
    uint32_t name_len, err = WGPY_ERROR_DLL_INIT_FAILED;
    uintptr_t handle;
    if (!Name) {
        wgpy_fail(WGPY_ERROR_INVALID_PARAMETER);
        return NULL;
    }
    if (!wgpy_copy_name(Name, name, &name_len)) {
        wgpy_fail(WGPY_ERROR_NOACCESS);
        return NULL;
    }
    handle = _wgpy_open_adapter(name, name_len, &err);
    if (!handle)
        wgpy_fail(err ? err : WGPY_ERROR_DLL_INIT_FAILED);
    return (WIREGUARD_ADAPTER_HANDLE)handle;
}

WGPY_EXPORT VOID WINAPI WireGuardCloseAdapter(WIREGUARD_ADAPTER_HANDLE Adapter)
{
    if (Adapter)
        _wgpy_close_adapter((uintptr_t)Adapter);
}

WGPY_EXPORT BOOL WINAPI WireGuardDeleteDriver(VOID)
{
    uint32_t err = WGPY_ERROR_DLL_INIT_FAILED;
    if (_wgpy_delete_driver(&err))
        return TRUE;
    wgpy_fail(err ? err : WGPY_ERROR_DLL_INIT_FAILED);
    return FALSE;
}

WGPY_EXPORT VOID WINAPI WireGuardGetAdapterLUID(WIREGUARD_ADAPTER_HANDLE Adapter, NET_LUID *Luid)
{
    uint64_t value = _wgpy_get_adapter_luid((uintptr_t)Adapter);
    if (Luid)
        wgpy_safe_write(Luid, &value, sizeof value);
}

WGPY_EXPORT DWORD WINAPI WireGuardGetRunningDriverVersion(VOID)
{
    uint32_t err = WGPY_ERROR_DLL_INIT_FAILED;
    uint32_t version = _wgpy_get_running_driver_version(&err);
    if (!version)
        wgpy_fail(err ? err : WGPY_ERROR_DLL_INIT_FAILED);
    return version;
}

static WIREGUARD_LOGGER_CALLBACK wgpy_logger;

WGPY_EXPORT VOID WINAPI WireGuardSetLogger(WIREGUARD_LOGGER_CALLBACK NewLogger)
{
    __atomic_store_n(&wgpy_logger, NewLogger, __ATOMIC_SEQ_CST);
    _wgpy_set_logger(NewLogger != NULL);
}

static void wgpy_emit_log(int level, uint64_t timestamp, const uint16_t *message)
{
    WIREGUARD_LOGGER_CALLBACK logger = __atomic_load_n(&wgpy_logger, __ATOMIC_SEQ_CST);
    if (logger)
        logger((WIREGUARD_LOGGER_LEVEL)level, timestamp, (LPCWSTR)message);
}

WGPY_EXPORT BOOL WINAPI WireGuardSetAdapterLogging(WIREGUARD_ADAPTER_HANDLE Adapter,
                                                   WIREGUARD_ADAPTER_LOG_STATE LogState)
{
    uint32_t err = WGPY_ERROR_DLL_INIT_FAILED;
    if (_wgpy_set_adapter_logging((uintptr_t)Adapter, (int)LogState, &err))
        return TRUE;
    wgpy_fail(err ? err : WGPY_ERROR_DLL_INIT_FAILED);
    return FALSE;
}

WGPY_EXPORT BOOL WINAPI WireGuardSetAdapterState(WIREGUARD_ADAPTER_HANDLE Adapter,
                                                 WIREGUARD_ADAPTER_STATE State)
{
    uint32_t err = WGPY_ERROR_DLL_INIT_FAILED;
    if (_wgpy_set_adapter_state((uintptr_t)Adapter, (int)State, &err))
        return TRUE;
    wgpy_fail(err ? err : WGPY_ERROR_DLL_INIT_FAILED);
    return FALSE;
}

WGPY_EXPORT BOOL WINAPI WireGuardGetAdapterState(WIREGUARD_ADAPTER_HANDLE Adapter,
                                                 WIREGUARD_ADAPTER_STATE *State)
{
    uint32_t err = WGPY_ERROR_DLL_INIT_FAILED;
    int state = 0;
    WIREGUARD_ADAPTER_STATE out;
    if (!State) {
        wgpy_fail(WGPY_ERROR_INVALID_PARAMETER);
        return FALSE;
    }
    if (!_wgpy_get_adapter_state((uintptr_t)Adapter, &state, &err)) {
        wgpy_fail(err ? err : WGPY_ERROR_DLL_INIT_FAILED);
        return FALSE;
    }
    out = (WIREGUARD_ADAPTER_STATE)state;
    if (!wgpy_safe_write(State, &out, sizeof out)) {
        wgpy_fail(WGPY_ERROR_NOACCESS);
        return FALSE;
    }
    return TRUE;
}

WGPY_EXPORT BOOL WINAPI WireGuardSetConfiguration(WIREGUARD_ADAPTER_HANDLE Adapter,
                                                  const WIREGUARD_INTERFACE *Config, DWORD Bytes)
{
    uint32_t err = WGPY_ERROR_DLL_INIT_FAILED;
    uint8_t *copy;
    int ok;
    if (!Config || !Bytes) {
        wgpy_fail(WGPY_ERROR_INVALID_PARAMETER);
        return FALSE;
    }
    copy = (uint8_t *)malloc(Bytes);
    if (!copy) {
        wgpy_fail(WGPY_ERROR_NOT_ENOUGH_MEMORY);
        return FALSE;
    }
    /* The whole claimed range must be readable, as the driver probes it. */
    if (!wgpy_safe_read(copy, Config, Bytes)) {
        free(copy);
        wgpy_fail(WGPY_ERROR_NOACCESS);
        return FALSE;
    }
    ok = _wgpy_set_configuration((uintptr_t)Adapter, copy, Bytes, &err);
    free(copy);
    if (ok)
        return TRUE;
    wgpy_fail(err ? err : WGPY_ERROR_DLL_INIT_FAILED);
    return FALSE;
}

WGPY_EXPORT BOOL WINAPI WireGuardGetConfiguration(WIREGUARD_ADAPTER_HANDLE Adapter,
                                                  WIREGUARD_INTERFACE *Config, DWORD *Bytes)
{
    uint32_t err = WGPY_ERROR_DLL_INIT_FAILED, capacity, size = 0, written = 0;
    uint8_t *scratch = NULL;
    int ok;
    if (!Bytes) {
        wgpy_fail(WGPY_ERROR_INVALID_PARAMETER);
        return FALSE;
    }
    if (!wgpy_safe_read(&capacity, Bytes, sizeof capacity)) {
        wgpy_fail(WGPY_ERROR_NOACCESS);
        return FALSE;
    }
    if (!Config)
        capacity = 0; /* a size query */
    if (capacity) {
        scratch = (uint8_t *)calloc(1, capacity);
        if (!scratch) {
            wgpy_fail(WGPY_ERROR_NOT_ENOUGH_MEMORY);
            return FALSE;
        }
    }
    ok = _wgpy_get_configuration((uintptr_t)Adapter, scratch, capacity, &size, &written, &err);
    if (written > capacity)
        written = capacity;
    if ((written && !wgpy_safe_write(Config, scratch, written)) ||
        ((ok || size) && !wgpy_safe_write(Bytes, &size, sizeof size))) {
        free(scratch);
        wgpy_fail(WGPY_ERROR_NOACCESS);
        return FALSE;
    }
    free(scratch);
    if (ok)
        return TRUE;
    wgpy_fail(err ? err : WGPY_ERROR_DLL_INIT_FAILED);
    return FALSE;
}

/* ---- start-up and exit ------------------------------------------------------------ */

static int wgpy_python_was_running;

#if !defined(_WIN32)
__attribute__((constructor)) static void wgpy_library_loaded(void)
{
    /* Extension modules (cffi's backend) need libpython's symbols globally. */
    dlopen(WGPY_LIBPYTHON, RTLD_NOW | RTLD_NOLOAD | RTLD_GLOBAL);
    wgpy_python_was_running = Py_IsInitialized();
}
#endif

static int wgpy_embedded(void) { return !wgpy_python_was_running; }

static void wgpy_at_exit(void) { _wgpy_atexit(); }

/* Registered by the Python side once it runs embedded: the embedded interpreter is
 * never finalized, so its adapters are removed from a C exit handler. */
static int wgpy_register_atexit(void) { return atexit(wgpy_at_exit) == 0; }

static int wgpy_cabi_version(void) { return WGPY_CABI_VERSION; }
"""

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
    return defines + C_SOURCE, init


def _c_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _cffi() -> Any:
    """The cffi module (imported only when a build is needed; it has no type stubs)."""
    import cffi  # type: ignore[import-untyped]

    return cffi


def _key() -> str:
    cffi = _cffi()
    digest = hashlib.sha256()
    header = (include_dir() / "wireguard.h").read_bytes()
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
