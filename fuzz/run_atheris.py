"""Run one wgpy fuzz target under atheris (coverage-guided, libFuzzer).

Usage (from the repository root)::

    python fuzz/run_atheris.py TARGET [libFuzzer options] [CORPUS_DIR ...]

TARGET is one of fuzz/targets.py's TARGETS (receive, uapi, nt_config).
Everything after it goes to libFuzzer, e.g. ``-runs=2000``,
``-max_total_time=20``, ``-artifact_prefix=/tmp/crash-``, corpus
directories (new interesting inputs are written into the first one: pass a
scratch copy unless you mean to grow the committed corpus).

wgpy is imported inside ``atheris.instrument_imports`` so its code is
coverage-instrumented.  A target raising (an exception from wgpy, or
``FuzzBug`` for a broken invariant) is a crash: libFuzzer saves the input
and exits non-zero.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> None:
    if len(argv) < 2 or argv[1] not in ("receive", "uapi", "nt_config"):
        sys.exit(f"usage: {argv[0]} receive|uapi|nt_config [libFuzzer options] [corpus dirs]")
    import atheris  # type: ignore[import-not-found, import-untyped, unused-ignore]

    target_name = argv[1]
    sys.path.insert(0, str(HERE))
    sys.path.insert(0, str(HERE.parent))
    with atheris.instrument_imports(include=["wgpy", "targets"]):
        import targets

    target = targets.TARGETS[target_name]

    def one_input(data: bytes) -> None:
        target(data)

    atheris.Setup([argv[0], *argv[2:]], one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
