"""examples/nt/example.c against wgpy's C library and a wireguard-go peer.

The example is compiled with gcc and run in one network namespace; wireguard-go
runs in the foreground in another (started and stopped by PID through wgpy.lab),
joined by a veth pair.  Pings cross the tunnel both ways; the example prints the
counters it reads back with GetConfiguration, and closing its adapter removes it.

A second C program checks, in a process where the library started Python itself,
that bad buffers fail with the documented error and keep the configuration, and
that an adapter left open is removed when the program exits.
"""

from __future__ import annotations

import base64
import os
import secrets
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from wgpy.lab import Lab
from wgpy.noise.primitives import public_key
from wgpy.nt import _build
from wgpy.nt.abi import ErrorCode
from wgpy.nt.adapter import Adapter

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "nt" / "example.c"
WAIT = 60.0  # bound for "this will happen"; never a performance assertion


def _needs() -> str | None:
    if os.geteuid() != 0:
        return "root for network namespaces"
    for tool in ("gcc", "wireguard-go", "wg", "ip", "ping"):
        if shutil.which(tool) is None:
            return tool
    if not os.path.exists("/dev/net/tun"):
        return "/dev/net/tun"
    import sysconfig

    if not sysconfig.get_config_var("Py_ENABLE_SHARED"):
        return "a shared libpython (cffi embedding)"
    return None


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(library, compiled example)."""
    missing = _needs()
    if missing:
        pytest.skip(f"needs {missing}")
    library = _build.library_path(cache_dir=tmp_path_factory.getbasetemp() / "wgpy-cache")
    exe = tmp_path_factory.mktemp("example") / "example"
    proc = subprocess.run(
        [
            "gcc",
            "-std=c11",
            "-Wall",
            "-Wextra",
            "-Werror",
            f"-I{_build.include_dir()}",
            str(EXAMPLE),
            "-ldl",
            "-o",
            str(exe),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    return library, exe


def _c_env(run_dir: Path) -> dict[str, str]:
    env = dict(os.environ, WGPY_NT_RUN_DIR=str(run_dir))
    # The library must find wgpy by itself (paths baked in at build time).
    env.pop("PYTHONPATH", None)
    return env


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)


def test_example_pings_a_wireguard_go_peer(
    built: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    library, exe = built
    run_dir = tmp_path / "run"
    monkeypatch.setenv("WGPY_NT_RUN_DIR", str(run_dir))
    name = f"Example {secrets.token_hex(3)}"  # not a valid ifname: a derived one is used
    with Lab() as lab:
        ns_a = lab.namespace("exa")
        ns_b = lab.namespace("exb")
        lab.veth(ns_a, ns_b, ["192.168.91.1/24"], ["192.168.91.2/24"])
        go = lab.start(ns_b, "wireguard-go")
        go.configure(51891, address=["10.91.0.2/24"])
        # The example generates its own key pair (libcrypto, as the original
        # uses BCrypt) and prints the public half before creating the adapter.
        argv = [
            "ip", "netns", "exec", ns_a, str(exe), str(library), name,
            "generate", go.public_b64, "192.168.91.2:51891",
            "10.91.0.1/24", "10.91.0.2/32", str(int(WAIT)),
        ]  # fmt: skip
        started = time.time()
        err_path = tmp_path / "example.stderr"
        # stderr goes to a file, stdout is read through one buffered stream only
        # (communicate() would bypass what readline() has buffered already).
        with open(err_path, "wb") as err_file:
            proc = subprocess.Popen(
                argv, stdout=subprocess.PIPE, stderr=err_file, text=True, env=_c_env(run_dir)
            )
        # A hung program must not hang the suite: kill it (by PID) after a bound.
        watchdog = threading.Timer(3 * WAIT, proc.kill)
        watchdog.start()
        try:
            assert proc.stdout is not None
            announced = proc.stdout.readline().split()
            assert announced[:1] == ["public_key"], (announced, err_path.read_text())
            ours = base64.b64decode(announced[1], validate=True)
            assert len(ours) == 32
            go.add_peer(ours, allowed_ips=["10.91.0.1/32"])
            ready = proc.stdout.readline().split()
            assert ready[:1] == ["ready"], (ready, err_path.read_text(errors="replace"))
            ifname, ifindex, version = ready[1], int(ready[2]), ready[3]
            assert version == "v0.1"
            assert len(ifname) <= 15 and ifname.startswith("Example")
            # Pings both ways through the tunnel.
            assert (
                lab.run(
                    ns_a, "ping", "-c", "3", "-i", "0.2", "-W", "5", "10.91.0.2", check=False
                ).returncode
                == 0
            )
            assert (
                lab.run(
                    ns_b, "ping", "-c", "2", "-i", "0.2", "-W", "5", "10.91.0.1", check=False
                ).returncode
                == 0
            )
            # Other processes see the adapter: wg through UAPI, and the API by name.
            shown = subprocess.run(
                ["wg", "show", ifname, "dump"], capture_output=True, text=True, check=True
            )
            assert go.public_b64 in shown.stdout
            with Adapter.open(name.upper()) as other:
                config = other.get_config()
                # The generated private key matches the public key printed.
                assert config.public_key == ours == public_key(config.private_key)
                (peer,) = config.peers
                assert peer.public_key == go.public and peer.tx_bytes > 0
                assert other.ifindex == ifindex
            proc.send_signal(signal.SIGINT)
            out = proc.stdout.read()  # to end of file: the program exits
            proc.wait(timeout=WAIT)
        finally:
            watchdog.cancel()
            _stop(proc)
        err = err_path.read_text(errors="replace")
        ended = time.time()
        assert proc.returncode == 0, err
        lines = out.splitlines()
        stats = [line for line in lines if line.startswith("stats ")]
        assert stats, out
        (peer_line,) = [line for line in lines if line.startswith("peer ")]
        fields = dict(f.split("=", 1) for f in peer_line.split()[2:])
        assert peer_line.split()[1] == go.public_b64
        assert fields["endpoint"] == "192.168.91.2:51891"
        assert int(fields["rx_bytes"]) > 0 and int(fields["tx_bytes"]) > 0
        assert started - 5 <= int(fields["last_handshake"]) <= ended + 5
        assert "allowed_ip 10.91.0.2/32" in lines
        # The C logger got the adapter's lines with FILETIME stamps turned into UTC.
        assert " [+] Interface created" in err and " [+] Interface up" in err
        # Closing the creating handle removed the adapter and its UAPI socket.
        assert ifname not in lab.run(ns_a, "ip", "link").stdout
        assert not os.path.exists(f"/var/run/wireguard/{ifname}.sock")
        assert not list(run_dir.glob("*.json"))


BAD_BUFFERS_C = r"""
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include "wireguard.h"

int main(int argc, char **argv)
{
    void *lib = dlopen(argv[1], RTLD_NOW);
    if (!lib) { printf("dlopen %s\n", dlerror()); return 1; }
    WIREGUARD_CREATE_ADAPTER_FUNC *create;
    WIREGUARD_SET_CONFIGURATION_FUNC *set;
    WIREGUARD_GET_CONFIGURATION_FUNC *get;
    WIREGUARD_GET_LAST_ERROR_FUNC *last;
    *(void **)&create = dlsym(lib, "WireGuardCreateAdapter");
    *(void **)&set = dlsym(lib, "WireGuardSetConfiguration");
    *(void **)&get = dlsym(lib, "WireGuardGetConfiguration");
    *(void **)&last = dlsym(lib, "WireGuardGetLastError");
    WCHAR name[32], type[] = {'T', 0};
    size_t n = strlen(argv[2]);
    for (size_t i = 0; i <= n; ++i) name[i] = (WCHAR)argv[2][i];
    WIREGUARD_ADAPTER_HANDLE a = create(name, type, NULL);
    if (!a) { printf("create %u\n", last()); return 1; }
    struct { WIREGUARD_INTERFACE i; WIREGUARD_PEER p; WIREGUARD_ALLOWED_IP ip; } c;
    memset(&c, 0, sizeof c);
    c.i.Flags = WIREGUARD_INTERFACE_HAS_PRIVATE_KEY;
    c.i.PrivateKey[0] = 0x40;
    c.i.PeersCount = 1;
    c.p.Flags = WIREGUARD_PEER_HAS_PUBLIC_KEY;
    c.p.PublicKey[0] = 9;
    c.p.AllowedIPsCount = 1;
    c.ip.AddressFamily = WIREGUARD_AF_INET;
    c.ip.Cidr = 8;
    c.ip.Address.V4.S_un.S_addr = 10;
    printf("good %d\n", set(a, &c.i, sizeof c));
    unsigned char before[512], after[512];
    DWORD b1 = sizeof before, b2 = sizeof after;
    get(a, (WIREGUARD_INTERFACE *)before, &b1);
    c.i.Flags |= WIREGUARD_INTERFACE_REPLACE_PEERS;
    c.p.PublicKey[0] = 7;
    c.ip.Cidr = 33;                                   /* bad CIDR */
    errno = 0;
    int r = set(a, &c.i, sizeof c);
    printf("cidr %d %u %d\n", r, last(), errno);
    c.ip.Cidr = 8;
    c.p.AllowedIPsCount = 2;                          /* overruns the buffer */
    errno = 0;
    r = set(a, &c.i, sizeof c);
    printf("overrun %d %u %d\n", r, last(), errno);
    errno = 0;
    r = set(a, &c.i, 79);                             /* shorter than the interface */
    printf("short %d %u %d\n", r, last(), errno);
    get(a, (WIREGUARD_INTERFACE *)after, &b2);
    printf("same %d\n", b1 == b2 && memcmp(before, after, b1) == 0);
    fflush(stdout);
    return 0; /* no WireGuardCloseAdapter: the exit handler removes the adapter */
}
"""


def test_bad_buffers_from_c_and_cleanup_at_exit(
    built: tuple[Path, Path], tmp_path: Path, fresh_netns: str
) -> None:
    library, _ = built
    src = tmp_path / "bad.c"
    src.write_text(BAD_BUFFERS_C)
    exe = tmp_path / "bad"
    proc = subprocess.run(
        [
            "gcc",
            "-std=c11",
            "-Wall",
            "-Werror",
            f"-I{_build.include_dir()}",
            str(src),
            "-ldl",
            "-o",
            str(exe),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    run_dir = tmp_path / "run"
    name = f"bad{secrets.token_hex(3)}"
    done = subprocess.run(
        ["ip", "netns", "exec", fresh_netns, str(exe), str(library), name],
        capture_output=True,
        text=True,
        env=_c_env(run_dir),
        timeout=WAIT,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    results = dict(line.split(" ", 1) for line in done.stdout.splitlines())
    invalid = f"0 {int(ErrorCode.ERROR_INVALID_PARAMETER)} 22"
    assert results == {
        "good": "1",
        "cidr": invalid,
        "overrun": invalid,
        "short": invalid,
        "same": "1",
    }
    # The C exit handler closed the adapter the program left open.
    links = subprocess.run(
        ["ip", "-n", fresh_netns, "link"], capture_output=True, text=True, check=True
    )
    assert name not in links.stdout
    assert not os.path.exists(f"/var/run/wireguard/{name}.sock")
    assert not list(run_dir.glob("*.json"))
