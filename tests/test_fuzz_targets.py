"""The fuzz targets of fuzz/targets.py: corpus replay, corpus coverage, and a
short bounded atheris run of each target.

* Every committed corpus input is replayed through its target in-process
  (no atheris needed): a regression test for everything a fuzzer found.
* The seed corpora must still reach the paths they were written for
  (authenticated delivery, replay drops, the cookie path, each UAPI errno,
  each wireguard.h error code): if an engine change makes them miss, the
  message says how to regenerate them.
* If atheris is installed, each target runs under libFuzzer for a bounded
  number of executions (FUZZ_RUNS, default 1500) and at most FUZZ_SECONDS
  (default 20) on a scratch copy of its corpus; any crash fails the test
  and the crashing input is printed (add it to the corpus once fixed).
"""

from __future__ import annotations

import collections
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
FUZZ = ROOT / "fuzz"
TARGET_NAMES = ["receive", "uapi", "nt_config"]
RUNS = int(os.environ.get("FUZZ_RUNS", "1500"))
SECONDS = int(os.environ.get("FUZZ_SECONDS", "20"))


def _load_targets() -> ModuleType:
    spec = importlib.util.spec_from_file_location("wgpy_fuzz_targets", FUZZ / "targets.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


targets = _load_targets()


def corpus(name: str) -> list[Path]:
    return sorted(p for p in (FUZZ / "corpus" / name).iterdir() if p.is_file())


@pytest.mark.parametrize("name", TARGET_NAMES)
def test_corpus_replays_without_finding(name: str) -> None:
    files = corpus(name)
    assert len(files) >= 5, f"fuzz/corpus/{name} is nearly empty"
    target = targets.TARGETS[name]
    for path in files:
        try:
            target(path.read_bytes())
        except Exception as exc:
            raise AssertionError(f"{name} target fails on {path.name}: {exc!r}") from exc


def _coverage(name: str) -> collections.Counter[str]:
    total: collections.Counter[str] = collections.Counter()
    for path in corpus(name):
        if path.name.startswith("seed-"):
            total.update(targets.TARGETS[name](path.read_bytes()).counters)
    return total


REGENERATE = "the seeds no longer reach this path: regenerate with `python fuzz/make_corpus.py`"


def test_receive_seeds_reach_the_interesting_paths() -> None:
    c = _coverage("receive")
    # Authenticated delivery both ways, with and without a prior session.
    assert c["delivered_A"] > 0 and c["delivered_B"] > 0, REGENERATE
    # Replayed transport and initiations, altered tags, bad mac1, framing.
    for key in (
        "B.rx_dropped_replay",
        "B.rx_dropped_initiation",
        "B.rx_dropped_auth",
        "B.rx_dropped_mac1",
        "B.rx_dropped_framing",
    ):
        assert c[key] > 0, f"{key}: {REGENERATE}"
    # The cookie path: B under load answers with cookies, A uses one.
    assert c["B.cookie_reply_sent"] > 0 and c["A.cookie_reply_consumed"] > 0, REGENERATE


def test_uapi_seeds_reach_every_errno() -> None:
    c = _coverage("uapi")
    for code in (0, 5, 22, 71, 98):  # ok, EIO, EINVAL, EPROTO, EADDRINUSE
        assert c[f"errno_{code}"] > 0, f"errno {code}: {REGENERATE}"


def test_nt_config_seeds_parse_and_fail_in_each_way() -> None:
    c = _coverage("nt_config")
    assert c["parsed"] >= 2 and c["errno_0"] >= 2, REGENERATE
    for code in (1, 87, 998):  # INVALID_FUNCTION, INVALID_PARAMETER, NOACCESS
        assert c[f"abi_error_{code}"] > 0, f"error {code}: {REGENERATE}"


def test_targets_detect_a_swallowed_internal_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # The targets must see bugs the engine hides: make the replay check of
    # authenticated transport raise inside Device.receive (which counts the
    # exception and drops the datagram).
    from wgpy.replay import ReplayWindow

    def broken(self: object, counter: int) -> bool:
        raise RuntimeError("injected")

    monkeypatch.setattr(ReplayWindow, "validate", broken)
    seed = (FUZZ / "corpus" / "receive" / "seed-established-data-both-ways").read_bytes()
    with pytest.raises(targets.FuzzBug, match="internal error"):
        targets.receive(seed)


def test_targets_detect_double_delivery(monkeypatch: pytest.MonkeyPatch) -> None:
    from wgpy.replay import ReplayWindow

    monkeypatch.setattr(ReplayWindow, "validate", lambda self, counter: True)
    seed = (FUZZ / "corpus" / "receive" / "seed-established-replay").read_bytes()
    with pytest.raises(targets.FuzzBug, match="delivered twice"):
        targets.receive(seed)


def test_uapi_target_detects_a_swallowed_internal_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # SetOperation answers ENOANO and logs when the engine raises; the
    # target must turn that into a finding.
    from wgpy.device import Device

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("injected")

    monkeypatch.setattr(Device, "set_persistent_keepalive", broken)
    seed = (FUZZ / "corpus" / "uapi" / "seed-set-keepalive-toggle").read_bytes()
    with pytest.raises(targets.FuzzBug, match="internal error"):
        targets.uapi(seed)


def _have_atheris() -> bool:
    return importlib.util.find_spec("atheris") is not None


@pytest.mark.skipif(not _have_atheris(), reason="needs atheris (pip install atheris)")
@pytest.mark.parametrize("name", TARGET_NAMES)
def test_short_atheris_run(name: str, tmp_path: Path) -> None:
    scratch = tmp_path / "corpus"
    shutil.copytree(FUZZ / "corpus" / name, scratch)
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    done = subprocess.run(
        [
            sys.executable,
            str(FUZZ / "run_atheris.py"),
            name,
            f"-runs={RUNS}",
            f"-max_total_time={SECONDS}",
            f"-artifact_prefix={artifacts}/",
            "-print_final_stats=1",
            str(scratch),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=SECONDS + 120,
    )
    crashes = sorted(artifacts.iterdir())
    detail = "\n".join(done.stderr.splitlines()[-40:])
    for crash in crashes:
        detail += f"\n{crash.name}: {crash.read_bytes()!r}"
    assert done.returncode == 0 and not crashes, detail
    assert "Done " in done.stderr, detail
    assert "stat::number_of_executed_units" in done.stderr
