/* SPDX-License-Identifier: MIT
 *
 * wgpy's C-ABI library: the wireguard.h exports (and wgpy.h's extensions) as
 * thin wrappers over the Python implementation.  Built by wgpy/nt/_build.py
 * with cffi's embedding mode, which prepends WGPY_LIBPYTHON and
 * WGPY_CABI_VERSION and supplies the extern "Python" functions.
 */

#define WIREGUARD_PROTOTYPES
#include "wireguard.h"
#include "wgpy.h"
#include <stdio.h>
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
static int _wgpy_set_adapter_addresses(uintptr_t, const uint16_t *, uint32_t, uint32_t *);
static uintptr_t _wgpy_start_session(uintptr_t, uint32_t, uint32_t, uint32_t *);
static void _wgpy_end_session(uintptr_t);
static intptr_t _wgpy_read_wait_event(uintptr_t, uint32_t *);
static int _wgpy_receive_packet(uintptr_t, uint8_t *, uint32_t, uint32_t *, uint32_t *);
static int _wgpy_send_packet(uintptr_t, const uint8_t *, uint32_t, uint32_t *);

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

/* Copy n bytes without faulting on a bad address: the caller's side (src
 * when reading, dst when writing) goes through process_vm_readv/writev, which
 * fail with EFAULT instead of crashing.  0 if that side is not accessible. */
static int wgpy_safe_copy(void *dst, const void *src, size_t n, int writing)
{
#if defined(__linux__)
    char *d = (char *)dst;
    const char *s = (const char *)src;
    while (n) {
        size_t chunk = n > (1u << 30) ? (1u << 30) : n;
        struct iovec to = {d, chunk};
        struct iovec from = {(void *)s, chunk};
        ssize_t got = writing ? process_vm_writev(getpid(), &from, 1, &to, 1, 0)
                              : process_vm_readv(getpid(), &to, 1, &from, 1, 0);
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
    (void)writing;
    memcpy(dst, src, n);
    return 1;
#endif
}

/* Copy n bytes from src (the caller's memory); 0 if unreadable. */
static int wgpy_safe_read(void *dst, const void *src, size_t n)
{
    return wgpy_safe_copy(dst, src, n, 0);
}

/* Copy n bytes to dst (the caller's memory); 0 if unwritable. */
static int wgpy_safe_write(void *dst, const void *src, size_t n)
{
    return wgpy_safe_copy(dst, src, n, 1);
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

/* ---- wgpy.h: userspace adapters ---------------------------------------------------- */

/* Longest address list copied (UTF-16 units): far more than any real list. */
#define WGPY_ADDRESSES_UNITS 16384u

WGPY_EXPORT BOOL WINAPI WgpySetAdapterAddresses(WIREGUARD_ADAPTER_HANDLE Adapter,
                                                LPCWSTR Addresses)
{
    uint32_t err = WGPY_ERROR_DLL_INIT_FAILED, len = 0;
    uint16_t *copy;
    int ok;
    if (!Addresses) {
        wgpy_fail(WGPY_ERROR_INVALID_PARAMETER);
        return FALSE;
    }
    copy = (uint16_t *)malloc(WGPY_ADDRESSES_UNITS * sizeof *copy);
    if (!copy) {
        wgpy_fail(WGPY_ERROR_NOT_ENOUGH_MEMORY);
        return FALSE;
    }
    for (;; ++len) {
        if (len == WGPY_ADDRESSES_UNITS) {
            free(copy);
            wgpy_fail(WGPY_ERROR_INVALID_PARAMETER);
            return FALSE;
        }
        if (!wgpy_safe_read(&copy[len], Addresses + len, sizeof *copy)) {
            free(copy);
            wgpy_fail(WGPY_ERROR_NOACCESS);
            return FALSE;
        }
        if (!copy[len])
            break;
    }
    ok = _wgpy_set_adapter_addresses((uintptr_t)Adapter, copy, len, &err);
    free(copy);
    if (ok)
        return TRUE;
    wgpy_fail(err ? err : WGPY_ERROR_DLL_INIT_FAILED);
    return FALSE;
}

WGPY_EXPORT WGPY_SESSION_HANDLE WINAPI WgpyStartSession(WIREGUARD_ADAPTER_HANDLE Adapter,
                                                        DWORD Capacity, DWORD Flags)
{
    uint32_t err = WGPY_ERROR_DLL_INIT_FAILED;
    uintptr_t session = _wgpy_start_session((uintptr_t)Adapter, Capacity, Flags, &err);
    if (!session)
        wgpy_fail(err ? err : WGPY_ERROR_DLL_INIT_FAILED);
    return (WGPY_SESSION_HANDLE)session;
}

WGPY_EXPORT VOID WINAPI WgpyEndSession(WGPY_SESSION_HANDLE Session)
{
    if (Session)
        _wgpy_end_session((uintptr_t)Session);
}

WGPY_EXPORT WGPY_WAIT_HANDLE WINAPI WgpyGetReadWaitEvent(WGPY_SESSION_HANDLE Session)
{
    uint32_t err = WGPY_ERROR_DLL_INIT_FAILED;
    intptr_t wait = _wgpy_read_wait_event((uintptr_t)Session, &err);
#if defined(_WIN32)
    if (!wait)
        wgpy_fail(err ? err : WGPY_ERROR_DLL_INIT_FAILED);
    return (HANDLE)wait;
#else
    if (wait < 0)
        wgpy_fail(err ? err : WGPY_ERROR_DLL_INIT_FAILED);
    return (int)wait;
#endif
}

/* Packets handed to the caller carry their size in front of them, so the
 * release and send calls need nothing but the pointer. */
typedef struct {
    uint32_t size;
    uint32_t magic;
} wgpy_packet_header;
#define WGPY_PACKET_RECEIVED 0x52656376u
#define WGPY_PACKET_TO_SEND 0x53656e64u

WGPY_EXPORT BYTE *WINAPI WgpyReceivePacket(WGPY_SESSION_HANDLE Session, DWORD *PacketSize)
{
    uint32_t err = WGPY_ERROR_DLL_INIT_FAILED, size = 0;
    wgpy_packet_header *header;
    if (!Session || !PacketSize) {
        wgpy_fail(WGPY_ERROR_INVALID_PARAMETER);
        return NULL;
    }
    header = (wgpy_packet_header *)malloc(sizeof *header + WGPY_MAX_PACKET_SIZE);
    if (!header) {
        wgpy_fail(WGPY_ERROR_NOT_ENOUGH_MEMORY);
        return NULL;
    }
    if (!_wgpy_receive_packet((uintptr_t)Session, (uint8_t *)(header + 1), WGPY_MAX_PACKET_SIZE,
                              &size, &err)) {
        free(header);
        wgpy_fail(err ? err : WGPY_ERROR_DLL_INIT_FAILED);
        return NULL;
    }
    header->size = size;
    header->magic = WGPY_PACKET_RECEIVED;
    if (!wgpy_safe_write(PacketSize, &size, sizeof size)) {
        free(header);
        wgpy_fail(WGPY_ERROR_NOACCESS);
        return NULL;
    }
    return (BYTE *)(header + 1);
}

WGPY_EXPORT VOID WINAPI WgpyReleaseReceivePacket(WGPY_SESSION_HANDLE Session, const BYTE *Packet)
{
    wgpy_packet_header *header;
    (void)Session;
    if (!Packet)
        return;
    header = (wgpy_packet_header *)Packet - 1;
    if (header->magic == WGPY_PACKET_RECEIVED) {
        header->magic = 0;
        free(header);
    }
}

WGPY_EXPORT BYTE *WINAPI WgpyAllocateSendPacket(WGPY_SESSION_HANDLE Session, DWORD PacketSize)
{
    wgpy_packet_header *header;
    if (!Session || !PacketSize || PacketSize > WGPY_MAX_PACKET_SIZE) {
        wgpy_fail(WGPY_ERROR_INVALID_PARAMETER);
        return NULL;
    }
    header = (wgpy_packet_header *)calloc(1, sizeof *header + PacketSize);
    if (!header) {
        wgpy_fail(WGPY_ERROR_NOT_ENOUGH_MEMORY);
        return NULL;
    }
    header->size = PacketSize;
    header->magic = WGPY_PACKET_TO_SEND;
    return (BYTE *)(header + 1);
}

WGPY_EXPORT VOID WINAPI WgpySendPacket(WGPY_SESSION_HANDLE Session, const BYTE *Packet)
{
    uint32_t err = WGPY_ERROR_DLL_INIT_FAILED;
    wgpy_packet_header *header;
    if (!Packet) {
        wgpy_fail(WGPY_ERROR_INVALID_PARAMETER);
        return;
    }
    header = (wgpy_packet_header *)Packet - 1;
    if (header->magic != WGPY_PACKET_TO_SEND) {
        wgpy_fail(WGPY_ERROR_INVALID_PARAMETER);
        return;
    }
    header->magic = 0;
    if (!_wgpy_send_packet((uintptr_t)Session, Packet, header->size, &err))
        wgpy_fail(err ? err : WGPY_ERROR_DLL_INIT_FAILED);
    free(header);
}

/* ---- start-up and exit ------------------------------------------------------------ */

static int wgpy_python_was_running;

/* Point an interpreter that is not running yet at the installation the
 * library was built from (WGPY_PYTHON_HOME, WGPY_PYTHON_PATH: recorded at
 * build time), whatever the calling program's PATH, HOME or user: without
 * this the embedded interpreter derives its paths from the program and finds
 * the base installation's, or none (then not even cffi's backend imports). */
static void wgpy_prepare_python(void)
{
    static int done;
    if (done)
        return;
    done = 1;
    if (Py_IsInitialized())
        return;
#if defined(__GNUC__)
#    pragma GCC diagnostic push
#    pragma GCC diagnostic ignored "-Wdeprecated-declarations"
#endif
    Py_SetPythonHome(WGPY_PYTHON_HOME);
    Py_SetPath(WGPY_PYTHON_PATH);
#if defined(__GNUC__)
#    pragma GCC diagnostic pop
#endif
#if !defined(_WIN32)
    if (access(WGPY_PACKAGE_DIR, R_OK | X_OK) != 0)
        fprintf(stderr,
                "wgpy: the library cannot read its installation %s (%s); "
                "every call fails with ERROR_DLL_INIT_FAILED (1114)\n",
                WGPY_PACKAGE_DIR, strerror(errno));
#endif
}

#if !defined(_WIN32)
__attribute__((constructor)) static void wgpy_library_loaded(void)
{
    /* Extension modules (cffi's backend) need libpython's symbols globally. */
    dlopen(WGPY_LIBPYTHON, RTLD_NOW | RTLD_NOLOAD | RTLD_GLOBAL);
    wgpy_python_was_running = Py_IsInitialized();
    wgpy_prepare_python();
}
#else
BOOL WINAPI DllMain(HINSTANCE instance, DWORD reason, LPVOID reserved)
{
    (void)instance;
    (void)reserved;
    if (reason == DLL_PROCESS_ATTACH) {
        wgpy_python_was_running = Py_IsInitialized();
        wgpy_prepare_python();
    }
    return TRUE;
}
#endif

static int wgpy_embedded(void) { return !wgpy_python_was_running; }

static void wgpy_at_exit(void) { _wgpy_atexit(); }

/* Registered by the Python side once it runs embedded: the embedded interpreter is
 * never finalized, so its adapters are removed from a C exit handler. */
static int wgpy_register_atexit(void) { return atexit(wgpy_at_exit) == 0; }

static int wgpy_cabi_version(void) { return WGPY_CABI_VERSION; }
