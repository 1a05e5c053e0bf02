/*
 * example.c - drive a WireGuard adapter through the wireguard.h API.
 *
 * wgpy's own example, following the flow the WireGuardNT documentation gives for
 * wireguard.dll: load the library at run time and resolve all twelve functions,
 * install a logger, create an adapter, configure one peer and its allowed IPs,
 * bring the adapter up, then read the configuration back (in the ERROR_MORE_DATA
 * loop) once a second and print the peer's counters until interrupted.  On exit it
 * prints the final statistics and closes the adapter, which removes it.
 *
 * Built for Linux against wgpy's library (python -m wgpy.nt --library-path):
 *
 *     cc -std=c11 -I"$(python -m wgpy.nt --include-path)" example.c -ldl -o example
 *     ./example LIBRARY NAME PRIVATE_KEY PEER_PUBLIC_KEY PEER_ENDPOINT \
 *               TUNNEL_ADDRESS/PREFIX ALLOWED_IP/CIDR [SECONDS]
 *
 * Keys are base64 (as wg prints them); PRIVATE_KEY "generate" makes a fresh
 * X25519 key pair with the system's crypto library (OpenSSL's libcrypto, loaded
 * at run time, as a Windows program would use BCrypt) and prints its public key
 * before anything else.  PEER_ENDPOINT is a.b.c.d:port or
 * [v6]:port.  The tunnel address is set on the interface with ioctl, standing in
 * for the IP Helper calls a Windows program makes with the adapter's LUID.  The
 * program stops after SECONDS (default: run until SIGINT/SIGTERM).
 *
 * Output on stdout, one record per line:
 *     public_key <base64>           (only with PRIVATE_KEY "generate")
 *     ready <ifname> <ifindex> v<major>.<minor>
 *     stats rx_bytes=<n> tx_bytes=<n> last_handshake=<unix seconds, 0 = never>
 *     peer <public key> endpoint=<addr> rx_bytes=<n> tx_bytes=<n> last_handshake=<s>
 *     allowed_ip <address>/<cidr>
 * Log lines go to stderr as "YYYY-MM-DD HH:MM:SS.mmmm [+] message".
 */

#define _DEFAULT_SOURCE
#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <net/if.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* After the system headers: AF_INET6 keeps the host's value, and the ABI's
 * families are WIREGUARD_AF_INET / WIREGUARD_AF_INET6 (2 / 23). */
#include "wireguard.h"

/* FILETIME of the Unix epoch: 100 ns ticks between 1601-01-01 and 1970-01-01. */
#define FILETIME_UNIX_EPOCH 116444736000000000ULL
#define ERROR_MORE_DATA 234u

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
/* wgpy's stand-in for GetLastError(); optional, so the loader also accepts a
 * library that lacks it. */
static WIREGUARD_GET_LAST_ERROR_FUNC *GetLastErrorFunc;

static DWORD LastError(void) { return GetLastErrorFunc ? GetLastErrorFunc() : (DWORD)errno; }

/* Resolve every function; any one missing is an error, as in the original. */
static void *LoadWireGuard(const char *path)
{
    void *library = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!library) {
        fprintf(stderr, "cannot load %s: %s\n", path, dlerror());
        return NULL;
    }
#define RESOLVE(Name)                                                                   \
    do {                                                                                \
        *(void **)&Name = dlsym(library, #Name);                                        \
        if (!Name) {                                                                    \
            fprintf(stderr, "%s does not export %s\n", path, #Name);                    \
            dlclose(library);                                                           \
            return NULL;                                                                \
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
    *(void **)&GetLastErrorFunc = dlsym(library, "WireGuardGetLastError");
    return library;
}

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

/* "a.b.c.d:port" or "[v6]:port" into a SOCKADDR_INET with the ABI's families. */
static int ParseEndpoint(const char *text, SOCKADDR_INET *endpoint)
{
    char host[INET6_ADDRSTRLEN + 2];
    const char *colon = strrchr(text, ':');
    char *end;
    unsigned long port;
    size_t n;
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
        if (inet_pton(AF_INET6, host + 1, &endpoint->Ipv6.sin6_addr) != 1)
            return 0;
        endpoint->Ipv6.sin6_family = WIREGUARD_AF_INET6;
        endpoint->Ipv6.sin6_port = htons((uint16_t)port);
        return 1;
    }
    if (inet_pton(AF_INET, host, &endpoint->Ipv4.sin_addr) != 1)
        return 0;
    endpoint->Ipv4.sin_family = WIREGUARD_AF_INET;
    endpoint->Ipv4.sin_port = htons((uint16_t)port);
    return 1;
}

/* "address/cidr" into a WIREGUARD_ALLOWED_IP. */
static int ParseAllowedIp(const char *text, WIREGUARD_ALLOWED_IP *allowed)
{
    char address[INET6_ADDRSTRLEN];
    const char *slash = strchr(text, '/');
    char *end;
    unsigned long cidr;
    if (!slash || (size_t)(slash - text) >= sizeof address)
        return 0;
    memcpy(address, text, (size_t)(slash - text));
    address[slash - text] = '\0';
    cidr = strtoul(slash + 1, &end, 10);
    if (*end)
        return 0;
    memset(allowed, 0, sizeof *allowed);
    if (inet_pton(AF_INET, address, &allowed->Address.V4) == 1 && cidr <= 32) {
        allowed->AddressFamily = WIREGUARD_AF_INET;
    } else if (inet_pton(AF_INET6, address, &allowed->Address.V6) == 1 && cidr <= 128) {
        allowed->AddressFamily = WIREGUARD_AF_INET6;
    } else {
        return 0;
    }
    allowed->Cidr = (BYTE)cidr;
    return 1;
}

static uint64_t UnixSeconds(DWORD64 filetime)
{
    return filetime ? (filetime - FILETIME_UNIX_EPOCH) / 10000000ULL : 0;
}

/* ---- logging ------------------------------------------------------------------------ */

static void CALLBACK ConsoleLogger(WIREGUARD_LOGGER_LEVEL Level, DWORD64 Timestamp, LPCWSTR Message)
{
    /* FILETIME to UTC calendar time, milliseconds printed with four digits. */
    uint64_t ticks = Timestamp - FILETIME_UNIX_EPOCH;
    time_t seconds = (time_t)(ticks / 10000000ULL);
    unsigned millis = (unsigned)((ticks % 10000000ULL) / 10000ULL);
    struct tm tm;
    char when[32];
    char mark = Level == WIREGUARD_LOG_ERR ? '!' : Level == WIREGUARD_LOG_WARN ? '-' : '+';
    gmtime_r(&seconds, &tm);
    strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", &tm);
    fprintf(stderr, "%s.%04u [%c] ", when, millis, mark);
    PrintUtf16(stderr, Message);
    fputc('\n', stderr);
}

static void LogError(const char *prefix, DWORD error)
{
    fprintf(stderr, "%s: error %u (0x%08X)\n", prefix, (unsigned)error, (unsigned)error);
}

/* ---- the adapter's address (IP Helper on Windows, ioctl here) -------------------------- */

static int SetTunnelAddress(const char *ifname, const char *cidr_text)
{
    char address[INET_ADDRSTRLEN];
    const char *slash = strchr(cidr_text, '/');
    unsigned long prefix;
    struct ifreq ifr;
    struct sockaddr_in *sin = (struct sockaddr_in *)&ifr.ifr_addr;
    int fd, ok = 0;
    if (!slash || (size_t)(slash - cidr_text) >= sizeof address)
        return 0;
    memcpy(address, cidr_text, (size_t)(slash - cidr_text));
    address[slash - cidr_text] = '\0';
    prefix = strtoul(slash + 1, NULL, 10);
    if (prefix > 32)
        return 0;
    fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0)
        return 0;
    memset(&ifr, 0, sizeof ifr);
    strncpy(ifr.ifr_name, ifname, IFNAMSIZ - 1);
    sin->sin_family = AF_INET;
    if (inet_pton(AF_INET, address, &sin->sin_addr) != 1 || ioctl(fd, SIOCSIFADDR, &ifr) < 0)
        goto out;
    sin->sin_addr.s_addr = htonl(prefix ? 0xFFFFFFFFu << (32 - prefix) : 0);
    if (ioctl(fd, SIOCSIFNETMASK, &ifr) < 0)
        goto out;
    ok = 1;
out:
    close(fd);
    return ok;
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
        if (LastError() != ERROR_MORE_DATA) {
            LogError("Failed to get configuration", LastError());
            free(config);
            return NULL;
        }
    }
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
        char key[45], where[INET6_ADDRSTRLEN + 8] = "none";
        char text[INET6_ADDRSTRLEN];
        EncodeKey(peer->PublicKey, key);
        if (peer->Flags & WIREGUARD_PEER_HAS_ENDPOINT) {
            if (peer->Endpoint.si_family == WIREGUARD_AF_INET) {
                inet_ntop(AF_INET, &peer->Endpoint.Ipv4.sin_addr, text, sizeof text);
                snprintf(where, sizeof where, "%s:%u", text, ntohs(peer->Endpoint.Ipv4.sin_port));
            } else if (peer->Endpoint.si_family == WIREGUARD_AF_INET6) {
                inet_ntop(AF_INET6, &peer->Endpoint.Ipv6.sin6_addr, text, sizeof text);
                snprintf(where, sizeof where, "[%s]:%u", text, ntohs(peer->Endpoint.Ipv6.sin6_port));
            }
        }
        printf("peer %s endpoint=%s rx_bytes=%llu tx_bytes=%llu last_handshake=%llu\n", key, where,
               (unsigned long long)peer->RxBytes, (unsigned long long)peer->TxBytes,
               (unsigned long long)UnixSeconds(peer->LastHandshake));
        for (DWORD a = 0; a < peer->AllowedIPsCount; ++a) {
            int family = allowed[a].AddressFamily == WIREGUARD_AF_INET6 ? AF_INET6 : AF_INET;
            inet_ntop(family, &allowed[a].Address, text, sizeof text);
            printf("allowed_ip %s/%u\n", text, allowed[a].Cidr);
        }
    }
    fflush(stdout);
}

/* ---- main ------------------------------------------------------------------------------ */

static volatile sig_atomic_t Quit;

/* libcrypto's EVP calls used to make an X25519 key pair (OpenSSL 1.1.1 and 3). */
#define EVP_PKEY_X25519_ID 1034 /* NID_X25519 */
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

static void OnSignal(int signum)
{
    (void)signum;
    Quit = 1;
}

int main(int argc, char **argv)
{
    struct
    {
        WIREGUARD_INTERFACE Interface;
        WIREGUARD_PEER Peer;
        WIREGUARD_ALLOWED_IP AllowedIp;
    } Config = {
        .Interface = {.Flags = WIREGUARD_INTERFACE_HAS_PRIVATE_KEY, .PeersCount = 1},
        .Peer = {.Flags = WIREGUARD_PEER_HAS_PUBLIC_KEY | WIREGUARD_PEER_HAS_ENDPOINT,
                 .AllowedIPsCount = 1},
    };
    _Static_assert(sizeof Config == 240, "one peer with one allowed IP is 240 bytes");
    WIREGUARD_ADAPTER_HANDLE Adapter;
    WCHAR *Name, *TunnelType;
    NET_LUID Luid;
    char ifname[IF_NAMESIZE];
    DWORD Version, Bytes;
    WIREGUARD_INTERFACE *ReadBack;
    long seconds = argc > 8 ? strtol(argv[8], NULL, 10) : -1;
    int status = 1;

    if (argc < 8) {
        fprintf(stderr,
                "usage: %s LIBRARY NAME PRIVATE_KEY|generate PEER_PUBLIC_KEY PEER_ENDPOINT "
                "TUNNEL_ADDRESS/PREFIX ALLOWED_IP/CIDR [SECONDS]\n",
                argv[0]);
        return 2;
    }
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
    if (!DecodeKey(argv[4], Config.Peer.PublicKey) ||
        !ParseEndpoint(argv[5], &Config.Peer.Endpoint) || !ParseAllowedIp(argv[7], &Config.AllowedIp)) {
        fprintf(stderr, "bad key, endpoint or allowed IP on the command line\n");
        return 2;
    }
    if (!LoadWireGuard(argv[1]))
        return 1;

    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = OnSignal;
    sigaction(SIGINT, &action, NULL);
    sigaction(SIGTERM, &action, NULL);

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
    if (!if_indextoname((unsigned)Luid.Info.NetLuidIndex, ifname)) {
        LogError("Failed to find the interface of the LUID", (DWORD)errno);
        goto cleanup;
    }
    if (!SetTunnelAddress(ifname, argv[6])) {
        LogError("Failed to set the tunnel address", (DWORD)errno);
        goto cleanup;
    }
    if (!WireGuardSetConfiguration(Adapter, &Config.Interface, sizeof Config)) {
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
        struct timespec second = {1, 0};
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
        while (nanosleep(&second, &second) < 0 && errno == EINTR && !Quit)
            ;
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
    /* The library stays loaded: it runs an embedded Python interpreter. */
    return status;
}
