"""Linux TUN device: ``/dev/net/tun`` in layer-3 mode without packet info.

One file descriptor per device, opened non-blocking.  Addresses, routes and
link state are left to ``ip``/``wg-quick``.

With ``offload`` (the default) the device is opened with ``IFF_VNET_HDR`` and
the kernel is told (``TUNSETOFFLOAD``) that we take partial checksums and
TCP (and, where the kernel has it, UDP) segmentation offload.  A read may
then return a 64 KiB super-packet, which :mod:`wgpy.tun.offload` cuts into
MTU-sized, checksum-complete packets; a write batch has its same-flow
packets merged back into super-packets.  To the caller nothing changes: IP
packets of at most MTU bytes in both directions.  Without offload each read
returns one IP packet and each write injects one.

Interface ioctls (MTU, flags) go through a datagram socket that lives in the
network namespace where the link is *now*: the link may be moved to another
namespace (``ip link set IFACE netns OTHER``, the container trick of
wireguard.com/netns) while this process and its sockets stay where they were.
Before each such ioctl the device asks the kernel where the link lives
(``TUNGETDEVNETNS`` on the descriptor) and its current name (``TUNGETIFF``), and
opens a new control socket there when the namespace changed.
:meth:`LinuxTun.open_link_watch` opens the netlink socket for link events in
that namespace too.

Kernel behaviour this module relies on (checked on Linux 6.18):

* ``ip link del`` on the interface detaches the still-open descriptor:
  read, write and TUN ioctls then fail with EBADFD and poll() reports POLLERR.
  That is turned into :class:`TunClosed`.
* A write while the link is down fails with EIO; a write whose first nibble is
  not 4 or 6 (or an empty write) fails with EINVAL.  Both are counted drops.
* The open descriptor holds a reference to its network namespace: deleting
  the namespace with ``ip netns del`` does not remove the interface until the
  descriptor is closed.
* After ``ip link set IFACE netns OTHER`` the descriptor keeps working; the
  link arrives down in OTHER, interface ioctls by name in the old namespace
  fail with ENODEV, ``TUNGETDEVNETNS`` (Linux >= 5.2) gives a descriptor of
  OTHER, and ``ip link del`` there detaches the descriptor (EBADFD) as above.
  A zero-length write answers EINVAL whether the link is up or down on 6.18
  (wireguard-go's up/down probe no longer tells them apart), so the flags are
  read in the link's namespace instead.
* ``TUNSETOFFLOAD`` with TUN_F_CSUM|TSO4|TSO6|USO4|USO6 is accepted on 6.18;
  USO needs Linux >= 6.2 (EINVAL before), so it is asked for separately.
* A read with IFF_VNET_HDR returns the 10-byte virtio_net_hdr first; its
  ``hdr_len`` is not trusted (wireguard-go saw it cover the whole first
  packet on the forwarding path).  Writes need the header too (all zero for
  a plain packet).  A GSO write (NEEDS_CSUM, pseudo-header sum in the
  checksum field) enters the stack as one skb; TCP receive takes it whole.
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

from ..constants import DEFAULT_MTU, IO_BATCH_SIZE, TUN_GRO_VERIFY_CHECKSUMS
from ..net import netns as _netns
from . import offload as _off
from .base import TunClosed

__all__ = ["LinuxTun", "interface_exists"]

# <linux/if_tun.h> and <linux/sockios.h> ioctl numbers, <linux/if.h> flags.
_TUNSETIFF = 0x400454CA
_TUNGETIFF = 0x800454D2
_IFF_TUN = 0x0001
_IFF_NO_PI = 0x1000
_IFF_VNET_HDR = 0x4000
_TUNSETOFFLOAD = 0x400454D0
_TUNSETVNETHDRSZ = 0x400454D8
_TUN_F_CSUM = 0x01
_TUN_F_TSO4 = 0x02
_TUN_F_TSO6 = 0x04
_TUN_F_USO4 = 0x20
_TUN_F_USO6 = 0x40
_TCP_OFFLOADS = _TUN_F_CSUM | _TUN_F_TSO4 | _TUN_F_TSO6
_UDP_OFFLOADS = _TUN_F_USO4 | _TUN_F_USO6
_TUNGETDEVNETNS = 0x54E3  # _IO('T', 227)
_SIOCGIFMTU = 0x8921
_SIOCSIFMTU = 0x8922
_SIOCGIFINDEX = 0x8933
_IFNAMSIZ = 16
_RTMGRP_LINK = 1  # rtnetlink multicast group of link events
_IFREQ = struct.Struct("16sH22x")  # struct ifreq: name + short flags, 40 bytes
_IFREQ_INT = struct.Struct("16si20x")  # struct ifreq: name + int (mtu, ifindex)

#: Largest packet a read can return without IFF_VNET_HDR (the TUN max MTU).
_READ_BUFFER_SIZE = 65535
#: With IFF_VNET_HDR: header + an IPv6 super-packet (40 + 65535) with room to spare.
_VNET_READ_BUFFER_SIZE = 1 << 17
_VNET_HDR_LEN = _off.VNET_HDR_LEN
_NEEDS_CSUM = _off.VIRTIO_NET_HDR_F_NEEDS_CSUM
_U16 = struct.Struct("!H")

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


def _set_offloads(fd: int) -> bool | None:
    """Ask for TCP (+UDP) offloads: True with USO, False TCP only, None if refused."""
    fcntl.ioctl(fd, _TUNSETVNETHDRSZ, struct.pack("i", _VNET_HDR_LEN))
    for flags in (_TCP_OFFLOADS | _UDP_OFFLOADS, _TCP_OFFLOADS):
        try:
            fcntl.ioctl(fd, _TUNSETOFFLOAD, flags)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            continue
        return flags != _TCP_OFFLOADS
    return None


def interface_exists(name: str) -> bool:
    """True when an interface called ``name`` exists in this thread's namespace."""
    try:
        socket.if_nametoindex(name)
    except OSError:
        return False
    return True


class LinuxTun:
    """A Linux TUN interface (``IFF_TUN | IFF_NO_PI``, optionally with offloads).

    Build one with :meth:`create`.  :attr:`stats` counts drops and errors by
    reason; :attr:`offload_stats` counts offload work: ``gso_reads``
    (super-packets read) and ``gso_segments`` (packets cut from them),
    ``csum_completed`` (partial checksums finished), ``gro_writes``
    (super-packets written) and ``gro_segments`` (packets merged into them).
    """

    stats: dict[str, int]
    offload_stats: dict[str, int]
    #: Merge only packets whose TCP/UDP checksum verifies (see wgpy.tun.offload).
    verify_checksums: bool

    def __init__(
        self, fd: int, name: str, ctl: socket.socket, *, vnet: bool = False, uso: bool = False
    ) -> None:
        """Wrap an attached TUN descriptor; use :meth:`create` instead."""
        self._fd = fd
        self._name = name
        self._ctl = ctl
        self._file = io.FileIO(fd, "r+", closefd=False)
        self._vnet = vnet
        self._uso = uso
        self._gro = vnet
        self._buf = bytearray(_VNET_READ_BUFFER_SIZE if vnet else _READ_BUFFER_SIZE)
        self._view = memoryview(self._buf)
        self._closed = False
        self._gone = False
        # Where the control socket lives (None: TUNGETDEVNETNS unsupported, so
        # the link is assumed to stay in the namespace it was created in).
        self._ctl_netns: tuple[int, int] | None = None
        ns = self._device_netns()
        if ns is not None:
            try:
                self._ctl_netns = _netns.netns_identity(ns)
            finally:
                os.close(ns)
        self._ifindex = self._ioctl_int(_SIOCGIFINDEX)
        self._mtu = self._ioctl_int(_SIOCGIFMTU)
        self.stats = {}
        self.offload_stats = {}
        self.verify_checksums = TUN_GRO_VERIFY_CHECKSUMS

    @classmethod
    def create(cls, name: str, mtu: int = DEFAULT_MTU, offload: bool = True) -> LinuxTun:
        """Create (or attach to a free persistent) TUN interface ``name``.

        The interface lives in the calling thread's network namespace.  The
        name may contain ``%d`` for the kernel to pick a number; ``name`` on
        the result is the real one.  Raises ValueError for a bad name or MTU,
        OSError when the kernel refuses (EBUSY: in use; EPERM: no
        CAP_NET_ADMIN).

        With ``offload`` the device takes TSO (and USO where the kernel has
        it) super-packets; if the kernel refuses the vnet header or the TCP
        offloads the device silently falls back to plain packets
        (:attr:`offload` tells which).
        """
        raw = _check_name(name)
        tun = cls._open(raw, vnet=offload) if offload else None
        if tun is None:
            tun = cls._open(raw, vnet=False)
        assert tun is not None
        try:
            tun.set_mtu(mtu)
        except BaseException:
            tun.close()
            raise
        return tun

    @classmethod
    def _open(cls, raw: bytes, *, vnet: bool) -> LinuxTun | None:
        """Attach a descriptor; with ``vnet`` None means "offloads refused"."""
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        ctl: socket.socket | None = None
        try:
            flags = _IFF_TUN | _IFF_NO_PI | (_IFF_VNET_HDR if vnet else 0)
            try:
                req = fcntl.ioctl(fd, _TUNSETIFF, _IFREQ.pack(raw, flags))
            except OSError as exc:
                if vnet and exc.errno == errno.EINVAL:
                    os.close(fd)
                    return None
                raise
            uso: bool | None = False
            if vnet:
                uso = _set_offloads(fd)
                if uso is None:
                    # The interface we just made dies with the descriptor; reopen plain.
                    os.close(fd)
                    return None
            real = _IFREQ.unpack(req)[0].rstrip(b"\0").decode()
            ctl = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            return cls(fd, real, ctl, vnet=vnet, uso=bool(uso))
        except BaseException:
            if ctl is not None:
                ctl.close()
            os.close(fd)
            raise

    # -- properties ---------------------------------------------------------

    @property
    def name(self) -> str:
        """The interface name (the kernel's; updated when the link is renamed)."""
        return self._name

    @property
    def mtu(self) -> int:
        """The current MTU, wherever the link lives (the last known value once gone)."""
        if not (self._closed or self._gone):
            with contextlib.suppress(OSError):
                self._mtu = self._ioctl_int(_SIOCGIFMTU)
        return self._mtu

    @property
    def offload(self) -> bool:
        """True when the device runs with the vnet header and TCP offloads."""
        return self._vnet

    @property
    def uso(self) -> bool:
        """True when the kernel also hands us UDP super-packets (USO, Linux >= 6.2)."""
        return self._uso

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

    # -- where the link lives ----------------------------------------------------

    def _device_netns(self) -> int | None:
        """A descriptor of the namespace the link lives in now, or None."""
        if self._closed:
            return None
        try:
            return int(fcntl.ioctl(self._fd, _TUNGETDEVNETNS))
        except OSError:
            return None

    def netns_identity(self) -> tuple[int, int] | None:
        """(device, inode) of the link's current namespace; None if unknown."""
        ns = self._device_netns()
        if ns is None:
            return None
        try:
            return _netns.netns_identity(ns)
        finally:
            os.close(ns)

    def _control(self) -> socket.socket:
        """The ioctl socket, in the namespace where the link lives now, after
        refreshing the link's name (it may have been renamed on the way)."""
        with contextlib.suppress(OSError):
            req = fcntl.ioctl(self._fd, _TUNGETIFF, bytes(_IFREQ.size))
            self._name = _IFREQ.unpack(req)[0].rstrip(b"\0").decode()
        ns = self._device_netns()
        if ns is None:
            return self._ctl
        try:
            identity = _netns.netns_identity(ns)
            if identity != self._ctl_netns:
                fresh = _netns.call_in_netns(
                    ns, lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                )
                self._ctl.close()
                self._ctl, self._ctl_netns = fresh, identity
        finally:
            os.close(ns)
        return self._ctl

    def open_link_watch(self) -> socket.socket | None:
        """A non-blocking netlink socket that receives the link events of the
        namespace the link lives in now (None if netlink is unavailable).
        Open a new one when :meth:`netns_identity` changes."""
        if not hasattr(socket, "AF_NETLINK"):
            return None

        def make() -> socket.socket:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
            try:
                sock.bind((0, _RTMGRP_LINK))
                sock.setblocking(False)
            except BaseException:
                sock.close()
                raise
            return sock

        ns = self._device_netns()
        try:
            return make() if ns is None else _netns.call_in_netns(ns, make)
        except OSError:
            return None
        finally:
            if ns is not None:
                os.close(ns)

    # -- interface control ---------------------------------------------------

    def _ioctl_int(self, request: int, value: int = 0) -> int:
        req = _IFREQ_INT.pack(self._name.encode(), value)
        return int(_IFREQ_INT.unpack(fcntl.ioctl(self._control(), request, req))[1])

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
        """True when the link is administratively up (IFF_UP), in whichever
        namespace it lives now; False once it is gone."""
        if self._closed or self._gone:
            return False
        try:
            return _netns.get_link_up(self._control(), self._name)
        except OSError as exc:
            if _netns.link_gone(exc):
                return False
            raise

    def set_up(self, up: bool) -> None:
        """Set or clear IFF_UP, in whichever namespace the link lives now."""
        _netns.set_link_up(self._control(), self._name, up)

    # -- packet I/O -------------------------------------------------------------

    def _count(self, reason: str) -> None:
        self.stats[reason] = self.stats.get(reason, 0) + 1

    def _gone_error(self, exc: OSError | None = None) -> TunClosed:
        if exc is not None:
            self._gone = True
        state = "closed" if self._closed else "deleted"
        return TunClosed(f"TUN device {self._name} was {state}")

    def read_batch(self, max_packets: int = IO_BATCH_SIZE) -> list[bytes]:
        """Read every packet available now, up to about ``max_packets``.

        Returns ``[]`` when nothing is queued.  With offloads the segments of
        one super-packet are never split across calls, so a batch may exceed
        ``max_packets`` by up to one super-packet's segments (about 45 at MTU
        1420).  Raises :class:`TunClosed` after :meth:`close` or once the
        interface has been deleted.
        """
        if self._closed:
            raise self._gone_error()
        out: list[bytes] = []
        try:
            if self._vnet:
                self._read_vnet(out, max_packets)
            else:
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

    def _read_vnet(self, out: list[bytes], max_packets: int) -> None:
        """Read vnet-header packets: split super-packets, finish partial checksums."""
        readinto = self._file.readinto
        view = self._view
        stats = self.offload_stats
        # Partial checksums are finished together at the end (one bulk sum).
        partial: list[tuple[int, int, int]] = []  # (index in out, csum_start, csum field)
        try:
            while len(out) < max_packets:
                n = readinto(view)  # one (super-)packet per read; None means EAGAIN
                if not n:
                    return
                if n <= _VNET_HDR_LEN:
                    self._count("read_short")
                    continue
                flags = view[0]
                if view[1] == _off.GSO_NONE:
                    packet = bytes(view[_VNET_HDR_LEN:n])
                    if flags & _NEEDS_CSUM:
                        start, off = _off.VNET_CSUM.unpack_from(view, 6)
                        at = start + off
                        if start < 20 or at + 2 > len(packet):
                            self._count("read_bad_csum_offset")
                            continue
                        partial.append((len(out), start, at))
                    out.append(packet)
                    continue
                try:
                    segments = _off.segment(view[_VNET_HDR_LEN:n], _off.parse_vnet_hdr(view))
                except _off.OffloadError as exc:
                    self._count(f"read_{exc.reason}")
                    continue
                stats["gso_reads"] = stats.get("gso_reads", 0) + 1
                stats["gso_segments"] = stats.get("gso_segments", 0) + len(segments)
                out.extend(segments)
        finally:
            if partial:
                self._finish_partial(out, partial)

    def _finish_partial(self, out: list[bytes], partial: list[tuple[int, int, int]]) -> None:
        sums = _off.ones_sums([memoryview(out[i])[start:] for i, start, _ in partial])
        pack = _U16.pack
        for (i, _, at), residue in zip(partial, sums, strict=True):
            # The field holds the pseudo-header sum, so the residue covers it already.
            packet = out[i]
            out[i] = b"".join((packet[:at], pack(0xFFFF - residue), packet[at + 2 :]))
        stats = self.offload_stats
        stats["csum_completed"] = stats.get("csum_completed", 0) + len(partial)

    def write_batch(self, packets: Sequence[bytes | memoryview]) -> None:
        """Write each IP packet; refused ones (EINVAL, EIO when down) are counted.

        With offloads same-flow TCP (and UDP, with USO) packets of the batch
        are first merged into super-packets (:func:`wgpy.tun.offload.coalesce`).
        Raises :class:`TunClosed` after :meth:`close` or once the interface
        has been deleted.
        """
        if self._closed:
            raise self._gone_error()
        if self._vnet:
            self._write_vnet(packets)
            return
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

    def _write_vnet(self, packets: Sequence[bytes | memoryview]) -> None:
        if self._gro:
            units = _off.coalesce(packets, udp=self._uso, verify=self.verify_checksums)
        else:
            units = [[_off.ZERO_VNET_HDR, p] for p in packets]
        writev = os.writev
        fd = self._fd
        stats = self.offload_stats
        for unit in units:
            segments = len(unit) - 2 if len(unit) > 2 else 1
            try:
                writev(fd, unit)
            except OSError as exc:
                if exc.errno in _GONE_ERRNOS:
                    raise self._gone_error(exc) from exc
                if segments > 1 and exc.errno == errno.EINVAL:
                    self._gso_write_refused(unit)
                    continue
                self.stats[f"write_{_errname(exc.errno)}"] = (
                    self.stats.get(f"write_{_errname(exc.errno)}", 0) + segments
                )
                continue
            if segments > 1:
                stats["gro_writes"] = stats.get("gro_writes", 0) + 1
                stats["gro_segments"] = stats.get("gro_segments", 0) + segments

    def _gso_write_refused(self, unit: list[bytes | memoryview]) -> None:
        """A kernel that refuses our GSO writes (seen on 6.6.44-era kernels): stop merging."""
        self._gro = False
        self._count("gro_write_einval")
        # Our own super-packet splits back into the packets it was made of.
        self._write_vnet(_off.split_read(b"".join(unit)))

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
