/*
 * open_config.c - a second process: open an adapter by name and read its
 * configuration with the ERROR_MORE_DATA loop (tests/test_nt_userspace.py).
 *
 *     open_config LIBRARY NAME
 *
 * Prints "peer rx_bytes=N tx_bytes=N last_handshake=FILETIME" per peer and
 * "peers N", or "error FUNCTION CODE" and exits 1.
 */
#define _DEFAULT_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wireguard.h"

#define ERROR_MORE_DATA 234u

int main(int argc, char **argv)
{
    WIREGUARD_OPEN_ADAPTER_FUNC *Open;
    WIREGUARD_CLOSE_ADAPTER_FUNC *Close;
    WIREGUARD_GET_CONFIGURATION_FUNC *Get;
    WIREGUARD_GET_LAST_ERROR_FUNC *LastError;
    WCHAR name[128];
    void *lib;
    if (argc != 3 || strlen(argv[2]) >= 128)
        return 2;
    lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        printf("error dlopen %s\n", dlerror());
        return 1;
    }
    *(void **)&Open = dlsym(lib, "WireGuardOpenAdapter");
    *(void **)&Close = dlsym(lib, "WireGuardCloseAdapter");
    *(void **)&Get = dlsym(lib, "WireGuardGetConfiguration");
    *(void **)&LastError = dlsym(lib, "WireGuardGetLastError");
    if (!Open || !Close || !Get || !LastError)
        return 1;
    for (size_t i = 0; i <= strlen(argv[2]); ++i)
        name[i] = (WCHAR)(unsigned char)argv[2][i];
    WIREGUARD_ADAPTER_HANDLE adapter = Open(name);
    if (!adapter) {
        printf("error WireGuardOpenAdapter %u\n", (unsigned)LastError());
        return 1;
    }
    DWORD size = 1; /* too small on purpose: the loop must grow it */
    WIREGUARD_INTERFACE *config = NULL;
    int rounds = 0;
    for (;;) {
        config = realloc(config, size);
        if (Get(adapter, config, &size))
            break;
        if (LastError() != ERROR_MORE_DATA || ++rounds > 8) {
            printf("error WireGuardGetConfiguration %u\n", (unsigned)LastError());
            return 1;
        }
    }
    const BYTE *cursor = (const BYTE *)(config + 1);
    for (DWORD p = 0; p < config->PeersCount; ++p) {
        const WIREGUARD_PEER *peer = (const WIREGUARD_PEER *)cursor;
        printf("peer rx_bytes=%llu tx_bytes=%llu last_handshake=%llu\n",
               (unsigned long long)peer->RxBytes, (unsigned long long)peer->TxBytes,
               (unsigned long long)peer->LastHandshake);
        cursor = (const BYTE *)(peer + 1) + peer->AllowedIPsCount * sizeof(WIREGUARD_ALLOWED_IP);
    }
    printf("peers %u rounds %d\n", (unsigned)config->PeersCount, rounds);
    free(config);
    Close(adapter);
    return 0;
}
