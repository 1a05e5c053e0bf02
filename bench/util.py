"""Shared pieces of the benchmark harness: the result store, statistics,
the progress line, machine-idle waiting and per-process CPU/RSS accounting."""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, TextIO

__all__ = [
    "FIGURES",
    "Figure",
    "IdleState",
    "Progress",
    "Results",
    "Run",
    "cpu_seconds",
    "descendants",
    "percentile",
    "rss_bytes",
    "wait_idle",
]

_CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Figure:
    """One measured quantity: how to label it and which way is better."""

    key: str
    title: str
    unit: str
    higher_is_better: bool
    #: "pair" (a tunnel between two implementations), "impl" (one
    #: implementation) or "wgpy" (wgpy-only, in-process).
    scope: str
    #: The --only group that produces it.
    group: str


#: Every figure the harness can produce, in table order.
FIGURES: dict[str, Figure] = {
    f.key: f
    for f in (
        Figure("tcp_fwd", "TCP throughput A→B", "Mbit/s", True, "pair", "tcp"),
        Figure("tcp_rev", "TCP throughput B→A", "Mbit/s", True, "pair", "tcp"),
        Figure("cpu_fwd", "CPU per GB, TCP A→B", "CPU-s/GB", False, "pair", "tcp"),
        Figure("cpu_rev", "CPU per GB, TCP B→A", "CPU-s/GB", False, "pair", "tcp"),
        Figure("udp64_pps", "UDP 64 B received", "kpps", True, "pair", "udp"),
        Figure("udp64_loss", "UDP 64 B loss", "%", False, "pair", "udp"),
        Figure("udp1420_pps", "UDP 1420 B received", "kpps", True, "pair", "udp"),
        Figure("udp1420_loss", "UDP 1420 B loss", "%", False, "pair", "udp"),
        Figure("ping_idle_p50", "ping RTT p50, no load", "ms", False, "pair", "ping"),
        Figure("ping_idle_p99", "ping RTT p99, no load", "ms", False, "pair", "ping"),
        Figure("ping_load_p50", "ping RTT p50, under TCP load", "ms", False, "pair", "ping"),
        Figure("ping_load_p99", "ping RTT p99, under TCP load", "ms", False, "pair", "ping"),
        Figure("hs_wire", "handshakes/s over the wire (responder)", "1/s", True, "impl", "hs-wire"),
        Figure("mem_per_peer", "memory per idle peer", "bytes", False, "impl", "memory"),
        Figure(
            "hs_sansio", "full handshakes/s, sans-IO, one core", "1/s", True, "wgpy", "hs-sansio"
        ),
        Figure("lookups_v4", "allowed-IPs lookups/s, IPv4", "1/s", True, "wgpy", "lookups"),
        Figure("lookups_v6", "allowed-IPs lookups/s, IPv6", "1/s", True, "wgpy", "lookups"),
    )
}

#: The --only groups, in the order they run.
GROUPS = ("hs-sansio", "lookups", "memory", "hs-wire", "tcp", "udp", "ping")


@dataclass
class Run:
    """One repeat of one figure for one subject (a pair or an implementation)."""

    figure: str
    subject: str
    repeat: int
    value: float | None
    #: Whether the machine was idle when the run started (None: not checked).
    idle: bool | None = None
    #: Busy share of all CPUs (percent) just before the run.
    busy_before: float | None = None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Results:
    """Everything one harness run produced, serialisable to JSON."""

    meta: dict[str, Any] = field(default_factory=dict)
    runs: list[Run] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, run: Run) -> Run:
        """Record a run."""
        self.runs.append(run)
        return run

    def values(self, figure: str, subject: str) -> list[Run]:
        """The runs of one figure and subject that produced a value."""
        return [
            r
            for r in self.runs
            if r.figure == figure and r.subject == subject and r.value is not None
        ]

    def subjects(self, figure: str) -> list[str]:
        """Subjects with at least one run of ``figure``, in first-seen order."""
        seen: dict[str, None] = {}
        for r in self.runs:
            if r.figure == figure:
                seen[r.subject] = None
        return list(seen)

    def summary(self, figure: str, subject: str) -> dict[str, Any] | None:
        """Median, min and max of a figure's runs.

        Runs that started on a busy machine are left out when at least one
        run started idle; otherwise all runs count and ``non_idle`` says so.
        ``n`` is the number of runs used, ``runs`` the number with a value,
        ``median_all`` the median over all of them.
        """
        runs = self.values(figure, subject)
        if not runs:
            return None
        idle = [r for r in runs if r.idle is not False]
        used = idle or runs
        vals = [float(r.value) for r in used if r.value is not None]
        every = [float(r.value) for r in runs if r.value is not None]
        return {
            "median": statistics.median(vals),
            "min": min(vals),
            "max": max(vals),
            "n": len(vals),
            "runs": len(every),
            "non_idle": sum(1 for r in used if r.idle is False),
            "median_all": statistics.median(every),
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Results:
        """Rebuild from a document written by :meth:`to_json`."""
        res = cls(meta=dict(doc.get("meta", {})), notes=list(doc.get("notes", [])))
        for r in doc.get("runs", []):
            res.runs.append(Run(**r))
        return res

    def to_json(self) -> dict[str, Any]:
        """The JSON document: meta, notes, raw runs and per-figure summaries."""
        summary: dict[str, dict[str, Any]] = {}
        for key in FIGURES:
            for subject in self.subjects(key):
                s = self.summary(key, subject)
                if s is not None:
                    summary.setdefault(key, {})[subject] = s
        return {
            "meta": self.meta,
            "notes": self.notes,
            "figures": {
                k: {"title": f.title, "unit": f.unit, "higher_is_better": f.higher_is_better}
                for k, f in FIGURES.items()
            },
            "summary": summary,
            "runs": [asdict(r) for r in self.runs],
        }


def percentile(values: Iterable[float], pct: float) -> float:
    """Nearest-rank percentile (``pct`` in 0..100) of a non-empty sample."""
    data = sorted(values)
    if not data:
        raise ValueError("empty sample")
    rank = max(1, -(-len(data) * pct // 100))  # ceil(n * pct / 100), at least 1
    return data[int(rank) - 1]


# -- progress line ---------------------------------------------------------------


class Progress:
    """One status line on stderr, rewritten in place on a terminal (plain
    lines otherwise, so logs stay readable)."""

    def __init__(self, total: int, stream: TextIO | None = None, enabled: bool = True) -> None:
        self.total = max(total, 1)
        self.done = 0
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = self.stream.isatty()
        self.label = ""
        self.start = time.monotonic()
        self._last_plain = ""

    def step(self, label: str) -> None:
        """Start the next step of the plan."""
        self.done += 1
        self.label = label
        self.show("")

    def show(self, status: str) -> None:
        """Update the line with a status for the current step."""
        if not self.enabled:
            return
        elapsed = time.monotonic() - self.start
        head = f"[{min(self.done, self.total)}/{self.total} {elapsed:5.0f}s] {self.label}"
        text = f"{head}: {status}" if status else head
        if self.tty:
            width = 200
            with contextlib.suppress(OSError):
                width = os.get_terminal_size(self.stream.fileno()).columns - 1
            self.stream.write("\r" + text[:width] + "\x1b[K")
        else:
            # Not a terminal: one line per step and per kind of status
            # (the part before any parenthesis), so a log stays short.
            kind = f"{self.done} {self.label} {status.split('(')[0]}"
            if kind == self._last_plain:
                return
            self._last_plain = kind
            self.stream.write(text + "\n")
        self.stream.flush()

    def message(self, text: str) -> None:
        """A permanent line above the progress line."""
        if not self.enabled:
            return
        if self.tty:
            self.stream.write("\r\x1b[K")
        self.stream.write(text + "\n")
        self.stream.flush()

    def finish(self) -> None:
        """Clear the in-place line."""
        if self.enabled and self.tty:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


# -- machine load ------------------------------------------------------------------


def _cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies over all CPUs from /proc/stat."""
    with open("/proc/stat") as fh:
        fields = [int(x) for x in fh.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already inside user/nice
    return total - idle, total


def busy_share(interval: float = 0.5) -> float:
    """Percent of all CPUs busy over ``interval`` seconds."""
    b0, t0 = _cpu_times()
    time.sleep(interval)
    b1, t1 = _cpu_times()
    return 100.0 * (b1 - b0) / max(t1 - t0, 1)


@dataclass
class IdleState:
    """Outcome of :func:`wait_idle`."""

    idle: bool
    busy: float
    waited: float


def wait_idle(
    max_wait: float,
    threshold: float = 8.0,
    interval: float = 0.5,
    progress: Progress | None = None,
) -> IdleState:
    """Wait until the machine is idle (busy share below ``threshold`` percent
    over one ``interval``), at most ``max_wait`` seconds."""
    start = time.monotonic()
    busy = busy_share(interval)
    while busy >= threshold:
        waited = time.monotonic() - start
        if waited >= max_wait:
            return IdleState(False, busy, waited)
        if progress is not None:
            progress.show(f"waiting for an idle machine (busy {busy:.0f}%, {waited:.0f}s)")
        busy = busy_share(interval)
    return IdleState(True, busy, time.monotonic() - start)


# -- per-process accounting ---------------------------------------------------------


def _ppid_map() -> dict[int, int]:
    out: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as fh:
                data = fh.read()
        except OSError:
            continue
        # The command name may contain spaces and parentheses: split after it.
        rest = data[data.rfind(")") + 2 :].split()
        out[int(name)] = int(rest[1])
    return out


def descendants(pids: Iterable[int]) -> list[int]:
    """``pids`` and every process below them (worker processes count too)."""
    roots = [p for p in pids if p > 0]
    children: dict[int, list[int]] = {}
    for pid, ppid in _ppid_map().items():
        children.setdefault(ppid, []).append(pid)
    out: list[int] = []
    todo = list(roots)
    while todo:
        pid = todo.pop()
        if pid in out:
            continue
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def cpu_seconds(pids: Iterable[int]) -> float:
    """utime + stime (all threads) of these processes and their descendants,
    from /proc/PID/stat, in seconds."""
    total = 0
    for pid in descendants(pids):
        try:
            with open(f"/proc/{pid}/stat") as fh:
                data = fh.read()
        except OSError:
            continue
        rest = data[data.rfind(")") + 2 :].split()
        # Fields 14 and 15 of stat (utime, stime); rest[0] is field 3.
        total += int(rest[11]) + int(rest[12])
    return total / _CLK_TCK


def rss_bytes(pids: Iterable[int]) -> int:
    """Sum of VmRSS of these processes and their descendants."""
    total = 0
    for pid in descendants(pids):
        try:
            with open(f"/proc/{pid}/status") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
                        break
        except OSError:
            continue
    return total
