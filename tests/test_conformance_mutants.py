"""Every conformance scenario can fail: each runs against a target with
exactly its rule broken (tests/mutants.py) and must FAIL there, while the
same target unbroken PASSes the whole default set.

The targets are userspace wireguard.h adapters (no TUN) in their own
processes on loopback, configured by the runner over UAPI; no namespace is
needed.  A scenario added without a mutant fails
``test_every_scenario_has_a_mutant``.
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from mutants import MUTANTS

from wgpy.conformance import SCENARIOS

HERE = Path(__file__).resolve().parent
OUR_IP, TARGET_IP = "10.97.0.1", "10.97.0.2"
_NAMES = itertools.count(1)
DEFAULT = [name for name, sc in SCENARIOS.items() if not sc.long]
LONG = [name for name, sc in SCENARIOS.items() if sc.long]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Target:
    """A mutant (or the plain engine) serving in a child process."""

    def __init__(self, mutation: str, run_dir: str) -> None:
        self.port = _free_port()
        self.name = f"mut{os.getpid() % 1000}x{next(_NAMES)}"
        env = dict(os.environ, WGPY_NT_RUN_DIR=run_dir, PYTHONPATH=str(HERE.parent))
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(HERE / "mutants.py"),
                self.name,
                str(self.port),
                f"{TARGET_IP}/24",
                mutation,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.startswith("ready "), line + self.proc.stdout.read()
        self.uapi = line.split(" ", 1)[1].strip()

    def close(self) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return self.proc.stdout.read()


@pytest.fixture
def run_dir() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="wgpy-mut-") as d:
        yield d


def _run(
    mutation: str, scenarios: list[str], run_dir: str, tmp: Path, *, long: bool = False
) -> dict[str, dict[str, str]]:
    target = Target(mutation, run_dir)
    out = tmp / f"{mutation}-{'-'.join(scenarios) if len(scenarios) < 3 else 'all'}.json"
    try:
        argv = [
            sys.executable,
            "-m",
            "wgpy.cli",
            "conformance",
            "--target-endpoint",
            f"127.0.0.1:{target.port}",
            "--setup-uapi",
            target.uapi,
            "--target-tunnel-ip",
            TARGET_IP,
            "--our-tunnel-ip",
            OUR_IP,
            "--listen",
            "127.0.0.1",
            "--label",
            f"mutant-{mutation}",
            "--json",
            str(out),
            "--scenario",
            ",".join(scenarios),
        ]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=900, cwd=HERE.parent)
    finally:
        log = target.close()
    assert out.exists(), done.stdout + done.stderr + log
    return {r["name"]: r for r in json.loads(out.read_text())["results"]}


def test_every_scenario_has_a_mutant() -> None:
    missing = [name for name in SCENARIOS if name not in MUTANTS]
    assert not missing, f"scenarios that nothing shows can fail: {missing}"


def test_the_unbroken_target_passes_everything(run_dir: str, tmp_path: Path) -> None:
    results = _run("none", DEFAULT, run_dir, tmp_path)
    bad = {n: (r["status"], r["summary"]) for n, r in results.items() if r["status"] != "PASS"}
    assert not bad


@pytest.mark.parametrize("scenario", DEFAULT)
def test_scenario_fails_against_its_mutant(scenario: str, run_dir: str, tmp_path: Path) -> None:
    results = _run(scenario, [scenario], run_dir, tmp_path)
    r = results[scenario]
    assert r["status"] == "FAIL", f"{MUTANTS[scenario][0]}, yet {r['status']}: {r['summary']}"


def test_long_scenarios_fail_against_their_mutants_and_pass_unbroken(
    run_dir: str, tmp_path: Path
) -> None:
    """The long scenarios (90-190 s each, mostly waiting) run side by side:
    each against its mutant and against an unbroken target of its own."""
    jobs = [(m, s) for s in LONG for m in (s, "none")]
    with ThreadPoolExecutor(len(jobs)) as pool:
        futures = {
            job: pool.submit(_run, job[0], [job[1]], run_dir, tmp_path, long=True) for job in jobs
        }
        results = {job: f.result()[job[1]] for job, f in futures.items()}
    wrong = {
        f"{s} vs {m}": (r["status"], r["summary"])
        for (m, s), r in results.items()
        if r["status"] != ("PASS" if m == "none" else "FAIL")
    }
    assert not wrong
