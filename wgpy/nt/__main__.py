"""``python -m wgpy.nt``: where the C-ABI library and the header are.

``--library-path`` prints the path of wgpy's ``wireguard.h`` library, building it
first if needed (into the cache, see :mod:`wgpy.nt._build`); ``--include-path``
prints the directory of our ``wireguard.h``.  Typical use::

    cc -I"$(python -m wgpy.nt --include-path)" prog.c -ldl -o prog
    ./prog "$(python -m wgpy.nt --library-path)"
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m wgpy.nt", description="wgpy's wireguard.h library and header."
    )
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument(
        "--library-path",
        action="store_true",
        help="print the shared library's path (building it if needed)",
    )
    group.add_argument(
        "--include-path", action="store_true", help="print the directory of wireguard.h"
    )
    parser.add_argument(
        "--no-build", action="store_true", help="with --library-path: fail instead of building"
    )
    args = parser.parse_args(argv)
    from wgpy.nt import _build

    if args.include_path:
        print(_build.include_dir())
        return 0
    try:
        path = _build.library_path(build=not args.no_build)
    except FileNotFoundError as exc:
        print(f"wgpy.nt: library not built: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # compiler missing, Python headers missing, ...
        print(f"wgpy.nt: building the library failed: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
