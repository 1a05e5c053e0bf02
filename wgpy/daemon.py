"""``wgpy-userspace [-f|--foreground] INTERFACE``: the userspace WireGuard
daemon convention (the same as wireguard-go's), so that
``WG_QUICK_USERSPACE_IMPLEMENTATION=wgpy-userspace wg-quick up CONF`` works.

It creates the TUN interface, serves UAPI at
``/var/run/wireguard/INTERFACE.sock``, and daemonizes unless ``-f`` is given
or ``WG_PROCESS_FOREGROUND=1`` is set; the parent exits only once UAPI is
ready (with status 1 and the reason if start-up failed).  The daemon exits
cleanly when the interface is deleted (``ip link del``), when its UAPI
socket is removed, or on SIGTERM/SIGINT.

Environment: ``LOG_LEVEL`` = ``verbose``/``debug``, ``info``, ``error``
(default) or ``silent``; ``WGPY_LOG_FILE`` sends a daemon's log to a file;
and the ``WGPY_*`` interface options of :mod:`wgpy.runtime.options`
(``WGPY_MTU``, ``WGPY_OFFLOAD``, ``WGPY_FORCE_UNDER_LOAD``,
``WGPY_INSECURE_TEST_RNG_SEED``).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence

__all__ = ["main", "serve"]

log = logging.getLogger("wgpy.runtime")

_LEVELS = {
    "verbose": logging.DEBUG,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "error": logging.ERROR,
    "silent": logging.CRITICAL + 10,
}


def _setup_logging(name: str, stream_ok: bool) -> None:
    level = _LEVELS.get(os.environ.get("LOG_LEVEL", "").lower(), logging.ERROR)
    handlers: list[logging.Handler] = []
    path = os.environ.get("WGPY_LOG_FILE")
    if path:
        handlers.append(logging.FileHandler(path))
    elif stream_ok:
        handlers.append(logging.StreamHandler(sys.stderr))
    else:
        handlers.append(logging.NullHandler())
    fmt = logging.Formatter(f"%(levelname)s: ({name}) %(asctime)s %(message)s")
    root = logging.getLogger("wgpy")
    root.handlers.clear()
    for h in handlers:
        h.setFormatter(fmt)
        root.addHandler(h)
    root.setLevel(level)
    root.propagate = False


def serve(name: str, ready: Callable[[str | None], None] | None = None) -> int:
    """Create the interface and serve it until it goes away.

    ``ready`` is called once with None when UAPI is up, or with an error
    message if start-up failed.  Returns the process exit status.
    """
    from wgpy.runtime.interface import open_interface
    from wgpy.runtime.options import InterfaceOptions
    from wgpy.uapi import UapiServer

    def report(error: str | None) -> None:
        if ready is not None:
            ready(error)

    # Handle SIGTERM/SIGINT from the very start, so a signal that arrives
    # while the interface is still being set up also ends it cleanly.
    stopping: list[Callable[[], None]] = []
    requested: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        log.info("received %s, shutting down", signal.Signals(signum).name)
        requested.append(signum)
        for stop in stopping:
            stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    try:
        options = InterfaceOptions.from_environment()
        iface = open_interface(name, options)
    except (OSError, ValueError) as exc:
        report(f"failed to create TUN device {name!r}: {exc}")
        return 1
    tun = iface.tun
    server: UapiServer | None = None
    try:
        iface.start()
        server = UapiServer(tun.name, iface)
        server.on_socket_removed = iface.stop
        server.start()
    except OSError as exc:
        if server is not None:
            server.close()
        iface.close()
        report(f"failed to start {name!r}: {exc}")
        return 1

    stopping.append(iface.stop)
    if requested:
        iface.stop()
    log.info(
        "interface %s up: UDP port %d, UAPI %s", tun.name, iface.get_listen_port(), server.path
    )
    udp = iface.udp
    families = udp.families if udp is not None else []
    offload = getattr(tun, "offload", False)
    log.info(
        "offloads: TUN %s, UDP GSO %s, GRO %s",
        ("TSO+USO" if getattr(tun, "uso", False) else "TSO") if offload else "off",
        "on" if udp is not None and any(udp.gso_enabled(f) for f in families) else "off",
        "on" if udp is not None and any(udp.gro_enabled(f) for f in families) else "off",
    )
    report(None)
    try:
        reason = iface.run()
        log.info("shutting down: %s", reason)
    finally:
        server.close()
        iface.close()
    return 0


def _daemonize(name: str) -> int:
    """Fork; the parent waits for the child's ready report and exits with it."""
    r, w = os.pipe()
    pid = os.fork()
    if pid > 0:
        os.close(w)
        chunks = []
        while True:
            chunk = os.read(r, 4096)
            if not chunk:
                break
            chunks.append(chunk)
        os.close(r)
        message = b"".join(chunks).decode(errors="replace")
        if message.startswith("ok"):
            return 0
        print(message.strip() or f"{name}: daemon exited during start-up", file=sys.stderr)
        return 1
    # Child: new session, no controlling terminal; report readiness over the pipe.
    os.close(r)
    os.setsid()
    keep_stderr = sys.stderr.isatty()
    _setup_logging(name, keep_stderr)

    def ready(error: str | None) -> None:
        os.write(w, b"ok\n" if error is None else f"error: {error}\n".encode())
        os.close(w)
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)
        os.dup2(devnull, 1)
        if not keep_stderr:
            os.dup2(devnull, 2)
        os.close(devnull)

    status = 1
    try:
        status = serve(name, ready)
    finally:
        os._exit(status)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``wgpy-userspace`` and ``wgpy userspace``."""
    parser = argparse.ArgumentParser(
        prog="wgpy-userspace",
        description="Userspace WireGuard daemon (wgpy). Creates INTERFACE and serves UAPI.",
    )
    parser.add_argument("-f", "--foreground", action="store_true", help="do not daemonize")
    parser.add_argument("interface", help="interface name (at most 15 bytes)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("wgpy-userspace: must run as root (it creates a TUN device)", file=sys.stderr)
        return 1
    foreground = args.foreground or os.environ.get("WG_PROCESS_FOREGROUND") == "1"
    if foreground:
        _setup_logging(args.interface, True)

        def ready(error: str | None) -> None:
            if error is not None:
                print(f"wgpy-userspace: {error}", file=sys.stderr)

        return serve(args.interface, ready)
    return _daemonize(args.interface)


if __name__ == "__main__":
    sys.exit(main())
