"""Turning :class:`bench.util.Results` into the JSON document, the Markdown
table (with ratios against wireguard-go from the same run and the issue's
targets) and PNG charts."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.topology import PAIRS
from bench.util import FIGURES, Results

__all__ = ["Target", "targets", "write_charts", "write_json", "write_markdown"]

#: The anchors ratios are taken against, in order of preference: the
#: modern wireguard-go (0.0.20250522, TUN offloads and UDP GSO/GRO) when it
#: was measured, else Debian's 0.0.20220316.  (pair, implementation).
ANCHORS = (("gomod-gomod", "wireguard-go-modern"), ("go-go", "wireguard-go"))
IMPL_ORDER = ("wgpy", "wireguard-go-modern", "wireguard-go", "kernel")


def anchor(results: Results, scope: str) -> str | None:
    """The subject of ``scope`` ("pair" or "impl") this run's ratios use."""
    measured = {r.subject for r in results.runs if r.value is not None}
    for pair, impl in ANCHORS:
        subject = pair if scope == "pair" else impl
        if subject in measured:
            return subject
    return None


@dataclass
class Target:
    """One of the issue's targets, evaluated on this run."""

    name: str
    measured: float | None  # a ratio, or a value for absolute targets
    threshold: float
    at_least: bool  # True: measured >= threshold; False: measured <= threshold
    unit: str
    detail: str

    @property
    def met(self) -> bool | None:
        """Whether the target was met (None if it could not be measured)."""
        if self.measured is None:
            return None
        if self.at_least:
            return self.measured >= self.threshold
        return self.measured <= self.threshold

    def as_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "name": self.name,
            "measured": self.measured,
            "threshold": self.threshold,
            "at_least": self.at_least,
            "unit": self.unit,
            "met": self.met,
            "detail": self.detail,
        }


def _median(results: Results, figure: str, subject: str, key: str = "median") -> float | None:
    s = results.summary(figure, subject)
    return None if s is None else float(s[key])


def _ratio(
    results: Results, figure: str, subject: str, ref: str, key: str = "median"
) -> float | None:
    v, r = _median(results, figure, subject, key), _median(results, figure, ref, key)
    if v is None or r is None or r == 0:
        return None
    return v / r


def _ratio_target(
    results: Results, name: str, figure: str, subject: str, ref: str, want: float, at_least: bool
) -> Target:
    return Target(
        name,
        _ratio(results, figure, subject, ref),
        want,
        at_least,
        "×",
        _detail(results, figure, subject, ref),
    )


def targets(results: Results) -> list[Target]:
    """The performance issue's targets, as ratios from this run against
    wireguard-go 0.0.20250522 (gomod) or, for handshakes, Debian's
    wireguard-go; then the earlier absolute targets."""
    ref = "gomod-gomod"
    out = [
        _ratio_target(
            results, f"wgpy-wgpy TCP {label} ≥ 0.7× {ref}", fig, "wgpy-wgpy", ref, 0.7, True
        )
        for fig, label in (("tcp_fwd", "A→B"), ("tcp_rev", "B→A"))
    ]
    out.append(
        _ratio_target(
            results,
            f"gomod-wgpy TCP A→B (wgpy receives) ≥ 0.75× {ref}",
            "tcp_fwd",
            "gomod-wgpy",
            ref,
            0.75,
            True,
        )
    )
    out.append(
        _ratio_target(
            results,
            f"wgpy-wgpy CPU per GB A→B ≤ 1.6× {ref}",
            "cpu_fwd",
            "wgpy-wgpy",
            ref,
            1.6,
            False,
        )
    )
    out.append(
        _ratio_target(
            results,
            f"wgpy-wgpy ping p50 idle ≤ 1.3× {ref}",
            "ping_idle_p50",
            "wgpy-wgpy",
            ref,
            1.3,
            False,
        )
    )
    out.append(
        _ratio_target(
            results,
            "handshakes/s over the wire (responder) ≥ 0.8× Debian wireguard-go",
            "hs_wire",
            "wgpy",
            "wireguard-go",
            0.8,
            True,
        )
    )
    hs = _median(results, "hs_sansio", "wgpy")
    out.append(
        Target(
            "sans-IO full handshakes ≥ 1,500/s on one core",
            hs,
            1500.0,
            True,
            "/s",
            "" if hs is None else f"{hs:,.0f}/s",
        )
    )
    mem = _median(results, "mem_per_peer", "wgpy")
    out.append(
        Target(
            "≤ 8 KiB per idle peer with one allowed IP",
            None if mem is None else mem / 1024,
            8.0,
            False,
            "KiB",
            "" if mem is None else f"{mem:,.0f} B/peer",
        )
    )
    return out


def _detail(results: Results, figure: str, subject: str, ref: str) -> str:
    v, r = _median(results, figure, subject), _median(results, figure, ref)
    if v is None or r is None:
        return "not measured"
    unit = FIGURES[figure].unit
    text = f"{_fmt(v)} vs {_fmt(r)} {unit}"
    every = _ratio(results, figure, subject, ref, "median_all")
    if every is not None and every != _ratio(results, figure, subject, ref):
        text += f"; ×{every:.2f} over all runs, busy ones included"
    return text


def _fmt(value: float) -> str:
    """Three significant digits, thousands separated."""
    a = abs(value)
    if a >= 1000:
        return f"{value:,.0f}"
    if a >= 100:
        return f"{value:.0f}"
    if a >= 10:
        return f"{value:.1f}"
    if a >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def _cell(results: Results, figure: str, subject: str, ref: str | None) -> str:
    s = results.summary(figure, subject)
    if s is None:
        errors = [r.error for r in results.runs if r.figure == figure and r.subject == subject]
        return "failed" if any(errors) else ""
    text = _fmt(s["median"])
    if s["n"] > 1:
        text += f" ({_fmt(s['min'])}–{_fmt(s['max'])})"
    if s["non_idle"]:
        text += " †"
    elif s["n"] < s["runs"]:
        text += f" [idle {s['n']}/{s['runs']}]"
    if ref is not None and subject != ref:
        r = _ratio(results, figure, subject, ref)
        if r is not None:
            text += f" **×{r:.2f}**"
    return text


def _table(
    results: Results, scope: str, columns: list[str], ref: str | None, lines: list[str]
) -> None:
    figs = [f for f in FIGURES.values() if f.scope == scope]
    rows = []
    for f in figs:
        if not any(results.summary(f.key, c) or results.subjects(f.key) for c in columns):
            continue
        if not results.subjects(f.key):
            continue
        rows.append(
            f"| {f.title} | {f.unit} | "
            + " | ".join(_cell(results, f.key, c, ref) for c in columns)
            + " |"
        )
    if not rows:
        return
    lines.append("| figure | unit | " + " | ".join(columns) + " |")
    lines.append("|---|---|" + "---|" * len(columns))
    lines.extend(rows)
    lines.append("")


def _columns(results: Results, scope: str, order: tuple[str, ...]) -> list[str]:
    present: dict[str, None] = {}
    for r in results.runs:
        if FIGURES[r.figure].scope == scope:
            present[r.subject] = None
    return [s for s in order if s in present] + [s for s in present if s not in order]


def markdown(results: Results) -> str:
    """The report: setup, targets, then one table per scope."""
    m = results.meta
    lines = [f"# wgpy benchmark {m.get('started', '')}", ""]
    lines.append(
        f"Machine: {m.get('cpu_model', '?')}, {m.get('cpus', '?')} CPUs, Linux "
        f"{m.get('kernel', '?')}; Python {m.get('python', '?')}, cryptography "
        f"{m.get('cryptography', '?')}; {m.get('wireguard_go', 'wireguard-go ?')}; "
        f"{m.get('wireguard_go_modern', 'wireguard-go 0.0.20250522 ?')}; "
        f"{m.get('iperf3', 'iperf3 ?')}; wgpy {m.get('wgpy_commit', '?')}."
    )
    lines.append("")
    k = m.get("kernel_peer")
    if isinstance(k, dict):
        if k.get("ran"):
            lines.append(
                f"In-kernel WireGuard: Linux {k.get('kernel_release')} in {k.get('description')}, "
                f"booted in {k.get('boot_seconds')} s. The iperf3 server for the kernel pairs "
                "runs inside that VM; CPU per GB counts the userspace end only."
            )
        else:
            lines.append(f"In-kernel WireGuard: not measured ({k.get('reason')}).")
        lines.append("")
    s = m.get("settings", {})
    lines.append(
        f"Each figure: median (min–max) of {s.get('repeat')} repeat(s), counting only the "
        "repeats that started on an idle machine when there are any ([idle k/n]: k of n "
        "repeats used); † = every repeat started on a busy machine (≥ "
        f"{s.get('idle_threshold')}% CPU after waiting up to {s.get('idle_wait')} s), so all "
        f"are used. iperf3 runs of {s.get('seconds')} s; UDP sizes are IP packet sizes inside "
        "the tunnel; ratios (**×**) are against "
        f"{anchor(results, 'pair') or 'no anchor'} (pairs) and "
        f"{anchor(results, 'impl') or 'no anchor'} (implementations) from this same run "
        "(gomod = wireguard-go 0.0.20250522, go = Debian's 0.0.20220316). Load average at start "
        f"{m.get('loadavg_start', '?')}, at end {m.get('loadavg_end', '?')}."
    )
    lines.append("")
    non_idle = sum(1 for r in results.runs if r.idle is False)
    checked = sum(1 for r in results.runs if r.idle is not None)
    lines.append(f"Runs started on a busy machine: {non_idle} of {checked}.")
    lines.append("")

    lines += [
        "## Targets",
        "",
        "| target | measured | result | detail |",
        "|---|---|---|---|",
    ]
    for t in targets(results):
        if t.met is None:
            verdict, value = "not measured", ""
        else:
            verdict = "**met**" if t.met else "**not met**"
            value = f"{_fmt(t.measured)} {t.unit}" if t.measured is not None else ""
        lines.append(f"| {t.name} | {value} | {verdict} | {t.detail} |")
    lines.append("")

    pair_cols = _columns(results, "pair", tuple(PAIRS))
    if pair_cols:
        lines += ["## Tunnels (A = iperf3 client, B = server)", ""]
        _table(results, "pair", pair_cols, anchor(results, "pair"), lines)
    impl_cols = _columns(results, "impl", IMPL_ORDER)
    if impl_cols:
        lines += ["## Implementations", ""]
        _table(results, "impl", impl_cols, anchor(results, "impl"), lines)
    wgpy_cols = _columns(results, "wgpy", ("wgpy",))
    if wgpy_cols:
        lines += ["## wgpy only (no counterpart measured)", ""]
        _table(results, "wgpy", wgpy_cols, None, lines)
    errors = [r for r in results.runs if r.error]
    if results.notes or errors:
        lines += ["## Notes", ""]
        lines += [f"- {n}" for n in results.notes]
        for r in errors:
            lines.append(f"- {r.figure} {r.subject} repeat {r.repeat}: {r.error}")
        lines.append("")
    return "\n".join(lines)


def write_json(results: Results, path: Path) -> None:
    """results.json: meta, notes, summaries, targets and every raw run."""
    doc = results.to_json()
    doc["targets"] = [t.as_dict() for t in targets(results)]
    path.write_text(json.dumps(doc, indent=1, default=str) + "\n")


def write_markdown(results: Results, path: Path) -> str:
    """results.md; returns its text."""
    text = markdown(results)
    path.write_text(text + "\n")
    return text


#: Charts: file stem → (title, [(series label, figure key)]).
CHARTS: dict[str, tuple[str, list[tuple[str, str]]]] = {
    "tcp": ("iperf3 TCP throughput", [("A→B", "tcp_fwd"), ("B→A", "tcp_rev")]),
    "cpu": ("CPU seconds per GB (TCP)", [("A→B", "cpu_fwd"), ("B→A", "cpu_rev")]),
    "udp": ("UDP packets/s received", [("64 B", "udp64_pps"), ("1420 B", "udp1420_pps")]),
    "ping": (
        "ping RTT",
        [
            ("p50 idle", "ping_idle_p50"),
            ("p99 idle", "ping_idle_p99"),
            ("p50 load", "ping_load_p50"),
            ("p99 load", "ping_load_p99"),
        ],
    ),
    "handshakes": (
        "handshakes per second",
        [("over the wire", "hs_wire"), ("sans-IO", "hs_sansio")],
    ),
    "memory": ("memory per idle peer", [("bytes/peer", "mem_per_peer")]),
    "lookups": ("allowed-IPs lookups/s (wgpy)", [("IPv4", "lookups_v4"), ("IPv6", "lookups_v6")]),
}


def write_charts(results: Results, out_dir: Path) -> list[Path]:
    """One PNG per chart that has data (matplotlib, Agg backend): bars at the
    median with min–max error bars.  Returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for stem, (title, series) in CHARTS.items():
        keys = [k for _, k in series if results.subjects(k)]
        if not keys:
            continue
        subjects: dict[str, None] = {}
        order = (*PAIRS, *IMPL_ORDER)
        for k in keys:
            for subj in results.subjects(k):
                subjects[subj] = None
        cols = [s for s in order if s in subjects] + [s for s in subjects if s not in order]
        fig, ax = plt.subplots(figsize=(max(5.0, 1.4 * len(cols) + 2), 4.0))
        width = 0.8 / len(series)
        for i, (label, key) in enumerate(series):
            xs, meds, lo, hi = [], [], [], []
            for j, subj in enumerate(cols):
                summ = results.summary(key, subj)
                if summ is None:
                    continue
                xs.append(j + (i - (len(series) - 1) / 2) * width)
                meds.append(summ["median"])
                lo.append(summ["median"] - summ["min"])
                hi.append(summ["max"] - summ["median"])
            if xs:
                ax.bar(xs, meds, width, yerr=[lo, hi], capsize=3, label=label)
        if stem == "memory":
            ax.axhline(8192, color="red", linestyle="--", linewidth=1, label="target 8 KiB")
        ax.set_xticks(range(len(cols)))
        ax.set_xticklabels(cols, rotation=15)
        ax.set_ylabel(FIGURES[keys[0]].unit)
        ax.set_title(title + " (median, min–max)")
        ax.legend(fontsize="small")
        fig.tight_layout()
        path = out_dir / f"{stem}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written
