"""The cross-platform userspace API (UAPI): ``get``/``set`` over a Unix socket.

This is the text protocol of wireguard.com/xplatform that ``wg`` speaks to a
userspace implementation through ``/var/run/wireguard/NAME.sock``.  The
semantics follow wireguard-go (``device/uapi.go``, ``ipc/uapi_*.go``):

* framing: a request starts with the line ``get=1`` or ``set=1``; anything
  else closes the connection without an answer.  ``get=1`` must be followed
  by an empty line.  Every answer ends with ``errno=N`` and an empty line,
  N being 0 or a *negated* errno (``errno=-22``).  One connection may carry
  several operations.
* ``get``: ``private_key`` (if set), ``listen_port`` and ``fwmark`` (if not
  zero), then per peer in insertion order ``public_key``, ``preshared_key``
  (all-zero when unset), ``protocol_version=1``, ``endpoint`` (if known),
  ``last_handshake_time_sec``/``_nsec`` (Unix time, 0 = never), ``tx_bytes``,
  ``rx_bytes``, ``persistent_keepalive_interval`` and one ``allowed_ip`` per
  prefix in insertion order.
* ``set``: ``key=value`` lines applied in order until an empty line or end of
  input.  Device keys come first; ``public_key`` selects (or creates) a peer
  and the following lines configure it.  The first bad line stops the
  operation with an errno; the lines before it stay applied (as in
  wireguard-go, nothing is rolled back).

Entry points: :func:`uapi_get` and :func:`uapi_set` work on any
:class:`UapiBackend` (the runtime's ``Interface`` is one);
:class:`UapiServer` serves them on a Unix socket; :class:`UapiClient` is the
matching client for our CLI and tests.

Differences from wireguard-go (current master), on purpose:

* peers come out in insertion order (go walks a map: random order);
* a set is applied in batches under the backend lock, which is never held
  while waiting for the client (go's ipcMutex is separate from its data
  path; ours is not);
* the immediate keepalive goes only to a peer whose interval this request
  turned on (go's pkaOn flag survives into the following peer blocks, so it
  also pokes those peers); when a later line fails, the interval given
  before it is still applied and its keepalive sent (go skips the
  keepalive then);
* an IPv6 endpoint zone must be a number or an existing interface name (as
  the Linux bind of wireguard-go 0.0.2022 required; current go accepts any
  text and fails when sending);
* IPv4-mapped endpoints are shown as IPv4 (wgpy.endpoint keeps one form);
* after a failed set the connection is closed (go reads the rest as a new
  operation, after its line scanner swallowed whatever it had buffered, so
  in practice it closes too); operations pipelined after a successful set
  are served (go's scanner swallows them);
* an over-long line (> UAPI_MAX_LINE) answers EIO and ends the connection.

The package has three parts: :mod:`~wgpy.uapi.protocol` (values, the errno
line, the parsed ``get`` answer), :mod:`~wgpy.uapi.apply` (``get``/``set`` on
a Device) and :mod:`~wgpy.uapi.server` (the socket server and client).
"""

from __future__ import annotations

from wgpy.uapi.apply import SetOperation, UapiBackend, uapi_get, uapi_set
from wgpy.uapi.protocol import UapiConfig, UapiError, UapiPeer, parse_get_response
from wgpy.uapi.server import UapiClient, UapiServer, socket_path

__all__ = [
    "SetOperation",
    "UapiBackend",
    "UapiClient",
    "UapiConfig",
    "UapiError",
    "UapiPeer",
    "UapiServer",
    "parse_get_response",
    "socket_path",
    "uapi_get",
    "uapi_set",
]
