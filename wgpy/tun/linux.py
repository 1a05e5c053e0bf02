"""Linux TUN device: ``/dev/net/tun`` in layer-3 mode without packet info.

One file descriptor per device, opened non-blocking.  Each read returns one
IP packet and each write injects one; addresses, routes and link state are
left to ``ip``/``wg-quick``.  Interface ioctls (MTU, flags, index) go through a
datagram socket opened at creation time, so they address the interface in the
network namespace the device was created in, whichever thread calls them later.

Kernel behaviour this module relies on (checked on Linux 6.18):

* ``ip link del`` on the interface detaches the still-open descriptor:
  read, write and TUN ioctls then fail with EBADFD and poll() reports POLLERR.
  That is turned into :class:`TunClosed`.
* A write while the link is down fails with EIO; a write whose first nibble is
  not 4 or 6 (or an empty write) fails with EINVAL.  Both are counted drops.
* The open descriptor holds a reference to its network namespace: deleting
  the namespace with ``ip netns del`` does not remove the interface until the
  descriptor is closed.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import os
import socket
import struct
from collections.abc import Sequence

from ..constants import DEFAULT_MTU, IO_BATCH_SIZE
from .base import TunClosed

__all__ = ["LinuxTun", "interface_exists"]

# <linux/if_tun.h> and <linux/sockios.h> ioctl numbers, <linux/if.h> flags.
_TUNSETIFF = 0x400454CA
_TUNGETIFF = 0x800454D2
_IFF_TUN = 0x0001
_IFF_NO_PI = 0x1000
_SIOCGIFFLAGS = 0x8913
_SIOCGIFMTU = 0x8921
_SIOCSIFMTU = 0x8922
_SIOCGIFINDEX = 0x8933
_IFF_UP = 0x1
_IFNAMSIZ = 16
_IFREQ = struct.Struct("16sH22x")  # struct ifreq: name + short flags, 40 bytes
_IFREQ_INT = struct.Struct("16si20x")  # struct ifreq: name + int (mtu, ifindex)

#: Largest packet a read can return without IFF_VNET_HDR (the TUN max MTU).
_READ_BUFFER_SIZE = 65535

#: errno values that mean the interface behind the descriptor is gone.
_GONE_ERRNOS = frozenset({errno.EBADFD})


def _check_name(name: str) -> bytes:
    """Validate an interface name as the kernel's dev_valid_name() would."""
    raw = name.encode()
    if len(raw) >= _IFNAMSIZ:
        raise ValueError(f"interface name longer than {_IFNAMSIZ - 1} bytes: {name!r}")
    if name in (".", "..") or any(c in name for c in "/:") or any(c.isspace() for c in name):
        raise ValueError(f"invalid interface name: {name!r}")
    return raw


def _errname(err: int | None) -> str:
    return errno.errorcode.get(err or 0, str(err)).lower()


def interface_exists(name: str) -> bool:
    """True when an interface called ``name`` exists in this thread's namespace."""
    try:
        socket.if_nametoindex(name)
    except OSError:
        return False
    return True


class LinuxTun:
    """A Linux TUN interface (``IFF_TUN | IFF_NO_PI``), non-blocking.

    Build one with :meth:`create`.  The packet paths live in
    ``_read_packets``/``_write_packet`` so an offload-aware subclass (vnet
    header, segmentation) can replace just those.
    """

    stats: dict[str, int]

    def __init__(self, fd: int, name: str, ctl: socket.socket) -> None:
        """Wrap an attached TUN descriptor; use :meth:`create` instead."""
        self._fd = fd
        self._name = name
        self._ctl = ctl
        self._file = io.FileIO(fd, "r+", closefd=False)
        self._buf = bytearray(_READ_BUFFER_SIZE)
        self._view = memoryview(self._buf)
        self._closed = False
        self._gone = False
        self._ifindex = self._ioctl_int(_SIOCGIFINDEX)
        self._mtu = self._ioctl_int(_SIOCGIFMTU)
        self.stats = {}

    @classmethod
    def create(cls, name: str, mtu: int = DEFAULT_MTU) -> LinuxTun:
        """Create (or attach to a free persistent) TUN interface ``name``.

        The interface lives in the calling thread's network namespace.  The
        name may contain ``%d`` for the kernel to pick a number; ``name`` on
        the result is the real one.  Raises ValueError for a bad name or MTU,
        OSError when the kernel refuses (EBUSY: in use; EPERM: no
        CAP_NET_ADMIN).
        """
        raw = _check_name(name)
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        ctl: socket.socket | None = None
        try:
            req = fcntl.ioctl(fd, _TUNSETIFF, _IFREQ.pack(raw, _IFF_TUN | _IFF_NO_PI))
            real = _IFREQ.unpack(req)[0].rstrip(b"\0").decode()
            ctl = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            tun = cls(fd, real, ctl)
        except BaseException:
            if ctl is not None:
                ctl.close()
            os.close(fd)
            raise
        try:
            tun.set_mtu(mtu)
        except BaseException:
            tun.close()
            raise
        return tun

    # -- properties ---------------------------------------------------------

    @property
    def name(self) -> str:
        """The interface name the kernel gave the device."""
        return self._name

    @property
    def mtu(self) -> int:
        """The current MTU (one ioctl; the last known value once gone)."""
        if not (self._closed or self._gone):
            with contextlib.suppress(OSError):
                self._mtu = self._ioctl_int(_SIOCGIFMTU)
        return self._mtu

    @property
    def ifindex(self) -> int:
        """Interface index, fixed at creation."""
        return self._ifindex

    @property
    def closed(self) -> bool:
        """True after :meth:`close` or once the interface has been deleted."""
        if self._closed or self._gone:
            return True
        try:
            fcntl.ioctl(self._fd, _TUNGETIFF, bytes(_IFREQ.size))
        except OSError as exc:
            if exc.errno in _GONE_ERRNOS:
                self._gone = True
                return True
        return False

    def fileno(self) -> int:
        """The TUN descriptor (wait for readability on it); -1 once closed."""
        return -1 if self._closed else self._fd

    # -- interface control ---------------------------------------------------

    def _ioctl_int(self, request: int, value: int = 0) -> int:
        req = _IFREQ_INT.pack(self._name.encode(), value)
        return int(_IFREQ_INT.unpack(fcntl.ioctl(self._ctl, request, req))[1])

    def get_mtu(self) -> int:
        """Read the MTU from the kernel."""
        self._mtu = self._ioctl_int(_SIOCGIFMTU)
        return self._mtu

    def set_mtu(self, mtu: int) -> None:
        """Set the interface MTU (68..65535 for TUN); ValueError if refused."""
        try:
            self._ioctl_int(_SIOCSIFMTU, mtu)
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                raise ValueError(f"MTU {mtu} refused by the kernel for {self._name}") from exc
            raise
        self._mtu = mtu

    def is_up(self) -> bool:
        """True when the interface is administratively up (IFF_UP)."""
        try:
            req = fcntl.ioctl(self._ctl, _SIOCGIFFLAGS, _IFREQ.pack(self._name.encode(), 0))
        except OSError as exc:
            if exc.errno == errno.ENODEV:
                return False
            raise
        return bool(_IFREQ.unpack(req)[1] & _IFF_UP)

    # -- packet I/O -------------------------------------------------------------

    def _count(self, reason: str) -> None:
        self.stats[reason] = self.stats.get(reason, 0) + 1

    def _gone_error(self, exc: OSError | None = None) -> TunClosed:
        if exc is not None:
            self._gone = True
        state = "closed" if self._closed else "deleted"
        return TunClosed(f"TUN device {self._name} was {state}")

    def read_batch(self, max_packets: int = IO_BATCH_SIZE) -> list[bytes]:
        """Read every packet available now, up to ``max_packets``.

        Returns ``[]`` when nothing is queued.  Raises :class:`TunClosed`
        after :meth:`close` or once the interface has been deleted.
        """
        if self._closed:
            raise self._gone_error()
        out: list[bytes] = []
        try:
            self._read_packets(out, max_packets)
        except OSError as exc:
            if exc.errno in _GONE_ERRNOS:
                raise self._gone_error(exc) from exc
            self._count(f"read_{_errname(exc.errno)}")
        return out

    def _read_packets(self, out: list[bytes], max_packets: int) -> None:
        """Append up to ``max_packets`` packets to ``out``; stop on EAGAIN."""
        readinto = self._file.readinto
        view = self._view
        while len(out) < max_packets:
            n = readinto(view)  # one packet per read; None means EAGAIN
            if not n:
                return
            out.append(bytes(view[:n]))

    def write_batch(self, packets: Sequence[bytes | memoryview]) -> None:
        """Write each IP packet; refused ones (EINVAL, EIO when down) are counted.

        Raises :class:`TunClosed` after :meth:`close` or once the interface
        has been deleted.
        """
        if self._closed:
            raise self._gone_error()
        write = self._write_packet
        for packet in packets:
            try:
                write(packet)
            except OSError as exc:
                if exc.errno in _GONE_ERRNOS:
                    raise self._gone_error(exc) from exc
                self._count(f"write_{_errname(exc.errno)}")

    def _write_packet(self, packet: bytes | memoryview) -> None:
        """Write one packet; raise OSError for a refusal."""
        if self._file.write(packet) is None:
            self._count("write_eagain")

    def close(self) -> None:
        """Close the descriptor (a non-persistent interface disappears); idempotent."""
        if self._closed:
            return
        self._closed = True
        self._file.close()
        self._ctl.close()
        os.close(self._fd)

    def __enter__(self) -> LinuxTun:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = " closed" if self._closed else ""
        return f"<LinuxTun {self._name}{state}>"
