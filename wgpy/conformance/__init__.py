"""``wgpy conformance``: test another WireGuard implementation against the
protocol with a strict, scripted peer.

The runner (:class:`Runner`) is a raw UDP socket plus wgpy's Noise building
blocks.  It runs named scenarios (:data:`SCENARIOS`) against a target given
by its public key and endpoint and reports PASS/FAIL/SKIP for each, with a
trace of what the target did, as a terminal table, JSON and JUnit XML.  The
exit status is non-zero if any scenario failed.

With ``--setup-uapi IFACE`` (or ``--setup-nt NAME``) the runner configures the
target itself: its own key as the target's peer, allowed IPs, endpoint, PSK
and keepalive, reset between scenarios.  Without one, configure the target
yourself with the runner's key (``--our-private-key``), its tunnel IP in
allowed IPs, and (for the responder scenarios) its endpoint (``--listen``).

Python use::

    from wgpy.conformance import Runner, RunnerConfig, select
    with Runner(RunnerConfig(target_endpoint="10.0.0.2:51820", ...), control) as r:
        results = r.run(select())
"""

from __future__ import annotations

import argparse
import datetime
import sys
from collections.abc import Sequence
from typing import Any

from wgpy.keys import decode_key, encode_key

from .control import ControlError, NtControl, PeerSpec, TargetControl, UapiControl
from .report import (
    counts,
    format_row,
    format_table,
    header,
    to_markdown,
    write_json,
    write_junit,
)
from .runner import Failed, Result, Runner, RunnerConfig, Scenario, Skipped, Status
from .scenarios import LOW_ORDER_POINTS, SCENARIOS, scenario, select

__all__ = [
    "LOW_ORDER_POINTS",
    "SCENARIOS",
    "ControlError",
    "Failed",
    "NtControl",
    "PeerSpec",
    "Result",
    "Runner",
    "RunnerConfig",
    "Scenario",
    "Skipped",
    "Status",
    "TargetControl",
    "UapiControl",
    "build_parser",
    "main",
    "run",
    "scenario",
    "select",
]

PROG = "wgpy conformance"


def _read_key(path: str, what: str) -> bytes:
    try:
        with open(path, encoding="ascii") as fh:
            return decode_key(fh.read().strip())
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{what} {path}: {exc}") from None


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``wgpy conformance``."""
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Test a WireGuard implementation with a strict, scripted peer.",
        epilog="Exit status: 0 if nothing failed, 1 if a scenario failed or errored, "
        "2 on a usage error.",
    )
    t = p.add_argument_group("target")
    t.add_argument("--target-endpoint", metavar="IP:PORT", help="the target's UDP endpoint")
    t.add_argument("--target-public-key", metavar="KEY", help="base64 (default: from setup)")
    t.add_argument("--target-tunnel-ip", metavar="ADDR", help="an address of the target's tunnel")
    t.add_argument("--target-mtu", type=int, default=1420, metavar="N", help="default 1420")
    t.add_argument("--label", default=None, help="name of the target in reports")
    s = t.add_mutually_exclusive_group()
    s.add_argument("--setup-uapi", metavar="IFACE|PATH", help="configure the target through UAPI")
    s.add_argument("--setup-nt", metavar="NAME", help="configure it through wireguard.h")
    o = p.add_argument_group("runner")
    o.add_argument("--our-private-key", metavar="FILE", help="runner's key (default: random)")
    o.add_argument("--psk", metavar="FILE", help="preshared key of the base configuration")
    o.add_argument("--our-tunnel-ip", metavar="ADDR", help="runner's address inside the tunnel")
    o.add_argument("--listen", metavar="ADDR", help="bind: IP, IP:PORT or :PORT")
    o.add_argument("--roam-bind", metavar="IP", help="local IP of the roaming socket")
    o.add_argument("--timeout-scale", type=float, default=1.0, metavar="F")
    o.add_argument(
        "--udp-echo",
        type=int,
        metavar="PORT",
        help="probe with UDP to this port of the target's tunnel IP (it must echo) "
        "instead of ICMP echo",
    )
    r = p.add_argument_group("scenarios and output")
    r.add_argument(
        "--scenario", action="append", default=[], metavar="NAME", help="repeatable or a,b,c"
    )
    r.add_argument(
        "--long",
        action="store_true",
        help="also the long scenarios (rekey, give-up, reject-after-time)",
    )
    r.add_argument("--list", action="store_true", help="list the scenarios and exit")
    r.add_argument("--json", metavar="FILE", help="write results as JSON ('-': stdout)")
    r.add_argument("--junit", metavar="FILE", help="write results as JUnit XML")
    r.add_argument("--markdown", metavar="FILE", help="write results as a Markdown table")
    r.add_argument(
        "--pcap",
        metavar="DIR",
        help="write each scenario's datagrams to DIR/NN-NAME.pcapng, with the runner's "
        "handshake keys inside (Wireshark decrypts it as it opens; the file is a secret)",
    )
    r.add_argument("-v", "--verbose", action="store_true", help="print every scenario's trace")
    return p


def _list() -> int:
    for sc in SCENARIOS.values():
        tags = [
            t for t, on in (("tunnel", sc.tunnel), ("setup", sc.control), ("long", sc.long)) if on
        ]
        print(f"{sc.name:<22} {'[' + ','.join(tags) + ']' if tags else '':<16} {sc.description}")
    return 0


def run(
    config: RunnerConfig,
    scenarios: Sequence[Scenario],
    control: TargetControl | None = None,
    **runner_kwargs: Any,
) -> tuple[list[Result], dict[str, Any]]:
    """Run ``scenarios`` against a target; returns the results and the
    metadata the reports carry."""
    started = datetime.datetime.now(datetime.UTC)
    with Runner(config, control, **runner_kwargs) as runner:
        meta: dict[str, Any] = {
            "tool": "wgpy conformance",
            "date": started.isoformat(timespec="seconds"),
            "target": {
                "label": config.label,
                "endpoint": config.target_endpoint,
                "public_key": encode_key(runner.target_public),
                "control": control.name if control is not None else None,
                "tunnel_ip": config.target_tunnel_ip,
                "mtu": config.target_mtu,
            },
            "runner": {
                "public_key": encode_key(runner.our_public),
                "endpoint": runner.local_endpoint("main"),
                "tunnel_ip": config.our_tunnel_ip,
                "psk": config.psk is not None,
            },
        }
        results = runner.run(scenarios)
    return results, meta


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``wgpy conformance``; returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.list:
        return _list()
    if not args.target_endpoint:
        print(f"{PROG}: --target-endpoint is required", file=sys.stderr)
        return 2
    names = [n for item in args.scenario for n in item.split(",") if n]
    try:
        scenarios = select(names, long=args.long)
    except ValueError as exc:
        print(f"{PROG}: {exc} (see --list)", file=sys.stderr)
        return 2
    try:
        target_key = decode_key(args.target_public_key) if args.target_public_key else None
    except ValueError as exc:
        print(f"{PROG}: --target-public-key: {exc}", file=sys.stderr)
        return 2
    control: TargetControl | None = None
    try:
        if args.setup_uapi:
            control = UapiControl(args.setup_uapi)
        elif args.setup_nt:
            control = NtControl(args.setup_nt)
    except ControlError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    try:
        our_key = (
            _read_key(args.our_private_key, "--our-private-key") if args.our_private_key else None
        )
        psk = _read_key(args.psk, "--psk") if args.psk else None
    except ValueError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    config = RunnerConfig(
        target_endpoint=args.target_endpoint,
        target_public_key=target_key,
        our_private_key=our_key,
        psk=psk,
        target_tunnel_ip=args.target_tunnel_ip,
        our_tunnel_ip=args.our_tunnel_ip,
        listen=args.listen,
        roam_bind=args.roam_bind,
        target_mtu=args.target_mtu,
        timeout_scale=args.timeout_scale,
        udp_echo_port=args.udp_echo,
        pcap_dir=args.pcap,
        label=args.label or args.setup_uapi or args.setup_nt or args.target_endpoint,
    )
    out = sys.stderr if args.json == "-" else sys.stdout

    def progress(result: Result) -> None:
        print(format_row(result), file=out, flush=True)
        if args.verbose or result.status in (Status.FAIL, Status.ERROR):
            for line in result.details:
                print(f"      {line}", file=out)

    print(f"wgpy conformance against {config.label} ({config.target_endpoint})", file=out)
    print(header(), file=out, flush=True)
    try:
        results, meta = run(config, scenarios, control, progress=progress)
    except (ValueError, ControlError, OSError) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    print(format_table(results, title="\nsummary"), file=out)
    if args.json == "-":
        write_json(sys.stdout, results, meta)
    elif args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            write_json(fh, results, meta)
    if args.junit:
        write_junit(args.junit, results, meta)
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as fh:
            fh.write(to_markdown(results, meta))
    c = counts(results)
    return 1 if c["FAIL"] or c["ERROR"] else 0


if __name__ == "__main__":
    sys.exit(main())
