/* SPDX-License-Identifier: MIT
 *
 * wgpy.h: wgpy's extensions to the wireguard.h API, for adapters with a
 * userspace inner side (no TUN, no Wintun, no privilege).  Include it after
 * wireguard.h.  A program chooses the mode without any of these calls by
 * setting WGPY_ADAPTER=userspace (and WGPY_ADAPTER_ADDRESSES for the
 * addresses) in the environment; these functions are for programs that want
 * more: set the addresses themselves, or send and receive raw inner IP
 * packets through a session shaped like Wintun's.
 *
 * Like the wireguard.h functions they are exported by wgpy's library and
 * described both as function types (for GetProcAddress/dlsym) and, with
 * WIREGUARD_PROTOTYPES, as prototypes.  Errors: NULL/FALSE plus a Win32 code
 * (GetLastError() on Windows, WireGuardGetLastError() elsewhere):
 * ERROR_NOT_SUPPORTED (50) for an adapter without a userspace side or not
 * owned by this process, ERROR_INVALID_PARAMETER (87) for bad arguments,
 * ERROR_NO_MORE_ITEMS (259) from WgpyReceivePacket when nothing waits,
 * ERROR_HANDLE_EOF (38) once the session or the adapter ended,
 * ERROR_ALREADY_INITIALIZED (1247) for a second session on one adapter.
 */

#ifndef WGPY_EXTENSIONS_H
#define WGPY_EXTENSIONS_H

#include "wireguard.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A packet session of a userspace adapter. */
typedef struct _WGPY_SESSION *WGPY_SESSION_HANDLE;

/* What WgpyGetReadWaitEvent returns: an event handle on Windows (wait with
 * WaitForSingleObject), a descriptor elsewhere (poll for POLLIN). */
#if defined(_WIN32)
typedef HANDLE WGPY_WAIT_HANDLE;
#else
typedef int WGPY_WAIT_HANDLE;
#endif

/* WgpyStartSession flag: every packet from the tunnel goes to the session;
 * without it the built-in host keeps the echo requests to the adapter's
 * addresses and what its sockets receive, and the session gets the rest. */
#define WGPY_SESSION_TAKE_OVER 0x1u
/* Largest packet WgpyReceivePacket returns or WgpyAllocateSendPacket takes. */
#define WGPY_MAX_PACKET_SIZE 0xFFFFu

/* Set a userspace adapter's tunnel addresses: comma-separated CIDRs,
 * L"10.0.0.2/24,fd00::2/64" (L"" removes them).  Nothing changes on error. */
typedef BOOL(WINAPI WGPY_SET_ADAPTER_ADDRESSES_FUNC)(WIREGUARD_ADAPTER_HANDLE Adapter,
                                                      LPCWSTR Addresses);

/* Start the adapter's packet session, holding up to Capacity packets
 * (1..1048576) from the tunnel; Flags 0 or WGPY_SESSION_TAKE_OVER. */
typedef WGPY_SESSION_HANDLE(WINAPI WGPY_START_SESSION_FUNC)(WIREGUARD_ADAPTER_HANDLE Adapter,
                                                            DWORD Capacity, DWORD Flags);

/* End a session (NULL is ignored). */
typedef VOID(WINAPI WGPY_END_SESSION_FUNC)(WGPY_SESSION_HANDLE Session);

/* What to wait on while no packet waits (see WGPY_WAIT_HANDLE). */
typedef WGPY_WAIT_HANDLE(WINAPI WGPY_GET_READ_WAIT_EVENT_FUNC)(WGPY_SESSION_HANDLE Session);

/* The next packet from the tunnel and its size; release it with
 * WgpyReleaseReceivePacket.  NULL with ERROR_NO_MORE_ITEMS when none waits. */
typedef BYTE *(WINAPI WGPY_RECEIVE_PACKET_FUNC)(WGPY_SESSION_HANDLE Session, DWORD *PacketSize);

typedef VOID(WINAPI WGPY_RELEASE_RECEIVE_PACKET_FUNC)(WGPY_SESSION_HANDLE Session,
                                                       const BYTE *Packet);

/* A buffer for one packet of PacketSize bytes (1..WGPY_MAX_PACKET_SIZE); fill
 * it with an IPv4/IPv6 packet and pass it to WgpySendPacket, which routes it
 * into the tunnel by its destination (and releases the buffer). */
typedef BYTE *(WINAPI WGPY_ALLOCATE_SEND_PACKET_FUNC)(WGPY_SESSION_HANDLE Session,
                                                     DWORD PacketSize);

typedef VOID(WINAPI WGPY_SEND_PACKET_FUNC)(WGPY_SESSION_HANDLE Session, const BYTE *Packet);

#ifdef WIREGUARD_PROTOTYPES
WGPY_SET_ADAPTER_ADDRESSES_FUNC WgpySetAdapterAddresses;
WGPY_START_SESSION_FUNC WgpyStartSession;
WGPY_END_SESSION_FUNC WgpyEndSession;
WGPY_GET_READ_WAIT_EVENT_FUNC WgpyGetReadWaitEvent;
WGPY_RECEIVE_PACKET_FUNC WgpyReceivePacket;
WGPY_RELEASE_RECEIVE_PACKET_FUNC WgpyReleaseReceivePacket;
WGPY_ALLOCATE_SEND_PACKET_FUNC WgpyAllocateSendPacket;
WGPY_SEND_PACKET_FUNC WgpySendPacket;
#endif

#ifdef __cplusplus
}
#endif

#endif /* WGPY_EXTENSIONS_H */
