"""The ``wgpy`` command: keys, status, and (from :mod:`wgpy.quick`) wg-quick
style ``up``/``down``.

Subcommands::

    wgpy genkey | genpsk            a key in base64 on stdout (as ``wg``)
    wgpy pubkey < private.key       the public key of a private key (as ``wg``)
    wgpy show [INTERFACE|all|interfaces]
    wgpy up CONFIG_FILE|INTERFACE   like ``wg-quick up`` with the wgpy daemon
    wgpy down CONFIG_FILE|INTERFACE like ``wg-quick down``
    wgpy strip CONFIG_FILE|INTERFACE
    wgpy userspace [-f] INTERFACE   the daemon (same as ``wgpy-userspace``)
    wgpy demo [...]                 a guided end-to-end demonstration

See :mod:`wgpy.quick` for what ``up`` and ``down`` do.

Every error is one line on stderr and a non-zero exit status.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import stat
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NoReturn

from wgpy.config import (
    ConfigError,
    strip,
)
from wgpy.keys import (
    KEY_BASE64_LEN,
    decode_key,
    encode_key,
    generate_private_key,
    generate_psk,
    public_key_of,
)

if TYPE_CHECKING:
    from wgpy.uapi import UapiConfig

__all__ = ["CliError", "configure_interface", "main", "read_interface"]

PROG = "wgpy"
Log = Callable[[str], None]


class CliError(Exception):
    """A command failed; the message is printed as one line."""


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# Keys: genkey, genpsk, pubkey (byte-compatible with wg)
# ---------------------------------------------------------------------------

_C_SPACE = b" \t\n\v\f\r"


def _warn_world_accessible_stdout() -> None:
    # wg genkey/genpsk warn when redirected into a file others can read.
    with contextlib.suppress(OSError):
        st = os.fstat(sys.stdout.fileno())
        if stat.S_ISREG(st.st_mode) and st.st_mode & stat.S_IRWXO:
            _stderr(
                "Warning: writing to world accessible file.\n"
                "Consider setting the umask to 077 and trying again."
            )


def cmd_genkey(_args: argparse.Namespace) -> int:
    """``wgpy genkey``: a clamped random private key."""
    _warn_world_accessible_stdout()
    sys.stdout.write(encode_key(generate_private_key()) + "\n")
    return 0


def cmd_genpsk(_args: argparse.Namespace) -> int:
    """``wgpy genpsk``: a random preshared key."""
    _warn_world_accessible_stdout()
    sys.stdout.write(encode_key(generate_psk()) + "\n")
    return 0


def pubkey_from_stdin_bytes(data: bytes) -> str:
    """What ``wg pubkey`` prints for ``data`` on stdin (without the newline).

    As ``wg``: the first 44 bytes must be the key; anything after it may only
    be whitespace or NUL bytes.  Raises CliError with wg's messages.
    """
    head, tail = data[:KEY_BASE64_LEN], data[KEY_BASE64_LEN:]
    if len(head) != KEY_BASE64_LEN:
        raise CliError("Key is not the correct length or format")
    if tail.strip(_C_SPACE + b"\x00"):
        raise CliError("Trailing characters found after key")
    try:
        private = decode_key(head.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise CliError("Key is not the correct length or format") from None
    return encode_key(public_key_of(private))


def cmd_pubkey(_args: argparse.Namespace) -> int:
    """``wgpy pubkey``: private key on stdin, public key on stdout."""
    sys.stdout.write(pubkey_from_stdin_bytes(sys.stdin.buffer.read()) + "\n")
    return 0


# ---------------------------------------------------------------------------
# UAPI access (wgpy.uapi is imported lazily: keys and config need none of it)
# ---------------------------------------------------------------------------


def _socket_path(name: str) -> str:
    """The interface's UAPI socket: the system directory's, else this user's
    (a userspace adapter of an unprivileged user; see wgpy.paths)."""
    from wgpy import paths

    return paths.find_uapi_socket(name) or os.path.join(paths.UAPI_SYSTEM_DIRECTORY, f"{name}.sock")


def _has_uapi_socket(name: str) -> bool:
    return _is_socket(_socket_path(name))


def _is_socket(path: str) -> bool:
    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        return False


def read_interface(name: str) -> UapiConfig:
    """The interface's configuration and state, read over UAPI."""
    from wgpy.uapi import UapiClient

    try:
        return UapiClient(_socket_path(name)).get()
    except FileNotFoundError:
        raise CliError(
            f"'{name}' is not a userspace WireGuard interface (no UAPI socket)"
        ) from None
    except OSError as exc:
        raise CliError(f"unable to read the configuration of '{name}': {_oserror(exc)}") from None


def configure_interface(name: str, lines: Sequence[str]) -> None:
    """Send ``key=value`` lines in one UAPI set operation."""
    from wgpy.uapi import UapiClient

    try:
        UapiClient(_socket_path(name)).set(lines)
    except FileNotFoundError:
        raise CliError(
            f"'{name}' is not a userspace WireGuard interface (no UAPI socket)"
        ) from None
    except OSError as exc:
        raise CliError(f"unable to configure '{name}' over UAPI: {_oserror(exc)}") from None


def _oserror(exc: OSError) -> str:
    return exc.strerror or str(exc)


def userspace_interfaces() -> list[str]:
    """Names of the interfaces that have a UAPI socket (in the system
    directory or this user's), sorted."""
    from wgpy import paths

    names: set[str] = set()
    for directory in paths.uapi_directories():
        try:
            entries = os.listdir(directory)
        except OSError:
            continue
        for entry in entries:
            if entry.endswith(".sock") and _is_socket(os.path.join(directory, entry)):
                names.add(entry[: -len(".sock")])
    return sorted(names)


# ---------------------------------------------------------------------------
# show
# ---------------------------------------------------------------------------


def _pretty_time(seconds: int) -> str:
    parts = []
    for unit, size in (("year", 365 * 86400), ("day", 86400), ("hour", 3600), ("minute", 60)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count} {unit}{'' if count == 1 else 's'}")
    if seconds:
        parts.append(f"{seconds} second{'' if seconds == 1 else 's'}")
    return ", ".join(parts)


def _bytes(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    for unit, scale in (("KiB", 1 << 10), ("MiB", 1 << 20), ("GiB", 1 << 30)):
        if n < scale << 10:
            return f"{n / scale:.2f} {unit}"
    return f"{n / (1 << 40):.2f} TiB"


def format_show(name: str, state: UapiConfig, now: float | None = None) -> str:
    """A ``wg show``-style summary of one interface (no colours)."""
    now_s = int(time.time() if now is None else now)
    hide = os.environ.get("WG_HIDE_KEYS") != "never"
    out = [f"interface: {name}"]
    if state.private_key is not None:
        out.append(f"  public key: {encode_key(public_key_of(state.private_key))}")
        out.append(f"  private key: {'(hidden)' if hide else encode_key(state.private_key)}")
    if state.listen_port:
        out.append(f"  listening port: {state.listen_port}")
    if state.fwmark:
        out.append(f"  fwmark: 0x{state.fwmark:x}")
    # Most recent handshake first; never-handshaken peers last (as wg).
    peers = sorted(state.peers, key=lambda p: (p.last_handshake_ns == 0, -p.last_handshake_ns))
    for peer in peers:
        out.append("")
        out.append(f"peer: {encode_key(peer.public_key)}")
        if peer.preshared_key is not None:
            out.append(f"  preshared key: {'(hidden)' if hide else encode_key(peer.preshared_key)}")
        if peer.endpoint:
            out.append(f"  endpoint: {peer.endpoint}")
        out.append(f"  allowed ips: {', '.join(peer.allowed_ips) or '(none)'}")
        if peer.last_handshake_ns:
            sec = peer.last_handshake_ns // 1_000_000_000
            if sec == now_s:
                ago = "Now"
            elif sec > now_s:
                ago = "(System clock wound backward; connection problems may ensue.)"
            else:
                ago = f"{_pretty_time(now_s - sec)} ago"
            out.append(f"  latest handshake: {ago}")
        if peer.rx_bytes or peer.tx_bytes:
            out.append(
                f"  transfer: {_bytes(peer.rx_bytes)} received, {_bytes(peer.tx_bytes)} sent"
            )
        if peer.persistent_keepalive:
            out.append(f"  persistent keepalive: every {_pretty_time(peer.persistent_keepalive)}")
    return "\n".join(out) + "\n"


def cmd_show(args: argparse.Namespace) -> int:
    """``wgpy show [INTERFACE|all|interfaces]``."""
    target = args.interface or "all"
    if target == "interfaces":
        names = userspace_interfaces()
        if names:
            print(" ".join(names))
        return 0
    names = userspace_interfaces() if target == "all" else [target]
    blocks = [format_show(n, read_interface(n)) for n in names]
    sys.stdout.write("\n".join(blocks))
    return 0


# ---------------------------------------------------------------------------
# Running commands (printed as wg-quick does: "[#] command")
# ---------------------------------------------------------------------------


def cmd_up(args: argparse.Namespace) -> int:
    from wgpy import quick

    quick.up(args.config)
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from wgpy import quick

    quick.down(args.config)
    return 0


def cmd_strip(args: argparse.Namespace) -> int:
    from wgpy import quick

    _path, _name, cfg = quick._load_for(args.config)
    sys.stdout.write(strip(cfg))
    return 0


# ---------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # Usage errors: one line plus the usage, status 1 (as wg).
        self.print_usage(sys.stderr)
        self.exit(1, f"{self.prog}: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    parser = _Parser(prog=PROG, description="wgpy: a userspace WireGuard in Python.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    p = sub.add_parser("genkey", help="print a new private key (base64)")
    p.set_defaults(func=cmd_genkey)
    p = sub.add_parser("genpsk", help="print a new preshared key (base64)")
    p.set_defaults(func=cmd_genpsk)
    p = sub.add_parser("pubkey", help="read a private key on stdin, print its public key")
    p.set_defaults(func=cmd_pubkey)
    p = sub.add_parser("show", help="show userspace interfaces (through UAPI)")
    p.add_argument("interface", nargs="?", help="INTERFACE, 'all' (default) or 'interfaces'")
    p.set_defaults(func=cmd_show)
    for name, func, text in (
        ("up", cmd_up, "bring an interface up from CONFIG_FILE or /etc/wireguard/NAME.conf"),
        ("down", cmd_down, "take an interface down (as wg-quick down)"),
        ("strip", cmd_strip, "print the configuration without the wg-quick-only keys"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("config", metavar="CONFIG_FILE|INTERFACE")
        p.set_defaults(func=func)
    sub.add_parser("userspace", help="run the userspace daemon: userspace [-f] INTERFACE")
    sub.add_parser("demo", help="run the demonstration (see 'wgpy demo --help')")
    sub.add_parser(
        "conformance", help="test another implementation (see 'wgpy conformance --help')"
    )
    return parser


def _dispatch(argv: list[str]) -> int:
    # userspace/demo/conformance own their whole argument list.
    if argv and argv[0] == "userspace":
        from wgpy import daemon

        return int(daemon.main(argv[1:]))
    if argv and argv[0] == "demo":
        from wgpy import demo

        return int(demo.main(argv[1:]))
    if argv and argv[0] == "conformance":
        from wgpy import conformance

        return int(conformance.main(argv[1:]))
    args = build_parser().parse_args(argv)
    status: int = args.func(args)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``wgpy`` console script; returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        return _dispatch(args)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (already printed)
        return exc.code if isinstance(exc.code, int) else 1
    except (CliError, ConfigError) as exc:
        _stderr(f"{PROG}: {exc}")
    except KeyboardInterrupt:
        _stderr(f"{PROG}: interrupted")
        return 130
    except BrokenPipeError:
        # Output closed early (e.g. piped into head): nothing more to say.
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115
        return 1
    except OSError as exc:
        _stderr(f"{PROG}: {exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else ""))
    except Exception as exc:  # never a traceback
        _stderr(f"{PROG}: internal error: {type(exc).__name__}: {exc}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
