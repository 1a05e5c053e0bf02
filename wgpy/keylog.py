"""WireGuard key logs in the format of Wireshark's ``wg.keylog_file``.

A key log lets Wireshark (and tshark) decrypt captured handshakes and the
transport data of the sessions they make, like SSLKEYLOGFILE does for TLS.
Each handshake we take part in adds one block of ``NAME = base64`` lines:
our static private key, the peer's static public key, the ephemeral private
key we made for this handshake, and the preshared key.

It is a secret: anyone with the file reads the tunnel's traffic.  It is off
unless ``WGPY_KEYLOG_FILE`` names a file (see
:mod:`wgpy.runtime.options`); the file is created 0600 and appended to.

:func:`keylog_block` is pure (the Device formats its blocks with it and hands
them to its ``keylog`` sink); the file writer the I/O shell gives the Device
is :class:`wgpy.runtime.keylog.KeylogFile`.
"""

from __future__ import annotations

import base64

__all__ = ["keylog_block"]


def _b64(key: bytes | bytearray) -> str:
    return base64.b64encode(bytes(key)).decode()


def keylog_block(
    local_static_private: bytes | bytearray,
    remote_static_public: bytes,
    local_ephemeral_private: bytes | bytearray,
    preshared_key: bytes | bytearray,
) -> str:
    """The key-log lines of one handshake (newline-terminated)."""
    return (
        f"LOCAL_STATIC_PRIVATE_KEY = {_b64(local_static_private)}\n"
        f"REMOTE_STATIC_PUBLIC_KEY = {_b64(remote_static_public)}\n"
        f"LOCAL_EPHEMERAL_PRIVATE_KEY = {_b64(local_ephemeral_private)}\n"
        f"PRESHARED_KEY = {_b64(preshared_key)}\n"
    )
