/*
 * example.c - drive a WireGuard adapter through the wireguard.h API.
 *
 * wgpy's own example, one program for Windows and Linux, following the flow
 * the WireGuardNT documentation gives for wireguard.dll: load the library at
 * run time and resolve all twelve functions, install a logger, make a key
 * pair, create an adapter, give it its tunnel addresses, configure one peer
 * and its allowed IPs, bring the adapter up, then read the configuration back
 * (in the ERROR_MORE_DATA loop) once a second and print the peer's counters
 * until interrupted (the peer gets a 25 s persistent keepalive, so the tunnel
 * comes up at once).  On exit it prints the final statistics and closes the
 * adapter, which removes it.
 *
 * Build:
 *     Linux:   cc -std=c11 -I"$(python -m wgpy.nt --include-path)" example.c -ldl -o example
 *     Windows: x86_64-w64-mingw32-gcc -std=c11 -I<include> example.c -lbcrypt -liphlpapi
 *              -o example.exe
 * Run:
 *     example LIBRARY NAME PRIVATE_KEY|generate PEER_PUBLIC_KEY PEER_ENDPOINT \
 *             TUNNEL_ADDRESSES ALLOWED_IPS [SECONDS]
 *
 * LIBRARY is wgpy's library (python -m wgpy.nt --library-path) or, on
 * Windows, wireguard.dll.  Keys are base64 (as wg prints them); "generate"
 * makes a fresh X25519 key pair with the system's crypto (BCrypt on Windows,
 * OpenSSL's libcrypto loaded at run time elsewhere) and prints the public key
 * first.  PEER_ENDPOINT is a.b.c.d:port or [v6]:port.  TUNNEL_ADDRESSES and
 * ALLOWED_IPS are comma-separated address/prefix lists.  The addresses go
 * through wgpy's WgpySetAdapterAddresses when the library has it and the
 * adapter is a userspace one (WGPY_ADAPTER=userspace), else to the system:
 * IP Helper with the adapter's LUID on Windows, ioctl on the interface on
 * Linux.  The program stops after SECONDS (default: until interrupted).
 *
 * Output on stdout, one record per line:
 *     public_key <base64>           (only with PRIVATE_KEY "generate")
 *     ready <ifname or -> <ifindex> v<major>.<minor>
 *     stats rx_bytes=<n> tx_bytes=<n> last_handshake=<unix seconds, 0 = never>
 *     peer <public key> endpoint=<addr> rx_bytes=<n> tx_bytes=<n> last_handshake=<s>
 *     allowed_ip <address>/<cidr>
 * Log lines go to stderr as "YYYY-MM-DD HH:MM:SS.mmmm [+] message".
 */

#if !defined(_WIN32)
#    define _DEFAULT_SOURCE
#endif
#include <errno.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#if defined(_WIN32)
#    include "wireguard.h" /* includes winsock2.h and windows.h */
#    include <bcrypt.h>
#    include <iphlpapi.h>
#    include <netioapi.h>
#else
#    include <dlfcn.h>
#    include <net/if.h>
#    include <netinet/in.h>
#    include <sys/ioctl.h>
#    include <sys/socket.h>
#    include <unistd.h>
/* After the system headers: AF_INET6 keeps the host's value, and the ABI's
 * families are WIREGUARD_AF_INET / WIREGUARD_AF_INET6 (2 / 23). */
#    include "wireguard.h"
#endif
#include "wgpy.h"

/* The ABI, checked where the program is compiled (mingw's headers included):
 * a program built against a different layout would corrupt the driver's data. */
_Static_assert(sizeof(WIREGUARD_INTERFACE) == 80, "WIREGUARD_INTERFACE is 80 bytes");
_Static_assert(sizeof(WIREGUARD_PEER) == 136, "WIREGUARD_PEER is 136 bytes");
_Static_assert(sizeof(WIREGUARD_ALLOWED_IP) == 24, "WIREGUARD_ALLOWED_IP is 24 bytes");
_Static_assert(offsetof(WIREGUARD_INTERFACE, ListenPort) == 4, "ListenPort at 4");
_Static_assert(offsetof(WIREGUARD_INTERFACE, PrivateKey) == 6, "PrivateKey at 6");
_Static_assert(offsetof(WIREGUARD_INTERFACE, PublicKey) == 38, "PublicKey at 38");
_Static_assert(offsetof(WIREGUARD_INTERFACE, PeersCount) == 72, "PeersCount at 72");
_Static_assert(offsetof(WIREGUARD_PEER, PublicKey) == 8, "PublicKey at 8");
_Static_assert(offsetof(WIREGUARD_PEER, PresharedKey) == 40, "PresharedKey at 40");
_Static_assert(offsetof(WIREGUARD_PEER, PersistentKeepalive) == 72, "PersistentKeepalive at 72");
_Static_assert(offsetof(WIREGUARD_PEER, Endpoint) == 76, "Endpoint at 76");
_Static_assert(offsetof(WIREGUARD_PEER, TxBytes) == 104, "TxBytes at 104");
_Static_assert(offsetof(WIREGUARD_PEER, RxBytes) == 112, "RxBytes at 112");
_Static_assert(offsetof(WIREGUARD_PEER, LastHandshake) == 120, "LastHandshake at 120");
_Static_assert(offsetof(WIREGUARD_PEER, AllowedIPsCount) == 128, "AllowedIPsCount at 128");
_Static_assert(offsetof(WIREGUARD_ALLOWED_IP, AddressFamily) == 16, "AddressFamily at 16");
_Static_assert(offsetof(WIREGUARD_ALLOWED_IP, Cidr) == 18, "Cidr at 18");
_Static_assert(sizeof(SOCKADDR_INET) == 28, "SOCKADDR_INET is 28 bytes");
_Static_assert(sizeof(NET_LUID) == 8, "NET_LUID is 8 bytes");

/* FILETIME of the Unix epoch: 100 ns ticks between 1601-01-01 and 1970-01-01. */
#define FILETIME_UNIX_EPOCH 116444736000000000ULL
#define EXAMPLE_ERROR_MORE_DATA 234u
#define EXAMPLE_ERROR_NOT_SUPPORTED 50u
#define MAX_ITEMS 8

static WIREGUARD_CREATE_ADAPTER_FUNC *WireGuardCreateAdapter;
static WIREGUARD_OPEN_ADAPTER_FUNC *WireGuardOpenAdapter;
static WIREGUARD_CLOSE_ADAPTER_FUNC *WireGuardCloseAdapter;
static WIREGUARD_GET_ADAPTER_LUID_FUNC *WireGuardGetAdapterLUID;
static WIREGUARD_GET_RUNNING_DRIVER_VERSION_FUNC *WireGuardGetRunningDriverVersion;
static WIREGUARD_DELETE_DRIVER_FUNC *WireGuardDeleteDriver;
static WIREGUARD_SET_LOGGER_FUNC *WireGuardSetLogger;
static WIREGUARD_SET_ADAPTER_LOGGING_FUNC *WireGuardSetAdapterLogging;
static WIREGUARD_GET_ADAPTER_STATE_FUNC *WireGuardGetAdapterState;
static WIREGUARD_SET_ADAPTER_STATE_FUNC *WireGuardSetAdapterState;
static WIREGUARD_GET_CONFIGURATION_FUNC *WireGuardGetConfiguration;
static WIREGUARD_SET_CONFIGURATION_FUNC *WireGuardSetConfiguration;
/* wgpy's optional extension: absent from wireguard.dll. */
static WGPY_SET_ADAPTER_ADDRESSES_FUNC *WgpySetAdapterAddresses;

/* ---- the platform: library loading, errors, time ----------------------------------- */

#if defined(_WIN32)

static DWORD LastError(void) { return GetLastError(); }

static void *LoadSymbol(HMODULE library, const char *name)
{
    FARPROC proc = GetProcAddress(library, name);
    void *out;
    memcpy(&out, &proc, sizeof out);
    return out;
}

static int LoadWireGuard(const char *path)
{
    WCHAR wide[MAX_PATH];
    HMODULE library;
    if (!MultiByteToWideChar(CP_UTF8, 0, path, -1, wide, MAX_PATH)) {
        fprintf(stderr, "bad library path %s\n", path);
        return 0;
    }
    /* A full path: its own directory and System32 only, as the documented flow. */
    library = LoadLibraryExW(wide, NULL, LOAD_LIBRARY_SEARCH_DLL_LOAD_DIR | LOAD_LIBRARY_SEARCH_SYSTEM32);
    if (!library) {
        fprintf(stderr, "cannot load %s: error %lu\n", path, (unsigned long)GetLastError());
        return 0;
    }
#    define SYMBOL(Name) LoadSymbol(library, #    Name)
#else

/* wgpy's stand-in for GetLastError(); optional, so the loader also accepts a
 * library that lacks it. */
static WIREGUARD_GET_LAST_ERROR_FUNC *GetLastErrorFunc;

static DWORD LastError(void) { return GetLastErrorFunc ? GetLastErrorFunc() : (DWORD)errno; }

static int LoadWireGuard(const char *path)
{
    void *library = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!library) {
        fprintf(stderr, "cannot load %s: %s\n", path, dlerror());
        return 0;
    }
    *(void **)&GetLastErrorFunc = dlsym(library, "WireGuardGetLastError");
#    define SYMBOL(Name) dlsym(library, #    Name)
#endif
    /* Every function must be there, as in the original; the extension may not. */
#define RESOLVE(Name)                                                                   \
    do {                                                                                \
        *(void **)&Name = SYMBOL(Name);                                                 \
        if (!Name) {                                                                    \
            fprintf(stderr, "%s does not export %s\n", path, #Name);                    \
            return 0;                                                                   \
        }                                                                               \
    } while (0)
    RESOLVE(WireGuardCreateAdapter);
    RESOLVE(WireGuardOpenAdapter);
    RESOLVE(WireGuardCloseAdapter);
    RESOLVE(WireGuardGetAdapterLUID);
    RESOLVE(WireGuardGetRunningDriverVersion);
    RESOLVE(WireGuardDeleteDriver);
    RESOLVE(WireGuardSetLogger);
    RESOLVE(WireGuardSetAdapterLogging);
    RESOLVE(WireGuardGetAdapterState);
    RESOLVE(WireGuardSetAdapterState);
    RESOLVE(WireGuardGetConfiguration);
    RESOLVE(WireGuardSetConfiguration);
#undef RESOLVE
    *(void **)&WgpySetAdapterAddresses = SYMBOL(WgpySetAdapterAddresses);
#undef SYMBOL
    return 1;
}

static volatile sig_atomic_t Quit;

#if defined(_WIN32)
static BOOL WINAPI OnConsoleEvent(DWORD type)
{
    (void)type;
    Quit = 1;
    return TRUE;
}

static void OnQuitRequests(void) { SetConsoleCtrlHandler(OnConsoleEvent, TRUE); }

static void SleepOneSecond(void) { Sleep(1000); }

/* FILETIME ticks to "YYYY-MM-DD HH:MM:SS.mmmm". */
static void FormatTime(DWORD64 ticks, char *out, size_t size)
{
    FILETIME ft = {(DWORD)ticks, (DWORD)(ticks >> 32)};
    SYSTEMTIME st;
    FileTimeToSystemTime(&ft, &st);
    snprintf(out, size, "%04u-%02u-%02u %02u:%02u:%02u.%04u", st.wYear, st.wMonth, st.wDay,
             st.wHour, st.wMinute, st.wSecond, (unsigned)((ticks % 10000000ULL) / 10000ULL));
}
#else
static void OnSignal(int signum)
{
    (void)signum;
    Quit = 1;
}

static void OnQuitRequests(void)
{
    signal(SIGINT, OnSignal);
    signal(SIGTERM, OnSignal);
}

static void SleepOneSecond(void)
{
    struct timespec second = {1, 0};
    while (nanosleep(&second, &second) < 0 && errno == EINTR && !Quit)
        ;
}

static void FormatTime(DWORD64 ticks, char *out, size_t size)
{
    uint64_t unix_ticks = ticks - FILETIME_UNIX_EPOCH;
    time_t seconds = (time_t)(unix_ticks / 10000000ULL);
    struct tm tm;
    char when[24];
    gmtime_r(&seconds, &tm);
    strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", &tm);
    snprintf(out, size, "%s.%04u", when, (unsigned)((unix_ticks % 10000000ULL) / 10000ULL));
}
#endif

/* ---- text helpers ----------------------------------------------------------------- */

/* UTF-16 (from the library) to UTF-8 for printing. */
static void PrintUtf16(FILE *out, LPCWSTR text)
{
    for (size_t i = 0; text[i]; ++i) {
        uint32_t c = text[i];
        if (c >= 0xD800 && c < 0xDC00 && text[i + 1] >= 0xDC00 && text[i + 1] < 0xE000) {
            c = 0x10000 + ((c - 0xD800) << 10) + (text[i + 1] - 0xDC00);
            ++i;
        } else if (c >= 0xD800 && c < 0xE000) {
            c = 0xFFFD;
        }
        if (c < 0x80) {
            fputc((int)c, out);
        } else if (c < 0x800) {
            fputc((int)(0xC0 | (c >> 6)), out);
            fputc((int)(0x80 | (c & 0x3F)), out);
        } else if (c < 0x10000) {
            fputc((int)(0xE0 | (c >> 12)), out);
            fputc((int)(0x80 | ((c >> 6) & 0x3F)), out);
            fputc((int)(0x80 | (c & 0x3F)), out);
        } else {
            fputc((int)(0xF0 | (c >> 18)), out);
            fputc((int)(0x80 | ((c >> 12) & 0x3F)), out);
            fputc((int)(0x80 | ((c >> 6) & 0x3F)), out);
            fputc((int)(0x80 | (c & 0x3F)), out);
        }
    }
}

/* ASCII command-line text to a NUL-terminated UTF-16 string (caller frees). */
static WCHAR *Utf16FromAscii(const char *text)
{
    size_t n = strlen(text);
    WCHAR *out = calloc(n + 1, sizeof *out);
    if (!out)
        return NULL;
    for (size_t i = 0; i < n; ++i)
        out[i] = (WCHAR)(unsigned char)text[i];
    return out;
}

static const char Base64Alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Decode a 44-character base64 key into 32 bytes; 0 if it is not one. */
static int DecodeKey(const char *text, BYTE key[WIREGUARD_KEY_LENGTH])
{
    uint32_t acc = 0;
    int bits = 0;
    size_t out = 0;
    if (strlen(text) != 44 || text[43] != '=')
        return 0;
    for (size_t i = 0; i < 43; ++i) {
        const char *p = strchr(Base64Alphabet, text[i]);
        if (!p || !*p)
            return 0;
        acc = (acc << 6) | (uint32_t)(p - Base64Alphabet);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (out < WIREGUARD_KEY_LENGTH)
                key[out++] = (BYTE)(acc >> bits);
        }
    }
    return out == WIREGUARD_KEY_LENGTH;
}

static void EncodeKey(const BYTE key[WIREGUARD_KEY_LENGTH], char text[45])
{
    size_t o = 0;
    for (size_t i = 0; i < WIREGUARD_KEY_LENGTH; i += 3) {
        uint32_t v = (uint32_t)key[i] << 16;
        if (i + 1 < WIREGUARD_KEY_LENGTH)
            v |= (uint32_t)key[i + 1] << 8;
        if (i + 2 < WIREGUARD_KEY_LENGTH)
            v |= key[i + 2];
        text[o++] = Base64Alphabet[(v >> 18) & 63];
        text[o++] = Base64Alphabet[(v >> 12) & 63];
        text[o++] = i + 1 < WIREGUARD_KEY_LENGTH ? Base64Alphabet[(v >> 6) & 63] : '=';
        text[o++] = i + 2 < WIREGUARD_KEY_LENGTH ? Base64Alphabet[v & 63] : '=';
    }
    text[o] = '\0';
}

/* ---- addresses (no inet_pton: the same code on both systems) ------------------------ */

/* Dotted quad into 4 bytes; 0 if it is not one. */
static int ParseIPv4(const char *text, BYTE out[4])
{
    for (int i = 0; i < 4; ++i) {
        unsigned value = 0, digits = 0;
        while (*text >= '0' && *text <= '9' && digits < 4) {
            value = value * 10 + (unsigned)(*text++ - '0');
            ++digits;
        }
        if (!digits || value > 255 || (i < 3 && *text++ != '.'))
            return 0;
        out[i] = (BYTE)value;
    }
    return *text == '\0';
}

static int HexDigit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* RFC 4291 text (with "::", without an embedded IPv4 part) into 16 bytes. */
static int ParseIPv6(const char *text, BYTE out[16])
{
    uint16_t groups[8];
    int count = 0, gap = -1;
    if (text[0] == ':' && text[1] == ':') {
        gap = 0;
        text += 2;
    }
    while (*text) {
        unsigned value = 0;
        int digits = 0, d;
        while ((d = HexDigit(*text)) >= 0 && digits < 4) {
            value = (value << 4) | (unsigned)d;
            ++digits;
            ++text;
        }
        if (!digits || count == 8)
            return 0;
        groups[count++] = (uint16_t)value;
        if (*text == ':') {
            ++text;
            if (*text == ':') {
                if (gap >= 0)
                    return 0;
                gap = count;
                ++text;
            } else if (!*text) {
                return 0;
            }
        } else if (*text) {
            return 0;
        }
    }
    if (gap < 0 ? count != 8 : count > 7)
        return 0;
    memset(out, 0, 16);
    for (int i = 0, o = 0; i < count; ++i, ++o) {
        if (i == gap)
            o += 8 - count;
        out[2 * o] = (BYTE)(groups[i] >> 8);
        out[2 * o + 1] = (BYTE)groups[i];
    }
    return 1;
}

static void FormatIPv4(const BYTE a[4], char *out, size_t size)
{
    snprintf(out, size, "%u.%u.%u.%u", a[0], a[1], a[2], a[3]);
}

/* Full form, no "::" compression: unambiguous and short enough for a log. */
static void FormatIPv6(const BYTE a[16], char *out, size_t size)
{
    size_t used = 0;
    for (int i = 0; i < 8 && used < size; ++i)
        used += (size_t)snprintf(out + used, size - used, i ? ":%x" : "%x",
                                 (unsigned)(a[2 * i] << 8 | a[2 * i + 1]));
}

/* "address/prefix": the family (4 or 6), the address bytes and the prefix. */
static int ParsePrefix(const char *text, BYTE address[16], unsigned *prefix)
{
    char buf[64];
    const char *slash = strchr(text, '/');
    char *end;
    unsigned long value;
    if (!slash || (size_t)(slash - text) >= sizeof buf)
        return 0;
    memcpy(buf, text, (size_t)(slash - text));
    buf[slash - text] = '\0';
    value = strtoul(slash + 1, &end, 10);
    if (*end || slash[1] == '\0')
        return 0;
    *prefix = (unsigned)value;
    if (ParseIPv4(buf, address))
        return value <= 32 ? 4 : 0;
    if (ParseIPv6(buf, address))
        return value <= 128 ? 6 : 0;
    return 0;
}

/* "a.b.c.d:port" or "[v6]:port" into a SOCKADDR_INET with the ABI's families. */
static int ParseEndpoint(const char *text, SOCKADDR_INET *endpoint)
{
    char host[64];
    const char *colon = strrchr(text, ':');
    char *end;
    unsigned long port;
    size_t n;
    BYTE *port_bytes;
    if (!colon || (size_t)(colon - text) >= sizeof host)
        return 0;
    n = (size_t)(colon - text);
    memcpy(host, text, n);
    host[n] = '\0';
    port = strtoul(colon + 1, &end, 10);
    if (*end || port > 65535)
        return 0;
    memset(endpoint, 0, sizeof *endpoint);
    if (host[0] == '[' && n > 2 && host[n - 1] == ']') {
        host[n - 1] = '\0';
        if (!ParseIPv6(host + 1, (BYTE *)&endpoint->Ipv6.sin6_addr))
            return 0;
        endpoint->Ipv6.sin6_family = WIREGUARD_AF_INET6;
        port_bytes = (BYTE *)&endpoint->Ipv6.sin6_port;
    } else {
        if (!ParseIPv4(host, (BYTE *)&endpoint->Ipv4.sin_addr))
            return 0;
        endpoint->Ipv4.sin_family = WIREGUARD_AF_INET;
        port_bytes = (BYTE *)&endpoint->Ipv4.sin_port;
    }
    port_bytes[0] = (BYTE)(port >> 8); /* network byte order */
    port_bytes[1] = (BYTE)port;
    return 1;
}

/* A copy of a string (strdup is not in C11, and mingw hides it under -std=c11). */
static char *CopyString(const char *text)
{
    size_t n = strlen(text) + 1;
    char *out = malloc(n);
    if (out)
        memcpy(out, text, n);
    return out;
}

/* Split a comma-separated list in place; returns the number of items. */
static int SplitList(char *text, char *items[MAX_ITEMS])
{
    int n = 0;
    for (char *item = strtok(text, ","); item; item = strtok(NULL, ",")) {
        if (n == MAX_ITEMS)
            return -1;
        items[n++] = item;
    }
    return n;
}

static uint64_t UnixSeconds(DWORD64 filetime)
{
    return filetime ? (filetime - FILETIME_UNIX_EPOCH) / 10000000ULL : 0;
}

/* ---- logging ------------------------------------------------------------------------ */

static void CALLBACK ConsoleLogger(WIREGUARD_LOGGER_LEVEL Level, DWORD64 Timestamp, LPCWSTR Message)
{
    char when[40];
    char mark = Level == WIREGUARD_LOG_ERR ? '!' : Level == WIREGUARD_LOG_WARN ? '-' : '+';
    FormatTime(Timestamp, when, sizeof when);
    fprintf(stderr, "%s [%c] ", when, mark);
    PrintUtf16(stderr, Message);
    fputc('\n', stderr);
}

static void LogError(const char *prefix, DWORD error)
{
    fprintf(stderr, "%s: error %u (0x%08X)\n", prefix, (unsigned)error, (unsigned)error);
}

/* ---- key generation ---------------------------------------------------------------- */

#if defined(_WIN32)
/* The SDK's names (Windows 10); older mingw-w64 headers lack them. */
#    ifndef BCRYPT_ECDH_ALGORITHM
#        define BCRYPT_ECDH_ALGORITHM L"ECDH"
#    endif
#    ifndef BCRYPT_ECC_CURVE_NAME
#        define BCRYPT_ECC_CURVE_NAME L"ECCCurveName"
#    endif
#    ifndef BCRYPT_ECC_CURVE_25519
#        define BCRYPT_ECC_CURVE_25519 L"curve25519"
#    endif

/* X25519 with BCrypt, as WireGuardNT's documented flow makes its keys. */
static int GenerateKeyPair(BYTE Private[WIREGUARD_KEY_LENGTH], BYTE Public[WIREGUARD_KEY_LENGTH])
{
    BCRYPT_ALG_HANDLE Algorithm;
    BCRYPT_KEY_HANDLE Key;
    struct
    {
        BCRYPT_ECCKEY_BLOB Header;
        BYTE Public[32];
        BYTE Unused[32];
        BYTE Private[32];
    } Blob;
    ULONG Bytes;
    int ok = 0;
    if (!BCRYPT_SUCCESS(BCryptOpenAlgorithmProvider(&Algorithm, BCRYPT_ECDH_ALGORITHM, NULL, 0))) {
        fprintf(stderr, "BCryptOpenAlgorithmProvider failed\n");
        return 0;
    }
    if (BCRYPT_SUCCESS(BCryptSetProperty(Algorithm, BCRYPT_ECC_CURVE_NAME,
                                         (PUCHAR)BCRYPT_ECC_CURVE_25519,
                                         sizeof(BCRYPT_ECC_CURVE_25519), 0)) &&
        BCRYPT_SUCCESS(BCryptGenerateKeyPair(Algorithm, &Key, 255, 0))) {
        if (BCRYPT_SUCCESS(BCryptFinalizeKeyPair(Key, 0)) &&
            BCRYPT_SUCCESS(BCryptExportKey(Key, NULL, BCRYPT_ECCPRIVATE_BLOB, (PUCHAR)&Blob,
                                           sizeof Blob, &Bytes, 0)) &&
            Bytes == sizeof Blob) {
            memcpy(Private, Blob.Private, WIREGUARD_KEY_LENGTH);
            memcpy(Public, Blob.Public, WIREGUARD_KEY_LENGTH);
            ok = 1;
        }
        BCryptDestroyKey(Key);
    }
    SecureZeroMemory(&Blob, sizeof Blob);
    BCryptCloseAlgorithmProvider(Algorithm, 0);
    if (!ok)
        fprintf(stderr, "X25519 key generation failed\n");
    return ok;
}
#else
/* libcrypto's EVP calls used to make an X25519 key pair (OpenSSL 1.1.1 and 3). */
#    define EVP_PKEY_X25519_ID 1034 /* NID_X25519 */
typedef void *(*EVP_PKEY_CTX_NEW_ID_FUNC)(int, void *);
typedef int (*EVP_PKEY_KEYGEN_INIT_FUNC)(void *);
typedef int (*EVP_PKEY_KEYGEN_FUNC)(void *, void **);
typedef int (*EVP_PKEY_GET_RAW_FUNC)(const void *, unsigned char *, size_t *);
typedef void (*EVP_FREE_FUNC)(void *);

/* Generate a key pair; 0 on failure (reason on stderr). */
static int GenerateKeyPair(BYTE Private[WIREGUARD_KEY_LENGTH], BYTE Public[WIREGUARD_KEY_LENGTH])
{
    static const char *const Names[] = {"libcrypto.so.3", "libcrypto.so.1.1", "libcrypto.so"};
    void *Crypto = NULL;
    for (size_t i = 0; i < sizeof Names / sizeof Names[0] && !Crypto; ++i)
        Crypto = dlopen(Names[i], RTLD_NOW | RTLD_LOCAL);
    if (!Crypto) {
        fprintf(stderr, "cannot load libcrypto to generate a key: %s\n", dlerror());
        return 0;
    }
    EVP_PKEY_CTX_NEW_ID_FUNC CtxNew;
    EVP_PKEY_KEYGEN_INIT_FUNC KeygenInit;
    EVP_PKEY_KEYGEN_FUNC Keygen;
    EVP_PKEY_GET_RAW_FUNC GetPrivate, GetPublic;
    EVP_FREE_FUNC CtxFree, KeyFree;
    *(void **)&CtxNew = dlsym(Crypto, "EVP_PKEY_CTX_new_id");
    *(void **)&KeygenInit = dlsym(Crypto, "EVP_PKEY_keygen_init");
    *(void **)&Keygen = dlsym(Crypto, "EVP_PKEY_keygen");
    *(void **)&GetPrivate = dlsym(Crypto, "EVP_PKEY_get_raw_private_key");
    *(void **)&GetPublic = dlsym(Crypto, "EVP_PKEY_get_raw_public_key");
    *(void **)&CtxFree = dlsym(Crypto, "EVP_PKEY_CTX_free");
    *(void **)&KeyFree = dlsym(Crypto, "EVP_PKEY_free");
    if (!CtxNew || !KeygenInit || !Keygen || !GetPrivate || !GetPublic || !CtxFree || !KeyFree) {
        fprintf(stderr, "libcrypto lacks the EVP X25519 calls\n");
        dlclose(Crypto);
        return 0;
    }
    int ok = 0;
    void *Key = NULL, *Ctx = CtxNew(EVP_PKEY_X25519_ID, NULL);
    size_t PrivateLen = WIREGUARD_KEY_LENGTH, PublicLen = WIREGUARD_KEY_LENGTH;
    if (Ctx && KeygenInit(Ctx) == 1 && Keygen(Ctx, &Key) == 1 && GetPrivate(Key, Private, &PrivateLen) == 1 &&
        GetPublic(Key, Public, &PublicLen) == 1 && PrivateLen == WIREGUARD_KEY_LENGTH &&
        PublicLen == WIREGUARD_KEY_LENGTH)
        ok = 1;
    else
        fprintf(stderr, "X25519 key generation failed\n");
    if (Key)
        KeyFree(Key);
    if (Ctx)
        CtxFree(Ctx);
    dlclose(Crypto);
    return ok;
}
#endif

/* ---- the adapter's addresses ------------------------------------------------------- */

#if defined(_WIN32)
/* IP Helper with the adapter's LUID, as a Windows program configures it. */
static int SetSystemAddress(const NET_LUID *luid, int family, const BYTE *address, unsigned prefix)
{
    MIB_UNICASTIPADDRESS_ROW row;
    DWORD err;
    InitializeUnicastIpAddressEntry(&row);
    row.InterfaceLuid = *luid;
    if (family == 4) {
        row.Address.Ipv4.sin_family = AF_INET;
        memcpy(&row.Address.Ipv4.sin_addr, address, 4);
    } else {
        row.Address.Ipv6.sin6_family = AF_INET6;
        memcpy(&row.Address.Ipv6.sin6_addr, address, 16);
    }
    row.OnLinkPrefixLength = (UINT8)prefix;
    row.DadState = IpDadStatePreferred;
    err = CreateUnicastIpAddressEntry(&row);
    if (err != ERROR_SUCCESS && err != ERROR_OBJECT_ALREADY_EXISTS) {
        LogError("CreateUnicastIpAddressEntry", err);
        return 0;
    }
    return 1;
}

static int InterfaceName(const NET_LUID *luid, char *out, size_t size)
{
    (void)luid;
    snprintf(out, size, "-"); /* Windows names adapters by their alias; print none */
    return 1;
}
#else
/* <linux/ipv6.h>'s in6_ifreq, declared here to keep kernel headers out. */
struct example_in6_ifreq {
    BYTE addr[16];
    uint32_t prefixlen;
    int ifindex;
};

/* ioctl on the interface, standing in for the IP Helper calls. */
static int SetSystemAddress(const NET_LUID *luid, int family, const BYTE *address, unsigned prefix)
{
    char ifname[IF_NAMESIZE];
    int fd, ok = 0;
    if (!if_indextoname((unsigned)luid->Info.NetLuidIndex, ifname))
        return 0;
    if (family == 4) {
        struct ifreq ifr;
        struct sockaddr_in *sin = (struct sockaddr_in *)&ifr.ifr_addr;
        fd = socket(AF_INET, SOCK_DGRAM, 0);
        if (fd < 0)
            return 0;
        memset(&ifr, 0, sizeof ifr);
        strncpy(ifr.ifr_name, ifname, IFNAMSIZ - 1);
        sin->sin_family = AF_INET;
        memcpy(&sin->sin_addr, address, 4);
        if (ioctl(fd, SIOCSIFADDR, &ifr) == 0) {
            uint32_t mask = prefix ? 0xFFFFFFFFu << (32 - prefix) : 0;
            BYTE bytes[4] = {(BYTE)(mask >> 24), (BYTE)(mask >> 16), (BYTE)(mask >> 8), (BYTE)mask};
            memcpy(&sin->sin_addr, bytes, 4);
            ok = ioctl(fd, SIOCSIFNETMASK, &ifr) == 0;
        }
    } else {
        struct example_in6_ifreq req;
        fd = socket(AF_INET6, SOCK_DGRAM, 0);
        if (fd < 0)
            return 0;
        memcpy(req.addr, address, 16);
        req.prefixlen = prefix;
        req.ifindex = (int)luid->Info.NetLuidIndex;
        ok = ioctl(fd, SIOCSIFADDR, &req) == 0;
    }
    close(fd);
    return ok;
}

static int InterfaceName(const NET_LUID *luid, char *out, size_t size)
{
    char ifname[IF_NAMESIZE];
    if (!if_indextoname((unsigned)luid->Info.NetLuidIndex, ifname))
        return 0;
    snprintf(out, size, "%s", ifname);
    return 1;
}
#endif

/* Give the adapter its addresses: wgpy's extension for a userspace adapter,
 * else the system.  1 on success; *Userspace says which way it went. */
static int SetAddresses(WIREGUARD_ADAPTER_HANDLE Adapter, const NET_LUID *Luid, const char *List,
                        int *Userspace)
{
    char *Copy = CopyString(List), *Items[MAX_ITEMS];
    int Count, ok = 1;
    *Userspace = 0;
    if (!Copy)
        return 0;
    if (WgpySetAdapterAddresses) {
        WCHAR *Wide = Utf16FromAscii(List);
        BOOL done = Wide && WgpySetAdapterAddresses(Adapter, Wide);
        DWORD err = LastError();
        free(Wide);
        if (done) {
            *Userspace = 1;
            free(Copy);
            return 1;
        }
        if (err != EXAMPLE_ERROR_NOT_SUPPORTED) { /* a userspace adapter refused the list */
            LogError("WgpySetAdapterAddresses", err);
            free(Copy);
            return 0;
        }
    }
    Count = SplitList(Copy, Items);
    for (int i = 0; ok && i < Count; ++i) {
        BYTE address[16];
        unsigned prefix;
        int family = ParsePrefix(Items[i], address, &prefix);
        ok = family && SetSystemAddress(Luid, family, address, prefix);
    }
    free(Copy);
    return ok && Count > 0;
}

/* ---- reading the configuration back --------------------------------------------------- */

/* GetConfiguration in the documented loop: the size can change between calls. */
static WIREGUARD_INTERFACE *ReadConfiguration(WIREGUARD_ADAPTER_HANDLE adapter, DWORD *bytes)
{
    DWORD size = sizeof(WIREGUARD_INTERFACE); /* deliberately small: ask again */
    WIREGUARD_INTERFACE *config = NULL;
    for (;;) {
        WIREGUARD_INTERFACE *grown = realloc(config, size);
        if (!grown) {
            free(config);
            return NULL;
        }
        config = grown;
        memset(config, 0, size);
        if (WireGuardGetConfiguration(adapter, config, &size)) {
            *bytes = size;
            return config;
        }
        if (LastError() != EXAMPLE_ERROR_MORE_DATA) {
            LogError("Failed to get configuration", LastError());
            free(config);
            return NULL;
        }
    }
}

static unsigned PortOf(const USHORT *network_order)
{
    const BYTE *b = (const BYTE *)network_order;
    return (unsigned)(b[0] << 8 | b[1]);
}

static void PrintPeers(const WIREGUARD_INTERFACE *config, int details)
{
    const BYTE *cursor = (const BYTE *)config + sizeof *config;
    for (DWORD p = 0; p < config->PeersCount; ++p) {
        const WIREGUARD_PEER *peer = (const WIREGUARD_PEER *)cursor;
        const WIREGUARD_ALLOWED_IP *allowed = (const WIREGUARD_ALLOWED_IP *)(peer + 1);
        cursor = (const BYTE *)(allowed + peer->AllowedIPsCount);
        if (!details) {
            printf("stats rx_bytes=%llu tx_bytes=%llu last_handshake=%llu\n",
                   (unsigned long long)peer->RxBytes, (unsigned long long)peer->TxBytes,
                   (unsigned long long)UnixSeconds(peer->LastHandshake));
            continue;
        }
        char key[45], where[80] = "none", text[48];
        EncodeKey(peer->PublicKey, key);
        if (peer->Flags & WIREGUARD_PEER_HAS_ENDPOINT) {
            if (peer->Endpoint.si_family == WIREGUARD_AF_INET) {
                FormatIPv4((const BYTE *)&peer->Endpoint.Ipv4.sin_addr, text, sizeof text);
                snprintf(where, sizeof where, "%s:%u", text, PortOf(&peer->Endpoint.Ipv4.sin_port));
            } else if (peer->Endpoint.si_family == WIREGUARD_AF_INET6) {
                FormatIPv6((const BYTE *)&peer->Endpoint.Ipv6.sin6_addr, text, sizeof text);
                snprintf(where, sizeof where, "[%s]:%u", text, PortOf(&peer->Endpoint.Ipv6.sin6_port));
            }
        }
        printf("peer %s endpoint=%s rx_bytes=%llu tx_bytes=%llu last_handshake=%llu\n", key, where,
               (unsigned long long)peer->RxBytes, (unsigned long long)peer->TxBytes,
               (unsigned long long)UnixSeconds(peer->LastHandshake));
        for (DWORD a = 0; a < peer->AllowedIPsCount; ++a) {
            if (allowed[a].AddressFamily == WIREGUARD_AF_INET6)
                FormatIPv6((const BYTE *)&allowed[a].Address.V6, text, sizeof text);
            else
                FormatIPv4((const BYTE *)&allowed[a].Address.V4, text, sizeof text);
            printf("allowed_ip %s/%u\n", text, allowed[a].Cidr);
        }
    }
    fflush(stdout);
}

/* ---- main ------------------------------------------------------------------------------ */

int main(int argc, char **argv)
{
    struct
    {
        WIREGUARD_INTERFACE Interface;
        WIREGUARD_PEER Peer;
        WIREGUARD_ALLOWED_IP AllowedIps[MAX_ITEMS];
    } Config;
    WIREGUARD_ADAPTER_HANDLE Adapter;
    WCHAR *Name, *TunnelType;
    NET_LUID Luid;
    char ifname[64], *AllowedCopy, *Items[MAX_ITEMS];
    DWORD Version, Bytes;
    WIREGUARD_INTERFACE *ReadBack;
    long seconds = argc > 8 ? strtol(argv[8], NULL, 10) : -1;
    int status = 1, Count, Userspace;

    if (argc < 8) {
        fprintf(stderr,
                "usage: %s LIBRARY NAME PRIVATE_KEY|generate PEER_PUBLIC_KEY PEER_ENDPOINT "
                "TUNNEL_ADDRESSES ALLOWED_IPS [SECONDS]\n",
                argv[0]);
        return 2;
    }
    memset(&Config, 0, sizeof Config);
    Config.Interface.Flags = WIREGUARD_INTERFACE_HAS_PRIVATE_KEY;
    Config.Interface.PeersCount = 1;
    Config.Peer.Flags = WIREGUARD_PEER_HAS_PUBLIC_KEY | WIREGUARD_PEER_HAS_ENDPOINT |
                        WIREGUARD_PEER_HAS_PERSISTENT_KEEPALIVE;
    /* Keepalives every 25 s: the tunnel comes up at once, and the peer learns
     * our endpoint even if nothing on this side sends. */
    Config.Peer.PersistentKeepalive = 25;
    if (strcmp(argv[3], "generate") == 0) {
        BYTE Public[WIREGUARD_KEY_LENGTH];
        char Text[45];
        if (!GenerateKeyPair(Config.Interface.PrivateKey, Public))
            return 1;
        EncodeKey(Public, Text);
        printf("public_key %s\n", Text);
        fflush(stdout);
    } else if (!DecodeKey(argv[3], Config.Interface.PrivateKey)) {
        fprintf(stderr, "bad private key on the command line\n");
        return 2;
    }
    AllowedCopy = CopyString(argv[7]);
    Count = AllowedCopy ? SplitList(AllowedCopy, Items) : -1;
    for (int i = 0; i < Count; ++i) {
        BYTE address[16];
        unsigned prefix;
        int family = ParsePrefix(Items[i], address, &prefix);
        WIREGUARD_ALLOWED_IP *allowed = &Config.AllowedIps[i];
        if (!family) {
            Count = -1;
            break;
        }
        allowed->AddressFamily = family == 4 ? WIREGUARD_AF_INET : WIREGUARD_AF_INET6;
        memcpy(&allowed->Address, address, family == 4 ? 4 : 16);
        allowed->Cidr = (BYTE)prefix;
    }
    free(AllowedCopy);
    if (!DecodeKey(argv[4], Config.Peer.PublicKey) || !ParseEndpoint(argv[5], &Config.Peer.Endpoint) ||
        Count < 1) {
        fprintf(stderr, "bad key, endpoint or allowed IPs on the command line\n");
        return 2;
    }
    Config.Peer.AllowedIPsCount = (DWORD)Count;
    if (!LoadWireGuard(argv[1]))
        return 1;
    OnQuitRequests();

    WireGuardSetLogger(ConsoleLogger);
    Name = Utf16FromAscii(argv[2]);
    TunnelType = Utf16FromAscii("Example");
    if (!Name || !TunnelType)
        return 1;
    /* A fixed GUID, as the original example uses. */
    static const GUID ExampleGuid = {0xdeadc001, 0xbeef, 0xbabe, {0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef}};
    Adapter = WireGuardCreateAdapter(Name, TunnelType, &ExampleGuid);
    if (!Adapter) {
        LogError("Failed to create adapter", LastError());
        return 1;
    }
    if (!WireGuardSetAdapterLogging(Adapter, WIREGUARD_ADAPTER_LOG_ON))
        LogError("Failed to enable adapter logging", LastError()); /* only logged */
    Version = WireGuardGetRunningDriverVersion();

    WireGuardGetAdapterLUID(Adapter, &Luid);
    if (!SetAddresses(Adapter, &Luid, argv[6], &Userspace)) {
        LogError("Failed to set the tunnel addresses", LastError());
        goto cleanup;
    }
    if (Userspace)
        snprintf(ifname, sizeof ifname, "-"); /* no system interface behind it */
    else if (!InterfaceName(&Luid, ifname, sizeof ifname)) {
        LogError("Failed to find the interface of the LUID", (DWORD)errno);
        goto cleanup;
    }
    if (!WireGuardSetConfiguration(Adapter, &Config.Interface,
                                   (DWORD)(sizeof Config.Interface + sizeof Config.Peer +
                                           (size_t)Count * sizeof Config.AllowedIps[0]))) {
        LogError("Failed to set configuration", LastError());
        goto cleanup;
    }
    if (!WireGuardSetAdapterState(Adapter, WIREGUARD_ADAPTER_STATE_UP)) {
        LogError("Failed to set adapter up", LastError());
        goto cleanup;
    }
    printf("ready %s %u v%u.%u\n", ifname, (unsigned)Luid.Info.NetLuidIndex,
           (unsigned)((Version >> 16) & 0xff), (unsigned)(Version & 0xff));
    fflush(stdout);

    /* Once a second: read the configuration back and print the peer's counters. */
    while (!Quit && seconds != 0) {
        ReadBack = ReadConfiguration(Adapter, &Bytes);
        if (!ReadBack)
            goto cleanup;
        if (ReadBack->PeersCount == 0) {
            fprintf(stderr, "the adapter lost its peer\n");
            free(ReadBack);
            goto cleanup;
        }
        PrintPeers(ReadBack, 0);
        free(ReadBack);
        SleepOneSecond();
        if (seconds > 0)
            --seconds;
    }

    ReadBack = ReadConfiguration(Adapter, &Bytes);
    if (!ReadBack)
        goto cleanup;
    PrintPeers(ReadBack, 1);
    free(ReadBack);
    status = 0;

cleanup:
    /* Closing the handle that created the adapter removes it. */
    WireGuardCloseAdapter(Adapter);
    free(Name);
    free(TunnelType);
    /* The library stays loaded: wgpy's runs an embedded Python interpreter. */
    return status;
}
