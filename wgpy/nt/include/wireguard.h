/* SPDX-License-Identifier: MIT
 *
 * wireguard.h for wgpy.
 *
 * This header describes the same binary interface as the WireGuardNT
 * wireguard.dll API (12 exported functions, three packed-by-hand records and
 * a few enums), written independently for wgpy.  A program written against the
 * WireGuardNT header can be compiled against this one and pointed at wgpy's
 * shared library instead of wireguard.dll.
 *
 * On Windows the real system headers provide the Windows types.  Everywhere
 * else this header defines the few Windows types it needs itself, with the
 * Windows sizes and layouts (WCHAR is 16 bits, DWORD is 32, enums are int),
 * so one source file compiles unchanged on both.
 *
 * Usage notes
 *  - Functions are described as function TYPES (e.g. WIREGUARD_CREATE_ADAPTER_FUNC),
 *    meant to be used as pointers filled from GetProcAddress/dlsym:
 *        WIREGUARD_CREATE_ADAPTER_FUNC *create = (...)dlsym(lib, "WireGuardCreateAdapter");
 *    Define WIREGUARD_PROTOTYPES before including this header to also get
 *    ordinary prototypes for linking directly against the library.
 *  - Strings (LPCWSTR) are NUL-terminated UTF-16 in native byte order.
 *  - Address families inside SOCKADDR_INET and WIREGUARD_ALLOWED_IP use the
 *    WINDOWS values: AF_INET = 2, AF_INET6 = 23.  On non-Windows systems this
 *    header defines AF_INET/AF_INET6 only if nothing defined them before; if
 *    <sys/socket.h> came first, AF_INET6 is the host value (10 on Linux), so
 *    portable code should use WIREGUARD_AF_INET / WIREGUARD_AF_INET6.
 *  - Ports in SOCKADDR_IN/SOCKADDR_IN6 are in network byte order; ListenPort
 *    in WIREGUARD_INTERFACE is in host byte order.
 *  - Errors: a failing function returns NULL/FALSE/0 and records a Win32
 *    error code.  On Windows read it with GetLastError(); elsewhere with
 *    WireGuardGetLastError(), declared below (a per-thread value).
 */

#ifndef WGPY_WIREGUARD_H
#define WGPY_WIREGUARD_H

#if defined(_WIN32)
#    include <winsock2.h>
#    include <windows.h>
#    include <ipexport.h>
#    include <ifdef.h>
#    include <ws2ipdef.h>
#else
#    include <stdint.h>
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ALIGNED(n): the three WireGuard records are 8-byte aligned, which pads
 * WIREGUARD_INTERFACE from 76 to 80 bytes. */
#ifndef ALIGNED
#    if defined(_MSC_VER)
#        define ALIGNED(n) __declspec(align(n))
#    elif defined(__GNUC__) || defined(__clang__)
#        define ALIGNED(n) __attribute__((aligned(n)))
#    else
#        error "wireguard.h: no way to request structure alignment with this compiler"
#    endif
#endif

#if defined(_MSC_VER)
#    pragma warning(push)
#    pragma warning(disable : 4324) /* padding added because of ALIGNED */
#endif

#if defined(__GNUC__)
#    define WIREGUARD_EXTENSION __extension__
#else
#    define WIREGUARD_EXTENSION
#endif

/* ---------------------------------------------------------------------------
 * Windows types for non-Windows builds.  Define WIREGUARD_HAVE_WINDOWS_TYPES
 * if another header already provides them.
 * ------------------------------------------------------------------------- */
#if !defined(_WIN32) && !defined(WIREGUARD_HAVE_WINDOWS_TYPES)

#    ifndef WINAPI
#        define WINAPI /* the platform C convention */
#    endif
#    ifndef CALLBACK
#        define CALLBACK
#    endif
#    ifndef VOID
#        define VOID void
#    endif
#    ifndef TRUE
#        define TRUE 1
#    endif
#    ifndef FALSE
#        define FALSE 0
#    endif

typedef uint8_t BYTE;
typedef uint8_t UCHAR;
typedef char CHAR;
typedef uint16_t WORD;
typedef uint16_t USHORT;
typedef uint32_t DWORD;
typedef uint32_t ULONG;
typedef uint64_t DWORD64;
typedef uint64_t ULONG64;
typedef int BOOL;
typedef uint16_t WCHAR; /* UTF-16 code unit, not wchar_t (4 bytes on Linux) */
typedef const WCHAR *LPCWSTR;
typedef WCHAR *LPWSTR;
typedef void *HANDLE;
typedef USHORT ADDRESS_FAMILY;

typedef struct _WIREGUARD_GUID
{
    DWORD Data1;
    WORD Data2;
    WORD Data3;
    BYTE Data4[8];
} GUID;

/* An interface's locally unique id; the DLL builds Value as
 * (IfType << 48) | (NetLuidIndex << 24). */
WIREGUARD_EXTENSION typedef union _WIREGUARD_NET_LUID
{
    ULONG64 Value;
    struct
    {
        ULONG64 Reserved : 24;
        ULONG64 NetLuidIndex : 24;
        ULONG64 IfType : 16;
    } Info;
} NET_LUID;

/* IPv4 address, network byte order.  s_addr is the whole address. */
WIREGUARD_EXTENSION typedef struct _WIREGUARD_IN_ADDR
{
    union
    {
        union
        {
            struct
            {
                UCHAR s_b1, s_b2, s_b3, s_b4;
            } S_un_b;
            struct
            {
                USHORT s_w1, s_w2;
            } S_un_w;
            ULONG S_addr;
        } S_un;
        ULONG s_addr;
    };
} IN_ADDR;

/* IPv6 address: 16 bytes, 2-byte aligned. */
typedef struct _WIREGUARD_IN6_ADDR
{
    union
    {
        UCHAR Byte[16];
        USHORT Word[8];
    } u;
} IN6_ADDR;

typedef struct _WIREGUARD_SOCKADDR_IN
{
    ADDRESS_FAMILY sin_family; /* AF_INET (2) */
    USHORT sin_port;           /* network byte order */
    IN_ADDR sin_addr;
    CHAR sin_zero[8];
} SOCKADDR_IN;

typedef struct _WIREGUARD_SOCKADDR_IN6
{
    ADDRESS_FAMILY sin6_family; /* AF_INET6 (23) */
    USHORT sin6_port;           /* network byte order */
    ULONG sin6_flowinfo;
    IN6_ADDR sin6_addr;
    ULONG sin6_scope_id;
} SOCKADDR_IN6;

/* 28 bytes, 4-byte aligned; si_family tells which member is valid. */
typedef union _WIREGUARD_SOCKADDR_INET
{
    SOCKADDR_IN Ipv4;
    SOCKADDR_IN6 Ipv6;
    ADDRESS_FAMILY si_family;
} SOCKADDR_INET;

#    ifndef MAX_ADAPTER_NAME
#        define MAX_ADAPTER_NAME 128
#    endif

#    if !defined(AF_INET) && !defined(AF_INET6)
#        define AF_INET 2
#        define AF_INET6 23
#    endif

#endif /* !_WIN32 && !WIREGUARD_HAVE_WINDOWS_TYPES */

/* The address families of this ABI, whatever the host's values are. */
#define WIREGUARD_AF_INET 2
#define WIREGUARD_AF_INET6 23

/* ---------------------------------------------------------------------------
 * Adapters
 * ------------------------------------------------------------------------- */

/* Opaque adapter handle; release it with WireGuardCloseAdapter. */
typedef struct _WIREGUARD_ADAPTER *WIREGUARD_ADAPTER_HANDLE;

/*
 * Create an adapter named Name (at most MAX_ADAPTER_NAME - 1 characters).
 * TunnelType names the kind of tunnel; the adapter's description becomes
 * "<TunnelType> Tunnel".  RequestedGUID may be NULL (a random GUID) or fix the
 * adapter's GUID.  Returns NULL on failure; a name or tunnel type that is too
 * long gives ERROR_BUFFER_OVERFLOW.  Closing the returned handle removes the
 * adapter.
 */
typedef WIREGUARD_ADAPTER_HANDLE(WINAPI WIREGUARD_CREATE_ADAPTER_FUNC)(
    LPCWSTR Name, LPCWSTR TunnelType, const GUID *RequestedGUID);

/*
 * Open an existing adapter by name (compared without regard to case).
 * Returns NULL with ERROR_NOT_FOUND when there is none.  Closing an opened
 * handle leaves the adapter in place.
 */
typedef WIREGUARD_ADAPTER_HANDLE(WINAPI WIREGUARD_OPEN_ADAPTER_FUNC)(LPCWSTR Name);

/* Release a handle (NULL is accepted and ignored); see Create/Open above. */
typedef VOID(WINAPI WIREGUARD_CLOSE_ADAPTER_FUNC)(WIREGUARD_ADAPTER_HANDLE Adapter);

/*
 * Remove the driver if no adapter uses it any more.  Returns FALSE on failure.
 */
typedef BOOL(WINAPI WIREGUARD_DELETE_DRIVER_FUNC)(VOID);

/* Store the adapter's NET_LUID in *Luid.  Cannot fail. */
typedef VOID(WINAPI WIREGUARD_GET_ADAPTER_LUID_FUNC)(WIREGUARD_ADAPTER_HANDLE Adapter, NET_LUID *Luid);

/*
 * Version of the running driver as (major << 16) | minor, or 0 on failure
 * (ERROR_FILE_NOT_FOUND when no driver is loaded).
 */
typedef DWORD(WINAPI WIREGUARD_GET_RUNNING_DRIVER_VERSION_FUNC)(VOID);

/* ---------------------------------------------------------------------------
 * Logging
 * ------------------------------------------------------------------------- */

typedef enum
{
    WIREGUARD_LOG_INFO = 0,
    WIREGUARD_LOG_WARN = 1,
    WIREGUARD_LOG_ERR = 2
} WIREGUARD_LOGGER_LEVEL;

/*
 * Receives log lines.  Timestamp counts 100 ns intervals since 1601-01-01 UTC
 * (FILETIME).  May be called from several threads at once.
 */
typedef VOID(CALLBACK *WIREGUARD_LOGGER_CALLBACK)(
    WIREGUARD_LOGGER_LEVEL Level, DWORD64 Timestamp, LPCWSTR Message);

/* Install the process-wide logger; NULL turns logging off. */
typedef VOID(WINAPI WIREGUARD_SET_LOGGER_FUNC)(WIREGUARD_LOGGER_CALLBACK NewLogger);

typedef enum
{
    WIREGUARD_ADAPTER_LOG_OFF = 0,           /* adapter lines are not forwarded */
    WIREGUARD_ADAPTER_LOG_ON = 1,            /* forwarded as they are */
    WIREGUARD_ADAPTER_LOG_ON_WITH_PREFIX = 2 /* forwarded with "<ifindex>: " in front */
} WIREGUARD_ADAPTER_LOG_STATE;

/* Choose whether the adapter's own log lines reach the logger. */
typedef BOOL(WINAPI WIREGUARD_SET_ADAPTER_LOGGING_FUNC)(
    WIREGUARD_ADAPTER_HANDLE Adapter, WIREGUARD_ADAPTER_LOG_STATE LogState);

/* ---------------------------------------------------------------------------
 * Adapter state
 * ------------------------------------------------------------------------- */

typedef enum
{
    WIREGUARD_ADAPTER_STATE_DOWN = 0,
    WIREGUARD_ADAPTER_STATE_UP = 1
} WIREGUARD_ADAPTER_STATE;

/*
 * Bring the adapter up or down.  Any other State gives ERROR_INVALID_PARAMETER.
 * The UDP sockets belong to the process that brings the adapter up.
 */
typedef BOOL(WINAPI WIREGUARD_SET_ADAPTER_STATE_FUNC)(
    WIREGUARD_ADAPTER_HANDLE Adapter, WIREGUARD_ADAPTER_STATE State);

typedef BOOL(WINAPI WIREGUARD_GET_ADAPTER_STATE_FUNC)(
    WIREGUARD_ADAPTER_HANDLE Adapter, WIREGUARD_ADAPTER_STATE *State);

/* ---------------------------------------------------------------------------
 * Configuration records.  A configuration is ONE contiguous buffer:
 *   WIREGUARD_INTERFACE, then PeersCount times
 *     { WIREGUARD_PEER, then its AllowedIPsCount WIREGUARD_ALLOWED_IP records }.
 * Sizes: interface 80, peer 136, allowed IP 24 bytes (all 8-byte aligned, so
 * the records stack without gaps).
 * ------------------------------------------------------------------------- */

#define WIREGUARD_KEY_LENGTH 32

typedef enum
{
    WIREGUARD_ALLOWED_IP_REMOVE = 1 << 0 /* remove this prefix from the peer instead of adding it */
} WIREGUARD_ALLOWED_IP_FLAG;

typedef struct _WIREGUARD_ALLOWED_IP WIREGUARD_ALLOWED_IP;
struct ALIGNED(8) _WIREGUARD_ALLOWED_IP
{
    union
    {
        IN_ADDR V4;
        IN6_ADDR V6;
    } Address;                      /* offset 0 */
    ADDRESS_FAMILY AddressFamily;   /* offset 16: 2 or 23 */
    BYTE Cidr;                      /* offset 18: prefix length */
    WIREGUARD_ALLOWED_IP_FLAG Flags; /* offset 20 */
};

typedef enum
{
    WIREGUARD_PEER_HAS_PUBLIC_KEY = 1 << 0,           /* PublicKey is valid (always required on set) */
    WIREGUARD_PEER_HAS_PRESHARED_KEY = 1 << 1,        /* PresharedKey is valid */
    WIREGUARD_PEER_HAS_PERSISTENT_KEEPALIVE = 1 << 2, /* PersistentKeepalive is valid */
    WIREGUARD_PEER_HAS_ENDPOINT = 1 << 3,             /* Endpoint is valid */
    WIREGUARD_PEER_REPLACE_ALLOWED_IPS = 1 << 5,      /* drop the peer's allowed IPs first */
    WIREGUARD_PEER_REMOVE = 1 << 6,                   /* delete the peer */
    WIREGUARD_PEER_UPDATE_ONLY = 1 << 7               /* never create the peer */
} WIREGUARD_PEER_FLAG;

typedef struct _WIREGUARD_PEER WIREGUARD_PEER;
struct ALIGNED(8) _WIREGUARD_PEER
{
    WIREGUARD_PEER_FLAG Flags;               /* offset 0 */
    DWORD Reserved;                          /* offset 4: set to zero */
    BYTE PublicKey[WIREGUARD_KEY_LENGTH];    /* offset 8: identifies the peer */
    BYTE PresharedKey[WIREGUARD_KEY_LENGTH]; /* offset 40 */
    WORD PersistentKeepalive;                /* offset 72: seconds, 0 = off */
    SOCKADDR_INET Endpoint;                  /* offset 76 */
    DWORD64 TxBytes;                         /* offset 104: read back only */
    DWORD64 RxBytes;                         /* offset 112: read back only */
    DWORD64 LastHandshake;                   /* offset 120: FILETIME, 0 = never */
    DWORD AllowedIPsCount;                   /* offset 128: records that follow */
};

typedef enum
{
    WIREGUARD_INTERFACE_HAS_PUBLIC_KEY = 1 << 0,  /* PublicKey is valid (read back only) */
    WIREGUARD_INTERFACE_HAS_PRIVATE_KEY = 1 << 1, /* PrivateKey is valid */
    WIREGUARD_INTERFACE_HAS_LISTEN_PORT = 1 << 2, /* ListenPort is valid */
    WIREGUARD_INTERFACE_REPLACE_PEERS = 1 << 3    /* remove every peer first */
} WIREGUARD_INTERFACE_FLAG;

typedef struct _WIREGUARD_INTERFACE WIREGUARD_INTERFACE;
struct ALIGNED(8) _WIREGUARD_INTERFACE
{
    WIREGUARD_INTERFACE_FLAG Flags;        /* offset 0 */
    WORD ListenPort;                       /* offset 4: host order, 0 = random */
    BYTE PrivateKey[WIREGUARD_KEY_LENGTH]; /* offset 6 */
    BYTE PublicKey[WIREGUARD_KEY_LENGTH];  /* offset 38 */
    DWORD PeersCount;                      /* offset 72: peer records that follow */
};

/*
 * Apply a configuration buffer of Bytes bytes.  Malformed buffers give
 * ERROR_INVALID_PARAMETER (a Bytes larger than the buffer: ERROR_NOACCESS).
 * WireGuardNT applies records in order without rollback, so on failure the
 * records before the bad one stay applied; wgpy checks the whole buffer first,
 * so a malformed buffer changes nothing.  Portable code should not rely on
 * either behaviour.
 */
typedef BOOL(WINAPI WIREGUARD_SET_CONFIGURATION_FUNC)(
    WIREGUARD_ADAPTER_HANDLE Adapter, const WIREGUARD_INTERFACE *Config, DWORD Bytes);

/*
 * Read the configuration into Config, whose size is *Bytes.  On success *Bytes
 * is the number of bytes written.  If the buffer is too small the call fails
 * with ERROR_MORE_DATA and *Bytes holds the size needed; since the size can
 * change between calls, call it in a loop.
 */
typedef BOOL(WINAPI WIREGUARD_GET_CONFIGURATION_FUNC)(
    WIREGUARD_ADAPTER_HANDLE Adapter, WIREGUARD_INTERFACE *Config, DWORD *Bytes);

/* ---------------------------------------------------------------------------
 * Error codes outside Windows
 * ------------------------------------------------------------------------- */
#if !defined(_WIN32)
/*
 * WireGuardGetLastError - wgpy's stand-in for GetLastError(), exported by
 * wgpy's library (not by wireguard.dll): the Win32 error code recorded by the
 * calling thread's most recent failing call (0 = ERROR_SUCCESS).  Successful
 * calls may leave it unchanged, as on Windows.  A failing call also sets errno
 * to the nearest value: ERROR_INVALID_PARAMETER (87) -> EINVAL,
 * ERROR_NOT_FOUND (1168) and ERROR_FILE_NOT_FOUND (2) -> ENOENT,
 * ERROR_MORE_DATA (234) -> ERANGE, ERROR_INVALID_HANDLE (6) -> EBADF,
 * ERROR_NOACCESS (998) -> EFAULT, ERROR_BUFFER_OVERFLOW (111) -> ENAMETOOLONG,
 * ERROR_ACCESS_DENIED (5) -> EACCES, ERROR_NOT_ENOUGH_MEMORY (8) -> ENOMEM,
 * ERROR_DUP_NAME (52) -> EEXIST, ERROR_ADDRESS_ALREADY_ASSOCIATED (1227) ->
 * EADDRINUSE, ERROR_DLL_INIT_FAILED (1114, the embedded Python did not start)
 * -> ELIBBAD, anything else -> EIO.  Resolve it with dlsym like the others:
 *     WIREGUARD_GET_LAST_ERROR_FUNC *get_last_error = dlsym(lib, "WireGuardGetLastError");
 */
typedef DWORD(WIREGUARD_GET_LAST_ERROR_FUNC)(VOID);
#endif

#ifdef WIREGUARD_PROTOTYPES
WIREGUARD_CREATE_ADAPTER_FUNC WireGuardCreateAdapter;
WIREGUARD_OPEN_ADAPTER_FUNC WireGuardOpenAdapter;
WIREGUARD_CLOSE_ADAPTER_FUNC WireGuardCloseAdapter;
WIREGUARD_DELETE_DRIVER_FUNC WireGuardDeleteDriver;
WIREGUARD_GET_ADAPTER_LUID_FUNC WireGuardGetAdapterLUID;
WIREGUARD_GET_RUNNING_DRIVER_VERSION_FUNC WireGuardGetRunningDriverVersion;
WIREGUARD_SET_LOGGER_FUNC WireGuardSetLogger;
WIREGUARD_SET_ADAPTER_LOGGING_FUNC WireGuardSetAdapterLogging;
WIREGUARD_SET_ADAPTER_STATE_FUNC WireGuardSetAdapterState;
WIREGUARD_GET_ADAPTER_STATE_FUNC WireGuardGetAdapterState;
WIREGUARD_SET_CONFIGURATION_FUNC WireGuardSetConfiguration;
WIREGUARD_GET_CONFIGURATION_FUNC WireGuardGetConfiguration;
#    if !defined(_WIN32)
WIREGUARD_GET_LAST_ERROR_FUNC WireGuardGetLastError;
#    endif
#endif

#if defined(_MSC_VER)
#    pragma warning(pop)
#endif

#ifdef __cplusplus
}
#endif

#endif /* WGPY_WIREGUARD_H */
