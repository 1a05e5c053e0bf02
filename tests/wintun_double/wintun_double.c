/* SPDX-License-Identifier: MIT
 *
 * A Linux test double for wintun.dll (API 0.14), written for wgpy's tests.
 *
 * It exports the 14 functions of wintun.h with the same signatures and
 * implements them over /dev/net/tun, so the Python ctypes shim
 * (wgpy/tun/wintun.py) can be exercised for real on Linux:
 *
 *   - WintunCreateAdapter opens a TUN interface named after the UTF-16 name
 *     (converted to UTF-8; Linux limits names to 15 bytes).
 *   - WintunStartSession allocates two rings of the requested capacity with
 *     the Wintun record format (32-bit size, data, padded to 4 bytes).
 *   - WintunReceivePacket reads the TUN fd into the receive ring and hands
 *     out a pointer into it; WintunReleaseReceivePacket frees ring space in
 *     order, like the real DLL.
 *   - WintunAllocateSendPacket reserves space in the send ring;
 *     WintunSendPacket commits it, and committed packets are written to the
 *     TUN fd in allocation order (a held allocation blocks later ones).
 *   - WintunGetReadWaitEvent returns an epoll fd (cast to HANDLE) that is
 *     readable when the TUN has data or the event was signalled.
 *
 * Errors follow Wintun: NULL/FALSE/0 plus a Win32 error code in a
 * thread-local "last error", read with WintunTestGetLastError().  Arguments
 * are checked (unknown handles, bad ring capacity, oversized packets), which
 * the real DLL partly leaves to the driver or does not check at all.
 *
 * Known differences from the real DLL: creating an adapter whose name exists
 * fails with ERROR_ALREADY_EXISTS instead of renaming the old one; OpenAdapter
 * only sees adapters created by this process; closing the creating handle
 * while a session runs makes the session report ERROR_HANDLE_EOF, but the
 * Linux interface disappears only when the session ends.
 *
 * Extra exports for tests: WintunTestGetLastError, WintunTestSetEvent,
 * WintunTestSetDriverLoaded, WintunTestCorruptRing, WintunTestGetStats.
 */

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define EXPORT __attribute__((visibility("default")))

typedef uint8_t BYTE;
typedef uint16_t WORD;
typedef uint32_t DWORD;
typedef uint64_t DWORD64;
typedef int BOOL;
typedef uint16_t WCHAR;
typedef void *HANDLE;

typedef struct
{
    DWORD Data1;
    WORD Data2;
    WORD Data3;
    BYTE Data4[8];
} GUID;

typedef union
{
    DWORD64 Value;
} NET_LUID;

/* Win32 error codes used below. */
#define ERROR_SUCCESS 0u
#define ERROR_FILE_NOT_FOUND 2u
#define ERROR_ACCESS_DENIED 5u
#define ERROR_INVALID_HANDLE 6u
#define ERROR_NOT_ENOUGH_MEMORY 8u
#define ERROR_INVALID_DATA 13u
#define ERROR_GEN_FAILURE 31u
#define ERROR_HANDLE_EOF 38u
#define ERROR_INVALID_PARAMETER 87u
#define ERROR_BUFFER_OVERFLOW 111u
#define ERROR_INVALID_NAME 123u
#define ERROR_ALREADY_EXISTS 183u
#define ERROR_NO_MORE_ITEMS 259u
#define ERROR_NOT_FOUND 1168u
#define ERROR_ALREADY_INITIALIZED 1247u
#define ERROR_DEVICE_NOT_AVAILABLE 4319u
#define ERROR_INF_IN_USE_BY_DEVICES 0xE000023Du

#define WINTUN_MIN_RING_CAPACITY 0x20000u
#define WINTUN_MAX_RING_CAPACITY 0x4000000u
#define WINTUN_MAX_IP_PACKET_SIZE 0xFFFFu
#define MAX_ADAPTER_NAME 128
#define IF_TYPE_PROP_VIRTUAL 53ull
#define DRIVER_VERSION 0x0000000Eu /* 0.14 */

/* Ring record: a 32-bit size word then the data, padded to 4 bytes. */
#define RECORD_ALIGN(n) (((DWORD)(n) + 3u) & ~3u)
#define RECORD_SIZE(n) RECORD_ALIGN(4u + (DWORD)(n))
#define RECORD_FLAG 0x80000000u /* receive: released; send: not yet committed */
/* Slack after the ring so that a record never wraps. */
#define RING_SLACK RECORD_SIZE(WINTUN_MAX_IP_PACKET_SIZE)

enum
{
    LOG_INFO = 0,
    LOG_WARN = 1,
    LOG_ERR = 2
};

typedef void (*WINTUN_LOGGER_CALLBACK)(int Level, DWORD64 Timestamp, const WCHAR *Message);

/* ------------------------------------------------------------------------ */
/* Last error and logging                                                   */
/* ------------------------------------------------------------------------ */

static __thread DWORD last_error;
static WINTUN_LOGGER_CALLBACK logger;
static int driver_loaded = 1;

EXPORT DWORD WintunTestGetLastError(void)
{
    return last_error;
}

static DWORD64 filetime_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (DWORD64)ts.tv_sec * 10000000ull + (DWORD64)ts.tv_nsec / 100u + 116444736000000000ull;
}

/* UTF-8 to UTF-16; invalid bytes become U+FFFD.  Returns code units written. */
static size_t utf8_to_utf16(const char *in, WCHAR *out, size_t out_len)
{
    const unsigned char *s = (const unsigned char *)in;
    size_t n = 0;
    while (*s && n + 2 < out_len)
    {
        uint32_t cp;
        int extra;
        if (*s < 0x80)
            cp = *s, extra = 0;
        else if ((*s & 0xE0) == 0xC0)
            cp = *s & 0x1F, extra = 1;
        else if ((*s & 0xF0) == 0xE0)
            cp = *s & 0x0F, extra = 2;
        else if ((*s & 0xF8) == 0xF0)
            cp = *s & 0x07, extra = 3;
        else
            cp = 0xFFFD, extra = 0;
        ++s;
        for (; extra > 0; --extra, ++s)
        {
            if ((*s & 0xC0) != 0x80)
            {
                cp = 0xFFFD;
                break;
            }
            cp = (cp << 6) | (*s & 0x3F);
        }
        if (cp >= 0x10000)
        {
            cp -= 0x10000;
            out[n++] = (WCHAR)(0xD800 + (cp >> 10));
            out[n++] = (WCHAR)(0xDC00 + (cp & 0x3FF));
        }
        else
            out[n++] = (WCHAR)cp;
    }
    out[n] = 0;
    return n;
}

static void log_line(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void log_line(int level, const char *fmt, ...)
{
    WINTUN_LOGGER_CALLBACK cb = __atomic_load_n(&logger, __ATOMIC_ACQUIRE);
    if (!cb)
        return;
    char text[512];
    WCHAR wide[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    utf8_to_utf16(text, wide, sizeof(wide) / sizeof(wide[0]));
    cb(level, filetime_now(), wide);
}

/* Record a failure: set the last error and log "<what>: Code 0x%08X". */
static void fail(DWORD code, const char *what)
{
    log_line(LOG_ERR, "%s: Code 0x%08X", what, code);
    last_error = code;
}

static DWORD errno_to_win32(int err)
{
    switch (err)
    {
    case EACCES:
    case EPERM:
        return ERROR_ACCESS_DENIED;
    case ENOENT:
        return ERROR_FILE_NOT_FOUND;
    case ENOMEM:
        return ERROR_NOT_ENOUGH_MEMORY;
    case EBUSY:
    case EEXIST:
        return ERROR_ALREADY_EXISTS;
    case EBADFD:
        return ERROR_HANDLE_EOF;
    default:
        return ERROR_GEN_FAILURE;
    }
}

EXPORT void WintunSetLogger(WINTUN_LOGGER_CALLBACK NewLogger)
{
    __atomic_store_n(&logger, NewLogger, __ATOMIC_RELEASE);
}

/* ------------------------------------------------------------------------ */
/* Objects                                                                  */
/* ------------------------------------------------------------------------ */

struct session;

struct adapter
{
    struct adapter *next;
    unsigned refs;
    int tun_fd;             /* -1 once removed */
    int removed;            /* the creating handle was closed */
    char name[IFNAMSIZ];    /* UTF-8 */
    WCHAR wname[MAX_ADAPTER_NAME];
    DWORD ifindex;
    struct session *session;
};

struct handle
{
    struct handle *next;
    struct adapter *adapter;
    int created;
};

struct ring
{
    BYTE *data;     /* capacity + RING_SLACK bytes */
    DWORD head;     /* oldest record still in use */
    DWORD tail;     /* where the next record goes */
    DWORD records;  /* records between head and tail */
};

struct session
{
    struct session *next;
    struct adapter *adapter;
    DWORD capacity;
    int fd;         /* dup of the TUN fd */
    int event_fd;   /* eventfd: manual "SetEvent" */
    int epoll_fd;   /* the read-wait "event" */
    int eof;
    int corrupt;
    pthread_mutex_t rx_lock, tx_lock;
    struct ring rx; /* TUN -> application (Wintun's "send ring") */
    struct ring tx; /* application -> TUN (Wintun's "receive ring") */
    DWORD64 rx_dropped, tx_errors;
    BYTE scratch[WINTUN_MAX_IP_PACKET_SIZE + 1];
};

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static struct adapter *adapters;
static struct handle *handles;
static struct session *sessions;

/* Caller holds registry_lock. */
static struct handle *find_handle(const void *h)
{
    for (struct handle *p = handles; p; p = p->next)
        if (p == h)
            return p;
    return NULL;
}

static struct session *find_session(const void *s)
{
    for (struct session *p = sessions; p; p = p->next)
        if (p == s)
            return p;
    return NULL;
}

/* Checks the session pointer under the lock.  As with the real DLL, the
 * caller must not end a session while another call on it is running. */
static struct session *lookup_session(const void *s)
{
    pthread_mutex_lock(&registry_lock);
    struct session *found = find_session(s);
    pthread_mutex_unlock(&registry_lock);
    return found;
}

static void adapter_unref(struct adapter *a)
{
    if (--a->refs)
        return;
    if (a->tun_fd >= 0)
        close(a->tun_fd);
    free(a);
}

static void adapter_unlink(struct adapter *a)
{
    for (struct adapter **pp = &adapters; *pp; pp = &(*pp)->next)
        if (*pp == a)
        {
            *pp = a->next;
            return;
        }
}

static size_t wlen(const WCHAR *s, size_t limit)
{
    size_t n = 0;
    while (n < limit && s[n])
        ++n;
    return n;
}

static WCHAR wfold(WCHAR c)
{
    return (c >= 'A' && c <= 'Z') ? (WCHAR)(c - 'A' + 'a') : c;
}

static int wname_equal(const WCHAR *a, const WCHAR *b)
{
    for (;; ++a, ++b)
    {
        if (wfold(*a) != wfold(*b))
            return 0;
        if (!*a)
            return 1;
    }
}

/* UTF-16 to UTF-8 into out[out_len]; 0 on success, -1 on a bad surrogate
 * or if it does not fit. */
static int utf16_to_utf8(const WCHAR *in, size_t len, char *out, size_t out_len)
{
    size_t n = 0;
    for (size_t i = 0; i < len; ++i)
    {
        uint32_t cp = in[i];
        if (cp >= 0xD800 && cp < 0xDC00)
        {
            if (i + 1 >= len || in[i + 1] < 0xDC00 || in[i + 1] >= 0xE000)
                return -1;
            cp = 0x10000 + ((cp - 0xD800) << 10) + (in[++i] - 0xDC00u);
        }
        else if (cp >= 0xDC00 && cp < 0xE000)
            return -1;
        BYTE buf[4];
        size_t k;
        if (cp < 0x80)
            buf[0] = (BYTE)cp, k = 1;
        else if (cp < 0x800)
            buf[0] = (BYTE)(0xC0 | (cp >> 6)), buf[1] = (BYTE)(0x80 | (cp & 0x3F)), k = 2;
        else if (cp < 0x10000)
            buf[0] = (BYTE)(0xE0 | (cp >> 12)), buf[1] = (BYTE)(0x80 | ((cp >> 6) & 0x3F)),
            buf[2] = (BYTE)(0x80 | (cp & 0x3F)), k = 3;
        else
            buf[0] = (BYTE)(0xF0 | (cp >> 18)), buf[1] = (BYTE)(0x80 | ((cp >> 12) & 0x3F)),
            buf[2] = (BYTE)(0x80 | ((cp >> 6) & 0x3F)), buf[3] = (BYTE)(0x80 | (cp & 0x3F)), k = 4;
        if (n + k >= out_len)
            return -1;
        memcpy(out + n, buf, k);
        n += k;
    }
    out[n] = 0;
    return 0;
}

static int interface_index(const char *name, DWORD *index)
{
    struct ifreq ifr;
    int sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (sock < 0)
        return -1;
    memset(&ifr, 0, sizeof(ifr));
    memcpy(ifr.ifr_name, name, strnlen(name, IFNAMSIZ - 1));
    int rc = ioctl(sock, SIOCGIFINDEX, &ifr);
    int err = errno;
    close(sock);
    errno = err;
    if (rc < 0)
        return -1;
    *index = (DWORD)ifr.ifr_ifindex;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Adapters                                                                 */
/* ------------------------------------------------------------------------ */

EXPORT HANDLE WintunCreateAdapter(const WCHAR *Name, const WCHAR *TunnelType, const GUID *RequestedGUID)
{
    (void)RequestedGUID; /* Linux interfaces have no GUID */
    if (!Name || !TunnelType)
    {
        fail(ERROR_INVALID_PARAMETER, "Adapter name or tunnel type is NULL");
        return NULL;
    }
    size_t name_len = wlen(Name, MAX_ADAPTER_NAME);
    /* The description "<TunnelType> Tunnel" must fit in MAX_ADAPTER_NAME too. */
    if (name_len >= MAX_ADAPTER_NAME || wlen(TunnelType, MAX_ADAPTER_NAME) + 7 >= MAX_ADAPTER_NAME)
    {
        fail(ERROR_BUFFER_OVERFLOW, "Adapter name or tunnel type too long");
        return NULL;
    }
    struct adapter *a = calloc(1, sizeof(*a));
    struct handle *h = calloc(1, sizeof(*h));
    if (!a || !h)
    {
        free(a);
        free(h);
        fail(ERROR_NOT_ENOUGH_MEMORY, "Failed to allocate adapter");
        return NULL;
    }
    a->tun_fd = -1;
    memcpy(a->wname, Name, name_len * sizeof(WCHAR));
    if (name_len == 0 || utf16_to_utf8(Name, name_len, a->name, sizeof(a->name)) < 0)
    {
        free(a);
        free(h);
        fail(ERROR_INVALID_NAME, "Adapter name is empty, malformed or longer than 15 UTF-8 bytes");
        return NULL;
    }

    pthread_mutex_lock(&registry_lock);
    for (struct adapter *p = adapters; p; p = p->next)
        if (wname_equal(p->wname, a->wname))
        {
            pthread_mutex_unlock(&registry_lock);
            free(a);
            free(h);
            fail(ERROR_ALREADY_EXISTS, "Adapter name already in use");
            return NULL;
        }
    DWORD err = ERROR_SUCCESS;
    a->tun_fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC | O_NONBLOCK);
    if (a->tun_fd < 0)
        err = errno_to_win32(errno);
    else
    {
        struct ifreq ifr;
        memset(&ifr, 0, sizeof(ifr));
        memcpy(ifr.ifr_name, a->name, strlen(a->name));
        ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
        if (ioctl(a->tun_fd, TUNSETIFF, &ifr) < 0)
            err = errno == EINVAL ? ERROR_ALREADY_EXISTS : errno_to_win32(errno);
        else if (interface_index(a->name, &a->ifindex) < 0)
            err = errno_to_win32(errno);
    }
    if (err != ERROR_SUCCESS)
    {
        pthread_mutex_unlock(&registry_lock);
        if (a->tun_fd >= 0)
            close(a->tun_fd);
        free(a);
        free(h);
        fail(err, "Failed to create TUN interface");
        return NULL;
    }
    a->refs = 1;
    a->next = adapters;
    adapters = a;
    h->adapter = a;
    h->created = 1;
    h->next = handles;
    handles = h;
    pthread_mutex_unlock(&registry_lock);
    log_line(LOG_INFO, "Created adapter %s (ifindex %u)", a->name, a->ifindex);
    return h;
}

EXPORT HANDLE WintunOpenAdapter(const WCHAR *Name)
{
    if (!Name)
    {
        fail(ERROR_INVALID_PARAMETER, "Adapter name is NULL");
        return NULL;
    }
    struct handle *h = calloc(1, sizeof(*h));
    if (!h)
    {
        fail(ERROR_NOT_ENOUGH_MEMORY, "Failed to allocate handle");
        return NULL;
    }
    pthread_mutex_lock(&registry_lock);
    struct adapter *a = adapters;
    while (a && !wname_equal(a->wname, Name))
        a = a->next;
    if (!a)
    {
        pthread_mutex_unlock(&registry_lock);
        free(h);
        fail(ERROR_NOT_FOUND, "Failed to find matching adapter name");
        return NULL;
    }
    ++a->refs;
    h->adapter = a;
    h->next = handles;
    handles = h;
    pthread_mutex_unlock(&registry_lock);
    return h;
}

static void signal_event(struct session *s)
{
    uint64_t one = 1;
    ssize_t rc = write(s->event_fd, &one, sizeof(one));
    (void)rc; /* a full counter is still signalled */
}

EXPORT void WintunCloseAdapter(HANDLE Adapter)
{
    if (!Adapter)
        return;
    pthread_mutex_lock(&registry_lock);
    struct handle *h = find_handle(Adapter);
    if (!h)
    {
        pthread_mutex_unlock(&registry_lock);
        fail(ERROR_INVALID_HANDLE, "Invalid adapter handle");
        return;
    }
    for (struct handle **pp = &handles; *pp; pp = &(*pp)->next)
        if (*pp == h)
        {
            *pp = h->next;
            break;
        }
    struct adapter *a = h->adapter;
    if (h->created && !a->removed)
    {
        /* The creating handle owns the adapter: remove it.  A running session
         * sees ERROR_HANDLE_EOF from now on. */
        __atomic_store_n(&a->removed, 1, __ATOMIC_RELEASE);
        adapter_unlink(a);
        close(a->tun_fd);
        a->tun_fd = -1;
        if (a->session)
            signal_event(a->session);
    }
    adapter_unref(a);
    pthread_mutex_unlock(&registry_lock);
    free(h);
}

EXPORT BOOL WintunDeleteDriver(void)
{
    pthread_mutex_lock(&registry_lock);
    int busy = adapters != NULL;
    pthread_mutex_unlock(&registry_lock);
    if (busy)
    {
        fail(ERROR_INF_IN_USE_BY_DEVICES, "Driver is in use by adapters");
        return 0;
    }
    return 1;
}

EXPORT void WintunGetAdapterLUID(HANDLE Adapter, NET_LUID *Luid)
{
    pthread_mutex_lock(&registry_lock);
    struct handle *h = find_handle(Adapter);
    if (!h || !Luid)
    {
        pthread_mutex_unlock(&registry_lock);
        fail(h ? ERROR_INVALID_PARAMETER : ERROR_INVALID_HANDLE, "Failed to get adapter LUID");
        return;
    }
    Luid->Value = (IF_TYPE_PROP_VIRTUAL << 48) | ((DWORD64)(h->adapter->ifindex & 0xFFFFFFu) << 24);
    pthread_mutex_unlock(&registry_lock);
}

EXPORT DWORD WintunGetRunningDriverVersion(void)
{
    if (!__atomic_load_n(&driver_loaded, __ATOMIC_ACQUIRE))
    {
        fail(ERROR_FILE_NOT_FOUND, "Wintun driver is not loaded");
        return 0;
    }
    return DRIVER_VERSION;
}

EXPORT void WintunTestSetDriverLoaded(BOOL Loaded)
{
    __atomic_store_n(&driver_loaded, Loaded ? 1 : 0, __ATOMIC_RELEASE);
}

/* ------------------------------------------------------------------------ */
/* Sessions                                                                 */
/* ------------------------------------------------------------------------ */

static void session_free(struct session *s)
{
    if (s->epoll_fd >= 0)
        close(s->epoll_fd);
    if (s->event_fd >= 0)
        close(s->event_fd);
    if (s->fd >= 0)
        close(s->fd);
    free(s->rx.data);
    free(s->tx.data);
    pthread_mutex_destroy(&s->rx_lock);
    pthread_mutex_destroy(&s->tx_lock);
    free(s);
}

EXPORT HANDLE WintunStartSession(HANDLE Adapter, DWORD Capacity)
{
    if (Capacity < WINTUN_MIN_RING_CAPACITY || Capacity > WINTUN_MAX_RING_CAPACITY ||
        (Capacity & (Capacity - 1)) != 0)
    {
        fail(ERROR_INVALID_PARAMETER, "Ring capacity must be a power of two in [0x20000, 0x4000000]");
        return NULL;
    }
    struct session *s = calloc(1, sizeof(*s));
    if (!s)
    {
        fail(ERROR_NOT_ENOUGH_MEMORY, "Failed to allocate session");
        return NULL;
    }
    s->fd = s->event_fd = s->epoll_fd = -1;
    s->capacity = Capacity;
    pthread_mutex_init(&s->rx_lock, NULL);
    pthread_mutex_init(&s->tx_lock, NULL);
    s->rx.data = calloc(1, (size_t)Capacity + RING_SLACK);
    s->tx.data = calloc(1, (size_t)Capacity + RING_SLACK);
    if (!s->rx.data || !s->tx.data)
    {
        session_free(s);
        fail(ERROR_NOT_ENOUGH_MEMORY, "Failed to allocate ring memory");
        return NULL;
    }

    pthread_mutex_lock(&registry_lock);
    struct handle *h = find_handle(Adapter);
    DWORD err = ERROR_SUCCESS;
    if (!h)
        err = ERROR_INVALID_HANDLE;
    else if (h->adapter->removed)
        err = ERROR_DEVICE_NOT_AVAILABLE;
    else if (h->adapter->session)
        err = ERROR_ALREADY_INITIALIZED;
    else
    {
        struct epoll_event ev = {.events = EPOLLIN};
        s->fd = fcntl(h->adapter->tun_fd, F_DUPFD_CLOEXEC, 0);
        s->event_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        s->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
        if (s->fd < 0 || s->event_fd < 0 || s->epoll_fd < 0 ||
            epoll_ctl(s->epoll_fd, EPOLL_CTL_ADD, s->fd, &ev) < 0 ||
            epoll_ctl(s->epoll_fd, EPOLL_CTL_ADD, s->event_fd, &ev) < 0)
            err = errno_to_win32(errno);
    }
    if (err != ERROR_SUCCESS)
    {
        pthread_mutex_unlock(&registry_lock);
        session_free(s);
        fail(err, "Failed to start session");
        return NULL;
    }
    s->adapter = h->adapter;
    ++h->adapter->refs;
    h->adapter->session = s;
    s->next = sessions;
    sessions = s;
    pthread_mutex_unlock(&registry_lock);
    return s;
}

EXPORT void WintunEndSession(HANDLE Session)
{
    pthread_mutex_lock(&registry_lock);
    struct session *s = find_session(Session);
    if (!s)
    {
        pthread_mutex_unlock(&registry_lock);
        fail(ERROR_INVALID_HANDLE, "Invalid session handle");
        return;
    }
    for (struct session **pp = &sessions; *pp; pp = &(*pp)->next)
        if (*pp == s)
        {
            *pp = s->next;
            break;
        }
    s->adapter->session = NULL;
    adapter_unref(s->adapter);
    pthread_mutex_unlock(&registry_lock);
    session_free(s);
}

EXPORT HANDLE WintunGetReadWaitEvent(HANDLE Session)
{
    struct session *s = lookup_session(Session);
    if (!s)
    {
        fail(ERROR_INVALID_HANDLE, "Invalid session handle");
        return NULL;
    }
    return (HANDLE)(intptr_t)s->epoll_fd;
}

/* Test hook standing in for SetEvent() on the read-wait event. */
EXPORT BOOL WintunTestSetEvent(HANDLE Event)
{
    pthread_mutex_lock(&registry_lock);
    for (struct session *s = sessions; s; s = s->next)
        if ((HANDLE)(intptr_t)s->epoll_fd == Event)
        {
            signal_event(s);
            pthread_mutex_unlock(&registry_lock);
            return 1;
        }
    pthread_mutex_unlock(&registry_lock);
    fail(ERROR_INVALID_HANDLE, "Not a read-wait event");
    return 0;
}

EXPORT void WintunTestCorruptRing(HANDLE Session)
{
    struct session *s = lookup_session(Session);
    if (s)
        __atomic_store_n(&s->corrupt, 1, __ATOMIC_RELEASE);
}

EXPORT BOOL WintunTestGetStats(HANDLE Session, DWORD64 *RxDropped, DWORD64 *TxErrors)
{
    struct session *s = lookup_session(Session);
    if (!s || !RxDropped || !TxErrors)
    {
        fail(s ? ERROR_INVALID_PARAMETER : ERROR_INVALID_HANDLE, "Failed to get stats");
        return 0;
    }
    pthread_mutex_lock(&s->rx_lock);
    *RxDropped = s->rx_dropped;
    pthread_mutex_unlock(&s->rx_lock);
    pthread_mutex_lock(&s->tx_lock);
    *TxErrors = s->tx_errors;
    pthread_mutex_unlock(&s->tx_lock);
    return 1;
}

static DWORD ring_space(const struct ring *r, DWORD capacity)
{
    return (r->head - r->tail - 4u) & (capacity - 1u);
}

static DWORD *record_at(const struct ring *r, DWORD offset)
{
    return (DWORD *)(void *)(r->data + offset);
}

/* Find the outstanding record whose data starts at packet; NULL if none. */
static DWORD *find_record(const struct ring *r, DWORD capacity, const BYTE *packet)
{
    DWORD offset = r->head;
    for (DWORD i = 0; i < r->records; ++i)
    {
        DWORD *rec = record_at(r, offset);
        if ((const BYTE *)(rec + 1) == packet)
            return rec;
        offset = (offset + RECORD_SIZE(*rec & ~RECORD_FLAG)) & (capacity - 1u);
    }
    return NULL;
}

/* A TUN fd whose interface was deleted fails with EBADFD.  (EIO only means
 * the link is down, EINVAL a malformed packet.) */
static int is_gone(int err)
{
    return err == EBADFD;
}

EXPORT BYTE *WintunReceivePacket(HANDLE Session, DWORD *PacketSize)
{
    struct session *s = lookup_session(Session);
    if (!s)
    {
        fail(ERROR_INVALID_HANDLE, "Invalid session handle");
        return NULL;
    }
    if (!PacketSize)
    {
        fail(ERROR_INVALID_PARAMETER, "PacketSize is NULL");
        return NULL;
    }
    DWORD err;
    pthread_mutex_lock(&s->rx_lock);
    if (__atomic_load_n(&s->corrupt, __ATOMIC_ACQUIRE))
    {
        err = ERROR_INVALID_DATA;
        goto out;
    }
    if (s->eof || __atomic_load_n(&s->adapter->removed, __ATOMIC_ACQUIRE))
    {
        err = ERROR_HANDLE_EOF;
        goto out;
    }
    for (;;)
    {
        ssize_t n = read(s->fd, s->scratch, sizeof(s->scratch));
        if (n < 0)
        {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN)
            {
                /* Empty: reset the manual signal (auto-reset event semantics). */
                uint64_t count;
                ssize_t rc = read(s->event_fd, &count, sizeof(count));
                (void)rc;
                err = ERROR_NO_MORE_ITEMS;
            }
            else if (is_gone(errno))
            {
                s->eof = 1;
                err = ERROR_HANDLE_EOF;
            }
            else
                err = errno_to_win32(errno);
            goto out;
        }
        if ((size_t)n > WINTUN_MAX_IP_PACKET_SIZE || RECORD_SIZE(n) > ring_space(&s->rx, s->capacity))
        {
            /* The driver drops what does not fit in the ring. */
            ++s->rx_dropped;
            continue;
        }
        DWORD *rec = record_at(&s->rx, s->rx.tail);
        *rec = (DWORD)n;
        memcpy(rec + 1, s->scratch, (size_t)n);
        s->rx.tail = (s->rx.tail + RECORD_SIZE(n)) & (s->capacity - 1u);
        ++s->rx.records;
        *PacketSize = (DWORD)n;
        pthread_mutex_unlock(&s->rx_lock);
        return (BYTE *)(rec + 1);
    }
out:
    pthread_mutex_unlock(&s->rx_lock);
    last_error = err; /* expected outcomes: not logged */
    return NULL;
}

EXPORT void WintunReleaseReceivePacket(HANDLE Session, const BYTE *Packet)
{
    struct session *s = lookup_session(Session);
    if (!s)
    {
        fail(ERROR_INVALID_HANDLE, "Invalid session handle");
        return;
    }
    pthread_mutex_lock(&s->rx_lock);
    DWORD *rec = find_record(&s->rx, s->capacity, Packet);
    if (!rec || (*rec & RECORD_FLAG))
    {
        pthread_mutex_unlock(&s->rx_lock);
        fail(ERROR_INVALID_PARAMETER, "Packet was not received or already released");
        return;
    }
    *rec |= RECORD_FLAG;
    /* Free space up to the first record still held, in ring order. */
    while (s->rx.records)
    {
        DWORD head = *record_at(&s->rx, s->rx.head);
        if (!(head & RECORD_FLAG))
            break;
        s->rx.head = (s->rx.head + RECORD_SIZE(head & ~RECORD_FLAG)) & (s->capacity - 1u);
        --s->rx.records;
    }
    pthread_mutex_unlock(&s->rx_lock);
}

static int tun_alive(struct session *s)
{
    struct ifreq ifr;
    if (ioctl(s->fd, TUNGETIFF, &ifr) == 0)
        return 1;
    return !is_gone(errno);
}

EXPORT BYTE *WintunAllocateSendPacket(HANDLE Session, DWORD PacketSize)
{
    struct session *s = lookup_session(Session);
    if (!s)
    {
        fail(ERROR_INVALID_HANDLE, "Invalid session handle");
        return NULL;
    }
    if (PacketSize > WINTUN_MAX_IP_PACKET_SIZE)
    {
        fail(ERROR_INVALID_PARAMETER, "Packet larger than WINTUN_MAX_IP_PACKET_SIZE");
        return NULL;
    }
    DWORD err;
    pthread_mutex_lock(&s->tx_lock);
    if (s->eof || __atomic_load_n(&s->adapter->removed, __ATOMIC_ACQUIRE) || !tun_alive(s))
    {
        s->eof = 1;
        err = ERROR_HANDLE_EOF;
    }
    else if (RECORD_SIZE(PacketSize) > ring_space(&s->tx, s->capacity))
        err = ERROR_BUFFER_OVERFLOW;
    else
    {
        DWORD *rec = record_at(&s->tx, s->tx.tail);
        *rec = PacketSize | RECORD_FLAG;
        s->tx.tail = (s->tx.tail + RECORD_SIZE(PacketSize)) & (s->capacity - 1u);
        ++s->tx.records;
        pthread_mutex_unlock(&s->tx_lock);
        return (BYTE *)(rec + 1);
    }
    pthread_mutex_unlock(&s->tx_lock);
    last_error = err;
    return NULL;
}

EXPORT void WintunSendPacket(HANDLE Session, const BYTE *Packet)
{
    struct session *s = lookup_session(Session);
    if (!s)
    {
        fail(ERROR_INVALID_HANDLE, "Invalid session handle");
        return;
    }
    pthread_mutex_lock(&s->tx_lock);
    DWORD *rec = find_record(&s->tx, s->capacity, Packet);
    if (!rec || !(*rec & RECORD_FLAG))
    {
        pthread_mutex_unlock(&s->tx_lock);
        fail(ERROR_INVALID_PARAMETER, "Packet was not allocated or already sent");
        return;
    }
    *rec &= ~RECORD_FLAG;
    /* Hand committed records to the TUN in allocation order. */
    while (s->tx.records)
    {
        DWORD *head = record_at(&s->tx, s->tx.head);
        if (*head & RECORD_FLAG)
            break;
        if (!s->eof && write(s->fd, head + 1, *head) < 0)
        {
            ++s->tx_errors;
            if (is_gone(errno))
                s->eof = 1;
        }
        s->tx.head = (s->tx.head + RECORD_SIZE(*head)) & (s->capacity - 1u);
        --s->tx.records;
    }
    pthread_mutex_unlock(&s->tx_lock);
}
