"""What every running interface is built with, whichever front door asks.

The daemon (``wgpy-userspace``), the wireguard.h adapters and tests all build
an :class:`~wgpy.runtime.interface.Interface` from one
:class:`InterfaceOptions`, read from the environment once, and get their UDP
sockets from :func:`udp_bind_factory`, so every interface has the same
defences: the in-kernel framing filter, the separate handshake socket read on
a budget, and the offloads unless turned off.

Environment (read by :meth:`InterfaceOptions.from_environment`):

* ``WGPY_MTU``: the TUN MTU at creation (default 1420; the engine follows
  later changes of the link's MTU).
* ``WGPY_OFFLOAD=0``: no TUN TSO/USO and no UDP GSO/GRO (for comparisons).
* ``WGPY_FORCE_UNDER_LOAD=1``: a debug switch that makes every handshake need
  a cookie, to exercise the DoS path on demand.
* ``WGPY_KEYLOG_FILE``: append every handshake's keys, in Wireshark's
  ``wg.keylog_file`` format, to this file (created 0600).  A secret: it
  decrypts the tunnel's traffic.  Off by default (:mod:`wgpy.keylog`).
* ``WGPY_INSECURE_TEST_RNG_SEED``: a seeded RNG, for recording test
  transcripts only (it makes every key predictable).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from wgpy.constants import DEFAULT_MTU
from wgpy.net.udp import UdpBind

__all__ = ["InterfaceOptions", "UdpFactory", "udp_bind_factory"]

#: Opens the UDP sockets of a listen port: ``(port, fwmark) -> UdpBind``.
UdpFactory = Callable[[int, int], UdpBind]

_MTU_MIN, _MTU_MAX = 68, 65535


@dataclass(frozen=True)
class InterfaceOptions:
    """How to build an interface (see the module docstring for each field)."""

    mtu: int = DEFAULT_MTU
    offload: bool = True
    force_under_load: bool = False
    insecure_rng_seed: str | None = None
    keylog_file: str | None = None

    def __post_init__(self) -> None:
        if not _MTU_MIN <= self.mtu <= _MTU_MAX:
            raise ValueError(f"MTU {self.mtu} outside {_MTU_MIN}..{_MTU_MAX}")

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> InterfaceOptions:
        """Options from ``WGPY_*`` variables; ValueError for a malformed one."""
        env = os.environ if environ is None else environ
        text = env.get("WGPY_MTU", "")
        try:
            mtu = int(text) if text else DEFAULT_MTU
        except ValueError:
            raise ValueError(f"WGPY_MTU must be a number, not {text!r}") from None
        return cls(
            mtu=mtu,
            offload=env.get("WGPY_OFFLOAD", "1") != "0",
            force_under_load=env.get("WGPY_FORCE_UNDER_LOAD") == "1",
            insecure_rng_seed=env.get("WGPY_INSECURE_TEST_RNG_SEED") or None,
            keylog_file=env.get("WGPY_KEYLOG_FILE") or None,
        )


def udp_bind_factory(options: InterfaceOptions, netns_fd: int | None = None) -> UdpFactory:
    """The factory of an interface's UDP sockets.  With ``netns_fd`` the
    sockets always open in that network namespace, whichever thread asks
    (a configuration change may come from anywhere)."""

    def make(port: int, mark: int) -> UdpBind:
        def bind() -> UdpBind:
            return UdpBind(
                port,
                fwmark=mark,
                gso=options.offload,
                gro=options.offload,
                wireguard_filter=True,
                split_handshakes=True,
            )

        if netns_fd is None:
            return bind()
        from wgpy.net.netns import call_in_netns

        return call_in_netns(netns_fd, bind)

    return make
