"""``python -m bench``: set everything up, measure every figure round-robin
across the subjects, and write JSON, Markdown and PNG charts."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from bench import netfigs, report, sansio
from bench.topology import (
    IMPL_NAMES,
    PAIRS,
    REPO_ROOT,
    KernelVM,
    Pair,
    import_kernel_peer,
    kernel_vm,
    start_kernel_pair,
    start_userspace_pair,
)
from bench.util import GROUPS, Progress, Results, Run, wait_idle
from wgpy.lab import (
    WIREGUARD_GO_MODERN,
    WIREGUARD_GO_MODERN_ENV,
    Lab,
    LabError,
    find_wireguard_go_modern,
)

__all__ = ["Settings", "main", "parse_args"]


@dataclass
class Settings:
    """Sizes and durations of one harness run (``--quick`` shrinks them)."""

    repeat: int = 3
    seconds: float = 5.0  # iperf3 TCP/UDP run length
    ping_count: int = 500  # pings every 10 ms
    peers: int = 10_000  # memory figure
    prefixes: int = 100_000  # allowed-IPs figure
    lookup_seconds: float = 2.0
    hs_seconds: float = 3.0  # sans-IO loop and wire window
    hs_identities: int = 100
    idle_wait: float = 20.0
    idle_threshold: float = 8.0

    @classmethod
    def quick(cls) -> Settings:
        """Short runs, one repeat: checks the harness, measures little."""
        return cls(
            repeat=1,
            seconds=1.0,
            ping_count=30,
            peers=500,
            prefixes=5_000,
            lookup_seconds=0.2,
            hs_seconds=0.5,
            hs_identities=8,
            idle_wait=1.0,
        )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line (see bench/README.md)."""
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark wgpy against wireguard-go and the in-kernel WireGuard "
        "in network namespaces (needs root).",
    )
    p.add_argument("--quick", action="store_true", help="short runs, 1 repeat (smoke test)")
    p.add_argument("--repeat", type=int, help="repeats per figure (default 3; --quick: 1)")
    p.add_argument(
        "--only",
        help="comma-separated groups to run: " + ",".join(GROUPS) + " (default: all)",
    )
    p.add_argument(
        "--pairs", help="comma-separated tunnels: " + ",".join(PAIRS) + " (default: all)"
    )
    p.add_argument("--out", type=Path, help="output directory (default bench/results/<time>/)")
    p.add_argument("--no-kernel", action="store_true", help="skip the in-kernel WireGuard VM")
    p.add_argument(
        "--wireguard-go-modern",
        type=Path,
        metavar="PATH",
        help=f"the {WIREGUARD_GO_MODERN} binary, the main anchor (default: "
        f"${WIREGUARD_GO_MODERN_ENV}, else ../shared/tools/bin/, else PATH)",
    )
    p.add_argument(
        "--kernel-backend",
        choices=("auto", "uml", "qemu"),
        default="auto",
        help="how to run the kernel peer (auto: UML if built, else qemu)",
    )
    p.add_argument("--profile", action="store_true", help="py-spy profile of wgpy during TCP")
    p.add_argument("--seconds", type=float, help="iperf3 run length (default 5; --quick: 1)")
    p.add_argument("--peers", type=int, help="peers for the memory figure (default 10000)")
    p.add_argument("--prefixes", type=int, help="prefixes for the lookup figure (default 100000)")
    p.add_argument("--idle-wait", type=float, help="max seconds to wait for an idle machine")
    p.add_argument("--idle-threshold", type=float, help="busy %% below which it counts as idle")
    p.add_argument("--no-progress", action="store_true", help="no progress line on stderr")
    p.add_argument(
        "--report",
        type=Path,
        metavar="DIR",
        help="measure nothing: rewrite DIR/results.md and the charts from DIR/results.json",
    )
    return p.parse_args(argv)


def _split(value: str | None, allowed: Sequence[str], what: str) -> list[str]:
    if not value:
        return list(allowed)
    items = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in items if v not in allowed]
    if bad:
        raise SystemExit(f"unknown {what}: {', '.join(bad)} (choose from {', '.join(allowed)})")
    return [a for a in allowed if a in items]


def _settings(args: argparse.Namespace) -> Settings:
    s = Settings.quick() if args.quick else Settings()
    for name in ("repeat", "seconds", "peers", "prefixes", "idle_wait", "idle_threshold"):
        value = getattr(args, name)
        if value is not None:
            setattr(s, name, value)
    if s.repeat < 1:
        raise SystemExit("--repeat must be at least 1")
    return s


def _cmd_version(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return (
        (done.stdout or done.stderr).strip().splitlines()[0] if done.stdout or done.stderr else "?"
    )


def _meta(args: argparse.Namespace, settings: Settings, modern: str | None) -> dict[str, Any]:
    cpu_model = "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    try:
        import cryptography

        crypto = cryptography.__version__
    except ImportError:  # pragma: no cover - a hard dependency of wgpy
        crypto = "?"
    commit = _cmd_version(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {
        "started": dt.datetime.now().isoformat(timespec="seconds"),
        "argv": sys.argv[1:],
        "settings": vars(settings),
        "cpu_model": cpu_model,
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "cryptography": crypto,
        "wireguard_go": _cmd_version(["wireguard-go", "--version"]),
        "wireguard_go_modern": _modern_version(modern),
        "iperf3": _cmd_version(["iperf3", "--version"]),
        "wgpy_commit": commit + ("+dirty" if dirty else ""),
        "loadavg_start": _loadavg(),
    }


def _loadavg() -> str:
    with open("/proc/loadavg") as fh:
        return " ".join(fh.read().split()[:3])


def _modern_version(path: str | None) -> str:
    if path is None:
        return f"{WIREGUARD_GO_MODERN}: not found"
    return f"{_cmd_version([path, '--version'])} ({path})"


def _missing_tools(pairs: list[str], modern: str | None) -> list[str]:
    need = ["ip", "wg", "iperf3", "ping"]
    if any("go" in PAIRS[p] for p in pairs):
        need.append("wireguard-go")
    missing = [t for t in need if shutil.which(t) is None]
    if any("gomod" in PAIRS[p] for p in pairs) and modern is None:
        missing.append(WIREGUARD_GO_MODERN)
    return missing


def _default_pairs(args: argparse.Namespace, modern: str | None) -> list[str]:
    """The pairs to run.  Without ``--pairs`` and without the modern
    wireguard-go, its pairs are left out with a clear message, and ratios
    fall back to Debian's build (the report says which anchor it used)."""
    if args.pairs:
        return _split(args.pairs, list(PAIRS), "pair")
    if modern is not None:
        return list(PAIRS)
    print(
        f"{WIREGUARD_GO_MODERN} not found (put it in ../shared/tools/bin/, set "
        f"${WIREGUARD_GO_MODERN_ENV} or pass --wireguard-go-modern): its pairs are "
        "skipped and ratios are against Debian's wireguard-go, which predates the "
        "offloads",
        file=sys.stderr,
    )
    return [p for p in PAIRS if "gomod" not in PAIRS[p]]


class _Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C so every context manager cleans up."""


def _on_sigterm(_signum: int, _frame: FrameType | None) -> None:
    raise _Terminated()


class Harness:
    """Runs the plan and fills :attr:`results`."""

    def __init__(
        self,
        args: argparse.Namespace,
        settings: Settings,
        out_dir: Path,
        pairs: list[str] | None = None,
        modern: str | None = None,
    ) -> None:
        self.args = args
        self.s = settings
        self.out_dir = out_dir
        self.groups = _split(args.only, GROUPS, "group")
        self.pair_names = list(pairs) if pairs is not None else _default_pairs(args, modern)
        if args.no_kernel:
            self.pair_names = [p for p in self.pair_names if "kernel" not in PAIRS[p]]
        self.results = Results(meta=_meta(args, settings, modern))
        self.pairs: dict[str, Pair] = {}
        self.kvm: KernelVM | None = None
        self.progress = Progress(1, enabled=not args.no_progress)
        self._lookup_tables: dict[int, sansio.LookupTable] = {}

    # -- plan ---------------------------------------------------------------------

    def _impls(self) -> list[str]:
        """Implementations in the selected pairs, for the per-implementation figures."""
        names: dict[str, None] = {}
        for p in self.pair_names:
            for side in PAIRS[p]:
                names[IMPL_NAMES[side]] = None
        return [i for i in report.IMPL_ORDER if i in names]

    def _steps(self, group: str) -> list[tuple[str, Callable[[int], None]]]:
        """(label, function of the repeat index) for one group."""
        steps: list[tuple[str, Callable[[int], None]]] = []
        if group == "hs-sansio":
            steps.append(("sans-IO handshakes (wgpy)", self._hs_sansio))
        elif group == "lookups":
            for bits in (32, 128):
                steps.append(
                    (f"allowed-IPs lookups IPv{4 if bits == 32 else 6}", self._lookup(bits))
                )
        elif group == "memory":
            for impl in self._impls():
                if impl != "kernel":
                    steps.append((f"memory per peer {impl}", self._memory(impl)))
        elif group == "hs-wire":
            for impl in self._impls():
                steps.append((f"handshakes over the wire {impl}", self._hs_wire(impl)))
        else:
            for name in self.pair_names:
                if group == "tcp":
                    for rev in (False, True):
                        label = f"TCP {'B→A' if rev else 'A→B'} {name}"
                        steps.append((label, self._tcp(name, rev)))
                elif group == "udp":
                    for size in (64, 1420):
                        steps.append((f"UDP {size} B {name}", self._udp(name, size)))
                elif group == "ping":
                    for load in (False, True):
                        label = f"ping {'under load' if load else 'idle'} {name}"
                        steps.append((label, self._ping(name, load)))
        return steps

    # -- running ------------------------------------------------------------------

    def run(self) -> None:
        """Set up the tunnels, then every repeat of every selected group."""
        needs_pairs = any(g in self.groups for g in ("tcp", "udp", "ping"))
        kernel_wanted = any("kernel" in PAIRS[p] for p in self.pair_names) and (
            needs_pairs or "hs-wire" in self.groups
        )
        userspace = [p for p in self.pair_names if "kernel" not in PAIRS[p]] if needs_pairs else []
        setup = len(userspace) + (1 if kernel_wanted else 0)
        per_repeat = sum(len(self._steps(g)) for g in self.groups)
        self.progress.total = setup + per_repeat * self.s.repeat + (1 if self.args.profile else 0)
        with contextlib.ExitStack() as stack:
            lab = stack.enter_context(Lab())
            self.lab = lab
            for name in userspace:
                self.progress.step(f"setting up {name}")
                try:
                    self.pairs[name] = start_userspace_pair(lab, name)
                except Exception as exc:
                    self._drop_pair(name, f"setup failed: {exc}")
            if kernel_wanted:
                self.progress.step("booting the in-kernel WireGuard VM")
                self._boot_kernel(stack, lab, needs_pairs)
            elif any("kernel" in PAIRS[p] for p in self.pair_names) or self.args.no_kernel:
                self.results.meta["kernel_peer"] = {"ran": False, "reason": "--no-kernel"}
            namespaces = self.results.meta.setdefault("namespaces", [])
            namespaces.extend(lab.namespaces)
            if self.kvm is not None:
                namespaces.append(self.kvm.netns)
            for rep in range(self.s.repeat):
                for group in self.groups:
                    for label, fn in self._steps(group):
                        self.progress.step(f"{label} (repeat {rep + 1}/{self.s.repeat})")
                        fn(rep)
            if self.args.profile:
                self.progress.step("profiling wgpy during TCP")
                self._profile()

    def _drop_pair(self, name: str, why: str) -> None:
        self.results.notes.append(f"{name}: {why}")
        self.progress.message(f"{name}: {why}")
        if name in self.pair_names:
            self.pair_names.remove(name)

    def _boot_kernel(self, stack: contextlib.ExitStack, lab: Lab, needs_pairs: bool) -> None:
        kp = import_kernel_peer()
        sides = [PAIRS[p][0] for p in self.pair_names if "kernel" in PAIRS[p]]
        try:
            self.kvm = stack.enter_context(kernel_vm(sides, self.args.kernel_backend))
        except (kp.KernelPeerUnavailable, kp.KernelPeerError) as exc:
            self.results.meta["kernel_peer"] = {"ran": False, "reason": str(exc)}
            for name in [p for p in self.pair_names if "kernel" in PAIRS[p]]:
                self._drop_pair(name, f"kernel VM unavailable: {exc}")
            return
        self.results.meta["kernel_peer"] = {
            "ran": True,
            "description": self.kvm.description,
            **self.kvm.info,
        }
        self.progress.message(f"kernel peer: {self.kvm.description}, {self.kvm.info}")
        if needs_pairs:
            for name in [p for p in self.pair_names if "kernel" in PAIRS[p]]:
                try:
                    self.pairs[name] = start_kernel_pair(lab, self.kvm, name)
                except Exception as exc:
                    self._drop_pair(name, f"setup failed: {exc}")

    def _measure(
        self,
        figures: list[tuple[str, str]],
        subject: str,
        rep: int,
        body: Callable[[], dict[str, Any]],
        idle: bool = True,
        warm: Pair | None = None,
    ) -> None:
        """Wait for idle, run ``body``, record one Run per (figure, result key).
        With ``warm``, the tunnel gets a session (a few pings) first."""
        state = (
            wait_idle(self.s.idle_wait, self.s.idle_threshold, progress=self.progress)
            if idle
            else None
        )
        self.progress.show("measuring")
        try:
            if warm is not None:
                netfigs.warm_up(warm)
            extra = body()
        except Exception as exc:  # one failed run must not end the harness
            msg = f"{type(exc).__name__}: {exc}"
            for fig, _ in figures:
                self.results.add(Run(fig, subject, rep, None, error=msg))
            self.progress.message(f"{subject}: {msg}")
            return
        self.results.meta.setdefault("namespaces", []).extend(extra.get("namespaces", []))
        for fig, key in figures:
            value = extra.get(key)
            self.results.add(
                Run(
                    fig,
                    subject,
                    rep,
                    None if value is None else float(value),
                    idle=None if state is None else state.idle,
                    busy_before=None if state is None else round(state.busy, 1),
                    extra=extra,
                )
            )

    def _hs_sansio(self, rep: int) -> None:
        def body() -> dict[str, Any]:
            with sansio.pinned() as cpu:
                rate, n = sansio.handshakes_per_second(self.s.hs_seconds)
            return {"rate": rate, "handshakes": n, "cpu": cpu}

        self._measure([("hs_sansio", "rate")], "wgpy", rep, body)

    def _lookup(self, bits: int) -> Callable[[int], None]:
        def fn(rep: int) -> None:
            if bits not in self._lookup_tables:  # built once, reused by every repeat
                self.progress.show(f"inserting {self.s.prefixes:,} prefixes")
                self._lookup_tables[bits] = sansio.LookupTable(self.s.prefixes, bits)
            table = self._lookup_tables[bits]

            def body() -> dict[str, Any]:
                rate, n = table.run(self.s.lookup_seconds)
                return {"rate": rate, "lookups": n, "prefixes": table.size}

            self._measure([(f"lookups_v{4 if bits == 32 else 6}", "rate")], "wgpy", rep, body)

        return fn

    def _memory(self, impl: str) -> Callable[[int], None]:
        def fn(rep: int) -> None:
            self._measure(
                [("mem_per_peer", "bytes_per_peer")],
                impl,
                rep,
                lambda: netfigs.memory_run(impl, self.s.peers),
                idle=False,
            )

        return fn

    def _hs_wire(self, impl: str) -> Callable[[int], None]:
        def fn(rep: int) -> None:
            if impl == "kernel" and self.kvm is None:
                return
            ids = min(self.s.hs_identities, 150) if impl == "kernel" else self.s.hs_identities
            self._measure(
                [("hs_wire", "rate")],
                impl,
                rep,
                lambda: netfigs.hs_wire_run(impl, ids, self.s.hs_seconds, self.kvm),
            )

        return fn

    def _pair(self, name: str) -> Pair | None:
        return self.pairs.get(name)

    def _tcp(self, name: str, reverse: bool) -> Callable[[int], None]:
        def fn(rep: int) -> None:
            pair = self._pair(name)
            if pair is None:
                return
            fig, cpu = ("tcp_rev", "cpu_rev") if reverse else ("tcp_fwd", "cpu_fwd")
            self._measure(
                [(fig, "mbps"), (cpu, "cpu_s_per_gb")],
                name,
                rep,
                lambda: netfigs.tcp_run(self.lab, pair, self.s.seconds, reverse),
                warm=pair,
            )

        return fn

    def _udp(self, name: str, size: int) -> Callable[[int], None]:
        def fn(rep: int) -> None:
            pair = self._pair(name)
            if pair is None:
                return
            self._measure(
                [(f"udp{size}_pps", "kpps"), (f"udp{size}_loss", "loss_pct")],
                name,
                rep,
                lambda: netfigs.udp_run(self.lab, pair, size, self.s.seconds),
                warm=pair,
            )

        return fn

    def _ping(self, name: str, load: bool) -> Callable[[int], None]:
        def fn(rep: int) -> None:
            pair = self._pair(name)
            if pair is None:
                return
            kind = "load" if load else "idle"
            self._measure(
                [(f"ping_{kind}_p50", "p50"), (f"ping_{kind}_p99", "p99")],
                name,
                rep,
                lambda: netfigs.ping_run(self.lab, pair, self.s.ping_count, load),
                warm=pair,
            )

        return fn

    def _profile(self) -> None:
        candidates = [p for p in ("wgpy-wgpy", "wgpy-go", "wgpy-kernel") if p in self.pairs]
        if not candidates:
            self.results.notes.append("--profile: no running pair has a wgpy end")
            return
        if shutil.which("py-spy") is None:
            self.progress.show("installing py-spy")
            subprocess.run(
                [sys.executable, "-m", "pip", "install", "-q", "py-spy"],
                capture_output=True,
                check=False,
            )
        pair = self.pairs[candidates[0]]
        try:
            netfigs.warm_up(pair)
            files = netfigs.profile_run(self.lab, pair, max(self.s.seconds, 5.0), self.out_dir)
        except Exception as exc:
            self.results.notes.append(f"--profile failed: {exc}")
            return
        self.results.meta["profile"] = files
        self.results.notes.append(f"profile of {pair.name} (TCP A→B): " + ", ".join(files))


def _write_outputs(res: Results, out_dir: Path) -> None:
    report.write_json(res, out_dir / "results.json")
    text = report.write_markdown(res, out_dir / "results.md")
    try:
        charts = report.write_charts(res, out_dir)
    except ImportError:
        charts = []
        print("matplotlib missing: no charts (pip install -e .[bench])", file=sys.stderr)
    print(text)
    names = "".join(f", {p.name}" for p in charts)
    print(f"\nwritten to {out_dir}: results.json, results.md{names}")


def _rerender(out_dir: Path) -> int:
    """``--report DIR``: the tables and charts again from the raw runs."""
    try:
        doc = json.loads((out_dir / "results.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        print(f"cannot read {out_dir / 'results.json'}: {exc}", file=sys.stderr)
        return 2
    _write_outputs(Results.from_json(doc), out_dir)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m bench``."""
    args = parse_args(argv)
    if args.report is not None:
        return _rerender(args.report)
    settings = _settings(args)
    if args.wireguard_go_modern is not None:
        os.environ[WIREGUARD_GO_MODERN_ENV] = str(args.wireguard_go_modern.resolve())
    try:
        # Found once; the lab then starts exactly this binary (the variable).
        modern = find_wireguard_go_modern()
    except LabError as exc:  # the variable names no executable
        print(exc, file=sys.stderr)
        return 2
    if modern is not None:
        os.environ[WIREGUARD_GO_MODERN_ENV] = modern
    harness_pairs = _default_pairs(args, modern)
    missing = _missing_tools(harness_pairs, modern)
    if os.geteuid() != 0:
        print("python -m bench needs root (network namespaces, TUN devices)", file=sys.stderr)
        return 2
    if missing:
        print(f"missing tools: {', '.join(missing)}", file=sys.stderr)
        return 2
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out_dir = args.out or REPO_ROOT / "bench" / "results" / stamp
    out_dir.mkdir(parents=True, exist_ok=True)
    harness = Harness(args, settings, out_dir, harness_pairs, modern)
    old = signal.signal(signal.SIGTERM, _on_sigterm)
    status = 0
    t0 = time.monotonic()
    try:
        harness.run()
    except KeyboardInterrupt:
        harness.results.notes.append("interrupted: results are partial")
        status = 130
    finally:
        signal.signal(signal.SIGTERM, old)
        harness.progress.finish()
        res = harness.results
        res.meta["loadavg_end"] = _loadavg()
        res.meta["duration_s"] = round(time.monotonic() - t0, 1)
        _write_outputs(res, out_dir)
    return status
