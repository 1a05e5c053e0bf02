"""The benchmark harness (bench/): its bookkeeping, and a smoke run of
``python -m bench --quick`` that checks the JSON, Markdown and PNG outputs
are produced and well-formed.  No assertion here depends on a timing."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.report import markdown, targets
from bench.runner import _split
from bench.sansio import HandshakeLoop, LookupTable
from bench.util import FIGURES, Progress, Results, Run, percentile
from wgpy.lab import find_wireguard_go_modern

REPO = Path(__file__).resolve().parent.parent


def _results(values: dict[tuple[str, str], list[float]]) -> Results:
    res = Results()
    for (fig, subj), vals in values.items():
        for i, v in enumerate(vals):
            res.add(Run(fig, subj, i, v, idle=True))
    return res


def test_percentile_nearest_rank() -> None:
    data = [float(x) for x in range(1, 101)]
    assert percentile(data, 50) == 50.0
    assert percentile(data, 99) == 99.0
    assert percentile([3.0], 99) == 3.0
    with pytest.raises(ValueError):
        percentile([], 50)


def test_summary_prefers_runs_that_started_idle() -> None:
    res = _results({("tcp_fwd", "go-go"): [100.0, 300.0, 200.0]})
    res.add(Run("tcp_fwd", "go-go", 3, 400.0, idle=False))
    res.add(Run("tcp_fwd", "go-go", 4, None, error="iperf3: boom"))
    s = res.summary("tcp_fwd", "go-go")
    assert s == {
        "median": 200.0,
        "min": 100.0,
        "max": 300.0,
        "n": 3,
        "runs": 4,
        "non_idle": 0,
        "median_all": 250.0,
    }
    # With no idle run at all, every run counts and is flagged.
    busy = Results()
    for i, v in enumerate((10.0, 30.0)):
        busy.add(Run("tcp_fwd", "go-go", i, v, idle=False))
    b = busy.summary("tcp_fwd", "go-go")
    assert b is not None and b["median"] == 20.0 and b["non_idle"] == 2
    doc = res.to_json()
    assert doc["summary"]["tcp_fwd"]["go-go"]["median"] == 200.0
    assert len(doc["runs"]) == 5
    json.dumps(doc)  # serialisable


def test_targets_use_ratios_from_the_same_run() -> None:
    res = _results(
        {
            ("tcp_fwd", "gomod-gomod"): [100.0],
            ("tcp_fwd", "wgpy-wgpy"): [75.0],
            ("tcp_fwd", "gomod-wgpy"): [70.0],
            ("cpu_fwd", "gomod-gomod"): [4.0],
            ("cpu_fwd", "wgpy-wgpy"): [6.0],
            ("ping_idle_p50", "gomod-gomod"): [0.5],
            ("ping_idle_p50", "wgpy-wgpy"): [1.0],
            ("hs_wire", "wireguard-go"): [4000.0],
            ("hs_wire", "wgpy"): [3000.0],
            ("hs_sansio", "wgpy"): [1600.0],
            ("mem_per_peer", "wgpy"): [9000.0],
        }
    )
    by_name = {t.name: t for t in targets(res)}
    t = by_name["wgpy-wgpy TCP A→B ≥ 0.7× gomod-gomod"]
    assert t.measured == pytest.approx(0.75) and t.met is True
    assert by_name["gomod-wgpy TCP A→B (wgpy receives) ≥ 0.75× gomod-gomod"].met is False
    assert by_name["wgpy-wgpy TCP B→A ≥ 0.7× gomod-gomod"].met is None  # not measured
    assert by_name["wgpy-wgpy CPU per GB A→B ≤ 1.6× gomod-gomod"].met is True
    assert by_name["wgpy-wgpy ping p50 idle ≤ 1.3× gomod-gomod"].met is False
    hs = by_name["handshakes/s over the wire (responder) ≥ 0.8× Debian wireguard-go"]
    assert hs.measured == pytest.approx(0.75) and hs.met is False
    assert by_name["sans-IO full handshakes ≥ 1,500/s on one core"].met is True
    assert by_name["≤ 8 KiB per idle peer with one allowed IP"].met is False


def test_ratios_use_the_modern_anchor_and_fall_back_to_debians() -> None:
    both = _results(
        {
            ("tcp_fwd", "gomod-gomod"): [200.0],
            ("tcp_fwd", "go-go"): [100.0],
            ("tcp_fwd", "wgpy-wgpy"): [100.0],
        }
    )
    text = markdown(both)
    assert "against gomod-gomod (pairs)" in text
    assert "100 **×0.50**" in text  # wgpy-wgpy against gomod, not against go-go
    old = _results({("tcp_fwd", "go-go"): [100.0], ("tcp_fwd", "wgpy-wgpy"): [150.0]})
    text = markdown(old)
    assert "against go-go (pairs)" in text and "150 **×1.50**" in text


def test_missing_modern_wireguard_go_is_said_clearly() -> None:
    from bench import runner

    args = runner.parse_args([])
    pairs = runner._default_pairs(args, None)
    assert pairs and not any("gomod" in p for p in pairs)
    assert runner._default_pairs(args, "/x/wireguard-go") == list(runner.PAIRS)
    assert runner._missing_tools(["gomod-gomod"], None)[-1] == "wireguard-go-0.0.20250522"
    assert "wireguard-go-0.0.20250522" not in runner._missing_tools(["gomod-gomod"], "/x/w")
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--pairs", "gomod-gomod", "--only", "tcp"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ, WGPY_WIREGUARD_GO_MODERN="/nonexistent/wireguard-go"),
        check=False,
    )
    assert done.returncode == 2
    assert "WGPY_WIREGUARD_GO_MODERN=/nonexistent/wireguard-go is not an executable" in done.stderr


def test_markdown_shows_median_spread_and_ratio() -> None:
    res = _results(
        {("tcp_fwd", "go-go"): [100.0, 110.0, 90.0], ("tcp_fwd", "wgpy-go"): [200.0, 150.0, 250.0]}
    )
    text = markdown(res)
    assert "| figure | unit | go-go | wgpy-go |" in text
    assert "200 (150–250) **×2.00**" in text
    assert "100 (90.0–110)" in text


def test_progress_plain_lines_when_not_a_terminal() -> None:
    buf = io.StringIO()
    p = Progress(2, stream=buf)
    p.step("first")
    p.show("waiting for an idle machine (busy 50%, 1s)")
    p.show("waiting for an idle machine (busy 40%, 2s)")  # same kind: not repeated
    p.step("second")
    lines = buf.getvalue().splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("[1/2") and lines[0].endswith("first")
    assert "\r" not in buf.getvalue()


def test_split_rejects_unknown_names() -> None:
    assert _split("go-go,wgpy-wgpy", ["wgpy-wgpy", "go-go"], "pair") == ["wgpy-wgpy", "go-go"]
    with pytest.raises(SystemExit):
        _split("nope", ["a"], "pair")


def test_sansio_loop_completes_real_handshakes() -> None:
    loop = HandshakeLoop()
    for _ in range(3):
        loop.once()
    assert loop.completed == 3
    # Each handshake left both ends with a fresh, confirmed session.
    for dev in (loop.a, loop.b):
        (peer,) = dev.peers
        assert peer.keypairs.current is not None


def test_lookup_table_has_the_requested_distinct_prefixes() -> None:
    t = LookupTable(2000, 32)
    assert t.size == 2000
    rate, n = t.run(0.01)
    assert n >= len(t.queries) and rate > 0


def _have_root_net() -> str | None:
    if os.geteuid() != 0:
        return "root (network namespaces)"
    for tool in ("ip", "wg", "iperf3", "ping"):
        if shutil.which(tool) is None:
            return f"the '{tool}' command"
    return None


@pytest.mark.skipif(_have_root_net() is not None, reason=f"needs {_have_root_net()}")
def test_quick_run_writes_json_markdown_and_charts(tmp_path: Path) -> None:
    pairs = ["wgpy-wgpy"]
    if find_wireguard_go_modern() is not None:
        pairs += ["gomod-gomod", "gomod-wgpy"]
    if shutil.which("wireguard-go"):
        pairs.append("go-go")
    out = tmp_path / "out"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--quick",
            "--no-kernel",
            "--pairs",
            ",".join(pairs),
            "--out",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "[1/" in done.stderr  # the progress line

    doc = json.loads((out / "results.json").read_text())
    assert {"meta", "summary", "runs", "targets", "figures"} <= set(doc)
    errors = [r for r in doc["runs"] if r["error"]]
    assert not errors, errors
    impls = ["wgpy"] + ["wireguard-go-modern"] * ("gomod-gomod" in pairs)
    impls += ["wireguard-go"] * ("go-go" in pairs)
    for key, fig in FIGURES.items():
        subjects = {"pair": pairs, "impl": impls, "wgpy": ["wgpy"]}[fig.scope]
        for subject in subjects:
            runs = [r for r in doc["runs"] if r["figure"] == key and r["subject"] == subject]
            assert len(runs) == 1, (key, subject)
            assert isinstance(runs[0]["value"], float), (key, subject)
            assert runs[0]["value"] >= 0
    # Everything the run created is gone again.
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    names = {line.split()[0] for line in listed.splitlines() if line.strip()}
    assert doc["meta"]["namespaces"]
    assert not names & set(doc["meta"]["namespaces"])

    md = (out / "results.md").read_text()
    assert "## Targets" in md
    assert "| figure | unit | " + " | ".join(pairs) + " |" in md
    assert md.strip() in done.stdout  # the table is printed too

    try:
        import matplotlib  # noqa: F401
    except ImportError:
        pytest.skip("matplotlib not installed (pip install -e .[bench]): no PNG charts to check")
    for stem in ("tcp", "udp", "ping", "cpu", "handshakes", "memory", "lookups"):
        png = (out / f"{stem}.png").read_bytes()
        assert png.startswith(b"\x89PNG\r\n\x1a\n"), stem
        assert len(png) > 1000
