"""Build the Wintun test double (wintun_double.c) into a shared library with gcc."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

SOURCE = Path(__file__).with_name("wintun_double.c")


def build_double(out_dir: Path) -> Path:
    """Compile the double into ``out_dir/libwintun_double.so`` and return its path.

    Warnings are errors, so a sloppy change to the double fails loudly.  Raises
    FileNotFoundError when gcc is missing (callers turn that into a skip).
    """
    gcc = shutil.which("gcc")
    if gcc is None:
        raise FileNotFoundError("gcc")
    target = out_dir / "libwintun_double.so"
    subprocess.run(
        [
            gcc,
            "-shared",
            "-fPIC",
            "-O2",
            "-g",
            "-std=gnu11",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-fvisibility=hidden",
            "-pthread",
            "-o",
            str(target),
            str(SOURCE),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return target
