"""A wireguard.h adapter in the daemon convention, for tests that run the
daemon's scenarios against the wireguard.h front door.

``python tests/nt_host.py -f IFNAME`` creates the adapter IFNAME with
``WireGuardCreateAdapter`` (so it is built exactly as a program using
wireguard.h gets it), serves until SIGTERM/SIGINT or until the adapter is
gone, then closes it.  It is configured like the daemon, through its UAPI
socket (``wg``), and follows its link state (``ip link set up``).
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from wgpy.nt import api  # noqa: E402
from wgpy.nt.backend import local_adapter  # noqa: E402


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "-f":
        print("usage: nt_host.py -f IFNAME", file=sys.stderr)
        return 2
    name = argv[1]
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    handle = api.WireGuardCreateAdapter(name, "wgpy-test", None)
    if handle is None:
        print(f"WireGuardCreateAdapter failed: {api.GetLastError()}", file=sys.stderr)
        return 1
    try:
        while not stop.wait(0.2):
            adapter = local_adapter(name)
            if adapter is None or adapter.gone:
                break
    finally:
        api.WireGuardCloseAdapter(handle)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
