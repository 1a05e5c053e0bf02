"""Soak test: a wgpy <-> wgpy tunnel under steady traffic for a long time.

    python -m bench.soak [--minutes 30] [--interval 10] [--bitrate 100M] [--json FILE]

Needs root, ``ip``, ``wg`` and ``iperf3``.  Two wgpy daemons run in their own
network namespaces (made and removed by :class:`wgpy.lab.Lab`), joined by a
veth, with real timers: nothing is faked.  An iperf3 TCP stream runs from A
to B for the whole duration (at ``--bitrate``, 0 = as fast as it goes) and
every ``--interval`` seconds the soak samples both daemons' RSS and CPU time
(/proc) and ``wg show dump`` (transfer counters, latest handshake).

Because A keeps sending, it starts a new handshake whenever its session is
older than REKEY_AFTER_TIME (120 s), so a 30-minute soak goes through about
15 rekeys; the soak checks they happen.

It fails (exit status 1, reasons on stderr and in the JSON) if

* traffic stalls: an interval in which B received no data from A, or A
  received nothing back (TCP acknowledgements);
* memory grows: the median RSS of a daemon over the last third of the run
  exceeds the median over the first third (after the first minute, or the
  first sample of a short run) by more than ``--rss-slack-mib`` (16), or by
  more than 2 MiB while the least-squares trend climbs faster than
  ``--rss-slope-mib-per-hour`` (4);
* rekeying stops: with at least 4 minutes of run, fewer handshakes than one
  per 130 s were seen, or two were more than 130 s apart (REKEY_AFTER_TIME
  plus REKEY_TIMEOUT and jitter, with sampling slack);
* a daemon or iperf3 died.

``--json FILE`` writes every sample and the verdict.  tests/test_load.py
runs a 30-second smoke of this script.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from wgpy.constants import REKEY_AFTER_TIME, REKEY_TIMEOUT, REKEY_TIMEOUT_JITTER_MAX
from wgpy.lab import Lab, Node

OUT_A, OUT_B = "192.168.243.1", "192.168.243.2"
IN_A, IN_B = "10.67.0.1", "10.67.0.2"
PORT_A, PORT_B = 51820, 51821
#: Longest allowed gap between two handshakes while traffic flows.
MAX_REKEY_GAP = REKEY_AFTER_TIME + REKEY_TIMEOUT + REKEY_TIMEOUT_JITTER_MAX + 4.7  # 130 s
#: RSS differences below this (KiB) are allocator noise, not a trend.
RSS_NOISE_KIB = 2048
#: Rekeys are only judged on runs at least this long.
REKEY_JUDGED_AFTER = 4 * 60.0


@dataclass
class Sample:
    """One observation of both daemons."""

    t: float
    rss_a_kib: int
    rss_b_kib: int
    cpu_a_s: float
    cpu_b_s: float
    rx_b: int  # bytes B received from A (wg show transfer)
    rx_a: int  # bytes A received from B
    handshake_a: int  # A's latest handshake with B, Unix seconds


@dataclass
class Verdict:
    """The outcome: ``ok`` and the reasons it is not."""

    ok: bool = True
    reasons: list[str] = field(default_factory=list)
    handshakes: int = 0
    max_handshake_gap_s: float = 0.0
    mbit_per_s: float = 0.0
    rss_slope_kib_per_hour: dict[str, int] = field(default_factory=dict)

    def fail(self, reason: str) -> None:
        self.ok = False
        self.reasons.append(reason)


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _sample(t0: float, a: Node, b: Node) -> Sample:
    (pa,), (pb,) = a.dump(), b.dump()
    return Sample(
        t=round(time.monotonic() - t0, 2),
        rss_a_kib=_rss_kib(a.proc.pid),
        rss_b_kib=_rss_kib(b.proc.pid),
        cpu_a_s=_cpu_s(a.proc.pid),
        cpu_b_s=_cpu_s(b.proc.pid),
        rx_b=pb.rx_bytes,
        rx_a=pa.rx_bytes,
        handshake_a=pa.latest_handshake,
    )


def judge(
    samples: list[Sample],
    seconds: float,
    rss_slack_kib: int,
    slope_limit_kib_per_hour: int = 4096,
) -> Verdict:
    """Apply the failure rules of the module docstring to the samples."""
    v = Verdict()
    if len(samples) < 3:
        v.fail(f"only {len(samples)} samples")
        return v
    for prev, cur in itertools.pairwise(samples):
        if cur.rx_b <= prev.rx_b:
            v.fail(f"stall: B received nothing between t={prev.t} and t={cur.t} s")
        if cur.rx_a <= prev.rx_a:
            v.fail(f"stall: A received nothing between t={prev.t} and t={cur.t} s")
    span = samples[-1].t - samples[0].t
    v.mbit_per_s = round((samples[-1].rx_b - samples[0].rx_b) * 8 / max(span, 1e-9) / 1e6, 1)
    # Memory: first third (after warm-up) against the last third, and the
    # trend: a steady climb is a leak even while it is still small.
    warm = [s for s in samples if s.t >= 60.0] if seconds >= 180 else samples[1:]
    third = max(1, len(warm) // 3)
    for name in ("a", "b"):
        rss = [getattr(s, f"rss_{name}_kib") for s in warm]
        first = statistics.median(rss[:third])
        last = statistics.median(rss[-third:])
        if last - first > rss_slack_kib:
            v.fail(f"memory: daemon {name.upper()} RSS grew from {first} to {last} KiB")
        elif last - first > RSS_NOISE_KIB and len(warm) >= 3:
            slope = statistics.linear_regression([s.t for s in warm], rss).slope * 3600
            v.rss_slope_kib_per_hour[name] = round(slope)
            if slope > slope_limit_kib_per_hour:
                v.fail(
                    f"memory: daemon {name.upper()} RSS climbs {slope / 1024:.1f} MiB/hour "
                    f"({first} -> {last} KiB)"
                )
    # Rekeys: distinct handshake times of the initiator.
    times = sorted({s.handshake_a for s in samples if s.handshake_a})
    v.handshakes = len(times)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    v.max_handshake_gap_s = float(max(gaps, default=0))
    if not times:
        v.fail("no handshake ever completed")
    if seconds >= REKEY_JUDGED_AFTER:
        want = int(seconds // MAX_REKEY_GAP)
        if v.handshakes < want:
            v.fail(f"rekeys: {v.handshakes} handshakes in {seconds:.0f} s, want >= {want}")
        if v.max_handshake_gap_s > MAX_REKEY_GAP:
            v.fail(f"rekeys: {v.max_handshake_gap_s:.0f} s between two handshakes")
    return v


def run(args: argparse.Namespace) -> tuple[Verdict, list[Sample]]:
    """Set up the lab, run traffic for the requested time, sample, judge."""
    seconds = args.minutes * 60.0
    samples: list[Sample] = []
    with Lab() as lab:
        ns_a, ns_b = lab.namespace("sa"), lab.namespace("sb")
        lab.veth(ns_a, ns_b, [f"{OUT_A}/24"], [f"{OUT_B}/24"])
        a, b = lab.start(ns_a, "wgpy"), lab.start(ns_b, "wgpy")
        a.configure(PORT_A, address=[f"{IN_A}/24"])
        b.configure(PORT_B, address=[f"{IN_B}/24"])
        a.add_peer(b, allowed_ips=[f"{IN_B}/32"], endpoint=f"{OUT_B}:{PORT_B}")
        b.add_peer(a, allowed_ips=[f"{IN_A}/32"], endpoint=f"{OUT_A}:{PORT_A}")
        if not a.ping(IN_B, timeout=10):
            v = Verdict()
            v.fail("the tunnel did not come up")
            return v, samples
        server = lab.popen(ns_b, "iperf3", "-s", "-B", IN_B)
        time.sleep(0.5)
        client_argv = ["iperf3", "-c", IN_B, "-t", str(int(seconds) + 5), "-i", "0"]
        if args.bitrate != "0":
            client_argv += ["-b", args.bitrate]
        client = lab.popen(ns_a, *client_argv)
        t0 = time.monotonic()
        time.sleep(min(args.interval, 2.0))
        verdict = Verdict()
        while True:
            if not (a.alive() and b.alive()):
                verdict.fail("a daemon exited")
                break
            if client.poll() is not None:
                verdict.fail(f"iperf3 ended early: {lab.output(client)[-300:]}")
                break
            samples.append(_sample(t0, a, b))
            s = samples[-1]
            print(
                f"[soak] t={s.t:7.1f}s rss A/B {s.rss_a_kib}/{s.rss_b_kib} KiB "
                f"cpu A/B {s.cpu_a_s:.0f}/{s.cpu_b_s:.0f} s rx B {s.rx_b >> 20} MiB "
                f"handshake {s.handshake_a}",
                file=sys.stderr,
                flush=True,
            )
            if s.t >= seconds:
                break
            time.sleep(max(0.0, min(args.interval, seconds - s.t)))
        lab.stop_process(client)
        lab.stop_process(server)
    judged = judge(samples, seconds, args.rss_slack_mib * 1024, args.rss_slope_mib_per_hour * 1024)
    verdict.reasons += judged.reasons
    verdict.ok = verdict.ok and judged.ok
    verdict.handshakes = judged.handshakes
    verdict.max_handshake_gap_s = judged.max_handshake_gap_s
    verdict.mbit_per_s = judged.mbit_per_s
    verdict.rss_slope_kib_per_hour = judged.rss_slope_kib_per_hour
    return verdict, samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--minutes", type=float, default=30.0, help="duration (default 30)")
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--bitrate", default="100M", help="iperf3 -b value; 0 = unlimited")
    parser.add_argument("--rss-slack-mib", type=int, default=16, help="allowed RSS growth")
    parser.add_argument(
        "--rss-slope-mib-per-hour", type=int, default=4, help="allowed steady RSS climb"
    )
    parser.add_argument("--json", help="write samples and verdict to this file")
    args = parser.parse_args(argv)
    missing = [t for t in ("ip", "wg", "iperf3") if shutil.which(t) is None]
    if os.geteuid() != 0 or missing:
        print(f"soak: needs root and {', '.join(missing) or 'ip, wg, iperf3'}", file=sys.stderr)
        return 2
    verdict, samples = run(args)
    result: dict[str, Any] = {
        "minutes": args.minutes,
        "bitrate": args.bitrate,
        "verdict": asdict(verdict),
        "samples": [asdict(s) for s in samples],
    }
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1)
    summary = (
        f"soak {'PASSED' if verdict.ok else 'FAILED'}: {len(samples)} samples, "
        f"{verdict.handshakes} handshakes (max gap {verdict.max_handshake_gap_s:.0f} s), "
        f"{verdict.mbit_per_s} Mbit/s"
    )
    print(summary)
    for reason in verdict.reasons:
        print(f"  - {reason}", file=sys.stderr)
    return 0 if verdict.ok else 1


if __name__ == "__main__":
    sys.exit(main())
