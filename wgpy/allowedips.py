"""Allowed-IPs table: longest-prefix match from an address to its owner.

This is WireGuard's cryptokey routing table (whitepaper 2): outbound, the
destination address of a packet picks the peer; inbound, the source address
of a decrypted packet must map back to the peer that sent it.

Structure (same shape as the kernel's ``allowedips.c`` and wireguard-go's
``device/allowedips.go``): one binary, path-compressed trie per address
family, keyed by the address as a Python ``int``.  A node holds a prefix, its
two children, a parent link (so removal is O(1)) and an owner; nodes without
an owner are pure branch points and always have two children.  Removing a
prefix collapses the nodes it leaves redundant, so removing everything leaves
both roots empty.

Lookups are on the per-packet path.  Besides the trie, each family keeps an
exact-match index: one ``dict`` per prefix length present, mapping the prefix
value to its owner.  When only a few distinct lengths are configured (the
usual case: /32 and /128 hosts, a /0 default, a few subnets) a lookup probes
those dicts from the longest length down, which costs a handful of dict
operations instead of a walk of ~log2(n) trie levels.  With many distinct
lengths the trie walk is used.  Both give the same answer; the trie stays the
authority for structure, removal and iteration.

Concurrency: mutations publish new nodes with a single reference assignment
after building them, so under the GIL a concurrent lookup sees either the old
or the new state of one prefix; callers that need more should hold a lock.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator
from typing import ClassVar, Generic, TypeVar

T = TypeVar("T")

#: Lookup strategy.  Probing the per-length dicts costs one dict lookup per
#: distinct prefix length (longest first) and a trie walk one step per level,
#: about three dict lookups' worth, over ~log2(n) levels (measured on CPython
#: 3.11).  So a family uses the dicts while it has at most
#: max(_HASH_MIN_LENGTHS, _HASH_PER_LEVEL * n.bit_length()) distinct lengths.
_HASH_MIN_LENGTHS = 8
_HASH_PER_LEVEL = 2

# _BRANCH_BIT[s]: the bit a node with shift s (= bits - cidr) branches on,
# i.e. the first bit after its prefix; 0 for full-length prefixes (no
# children).  Shared int objects, so nodes don't each allocate one.
_BRANCH_BIT: tuple[int, ...] = (0, *(1 << (s - 1) for s in range(1, 129)))


class _Node(Generic[T]):
    """One trie node: the prefix ``hi`` (address >> shift), its length as
    ``shift = BITS - cidr``, the owner (None for a pure branch node)."""

    __slots__ = ("bm", "c0", "c1", "hi", "owner", "parent", "shift")
    BITS: ClassVar[int]

    def __init__(self, hi: int, shift: int, owner: T | None, parent: _Node[T] | None) -> None:
        self.hi = hi
        self.shift = shift
        self.bm = _BRANCH_BIT[shift]
        self.owner = owner
        self.c0: _Node[T] | None = None
        self.c1: _Node[T] | None = None
        self.parent = parent

    def prefix(self) -> tuple[bytes, int]:
        """Canonical (masked) address bytes and cidr of this node."""
        bits = self.BITS
        return (self.hi << self.shift).to_bytes(bits >> 3, "big"), bits - self.shift


class _Node4(_Node[T]):
    __slots__ = ()
    BITS = 32


class _Node6(_Node[T]):
    __slots__ = ()
    BITS = 128


class _Family(Generic[T]):
    """Per-family state: trie root plus the per-length exact-match index."""

    __slots__ = ("bits", "by_shift", "count", "fast", "lens", "node_cls", "root", "size_class")

    def __init__(self, bits: int, node_cls: type[_Node[T]]) -> None:
        self.bits = bits
        self.node_cls = node_cls
        self.root: _Node[T] | None = None
        self.count = 0  # owned prefixes
        self.size_class = 0  # count.bit_length() when `fast` was chosen
        # shift -> {prefix value -> owner}; only owned prefixes are indexed.
        self.by_shift: dict[int, dict[int, T]] = {}
        # (shift, dict) pairs, most specific first: the probe order.
        self.lens: list[tuple[int, dict[int, T]]] = []
        # `lens` when probing the dicts is the lookup strategy, else None.
        self.fast: list[tuple[int, dict[int, T]]] | None = []

    def reindex(self) -> None:
        """Rebuild the probe list and pick the lookup strategy."""
        lens = sorted(self.by_shift.items())
        self.size_class = size_class = self.count.bit_length()
        self.lens = lens
        limit = max(_HASH_MIN_LENGTHS, _HASH_PER_LEVEL * size_class)
        self.fast = lens if len(lens) <= limit else None


def _trie_lookup(node: _Node[T] | None, addr: int) -> T | None:
    """Longest-prefix match by walking the trie from ``node``."""
    best = None
    while node is not None:
        if addr >> node.shift != node.hi:
            break
        owner = node.owner
        if owner is not None:
            best = owner
        node = node.c1 if addr & node.bm else node.c0
    return best


def _hash_lookup(lens: list[tuple[int, dict[int, T]]], addr: int) -> T | None:
    """Longest-prefix match by probing each present prefix length."""
    for shift, table in lens:
        owner = table.get(addr >> shift)
        if owner is not None:
            return owner
    return None


def _bad_cidr(cidr: object, bits: int) -> Exception:
    if not isinstance(cidr, int) or isinstance(cidr, bool):
        return TypeError(f"cidr must be an int, not {type(cidr).__name__}")
    return ValueError(f"cidr {cidr} out of range 0..{bits}")


def _bad_addr(addr: object) -> Exception:
    if not isinstance(addr, bytes | bytearray | memoryview):
        return TypeError(f"address must be bytes, not {type(addr).__name__}")
    return ValueError(f"address must be 4 or 16 bytes, got {len(addr)}")


def parse_network(network: str) -> tuple[bytes, int]:
    """Parse "ADDR" or "ADDR/CIDR" (IPv4 or IPv6) into (address bytes with
    host bits cleared, cidr); ValueError on junk.

    Accepts exactly what ``ipaddress.ip_network(network, strict=False)``
    accepts, except scoped IPv6 addresses ("fe80::1%eth0", anything with a
    "%"), which an allowed-IP cannot be.  The common forms take a fast path through
    ``inet_pton``; the rest (netmask suffixes, anything inet_pton refuses)
    go through ``ipaddress`` so the accepted language stays the same.
    """
    if not isinstance(network, str):
        raise TypeError(f"network must be str, not {type(network).__name__}")
    text, slash, plen = network.partition("/")
    six = ":" in text
    try:
        packed = socket.inet_pton(socket.AF_INET6 if six else socket.AF_INET, text)
    except OSError:
        packed = b""
    bits = 128 if six else 32
    if packed and not slash:
        return packed, bits
    if packed and plen.isascii() and plen.isdigit():
        cidr = int(plen)
        if cidr > bits:
            raise ValueError(f"invalid network {network!r}: cidr {cidr} out of range 0..{bits}")
        shift = bits - cidr
        key = int.from_bytes(packed, "big") >> shift << shift
        return key.to_bytes(bits >> 3, "big"), cidr
    if "%" in text:
        raise ValueError(f"invalid network {network!r}: scoped address")
    try:
        net = ipaddress.ip_network(network, strict=False)
    except ValueError as exc:
        raise ValueError(f"invalid network {network!r}: {exc}") from None
    return net.network_address.packed, net.prefixlen


class AllowedIPs(Generic[T]):
    """Map IPv4/IPv6 prefixes to owners (peers); look up by longest prefix.

    Owners are compared by identity and must not be None (None means "no
    match" in lookups).  Addresses are big-endian bytes (4 or 16) or, on the
    fast lookup paths, ints.
    """

    __slots__ = ("_generation", "_owners", "_v4", "_v6")

    def __init__(self) -> None:
        self._v4: _Family[T] = _Family(32, _Node4)
        self._v6: _Family[T] = _Family(128, _Node6)
        # id(owner) -> that owner's nodes in insertion order.  Keyed by id so
        # owners need not be hashable and are never merged by __eq__; the
        # nodes keep the owner alive, so the id cannot be reused meanwhile.
        self._owners: dict[int, dict[_Node[T], None]] = {}
        self._generation = 0

    # -- mutation ---------------------------------------------------------

    def _prefix(self, addr: bytes, cidr: int) -> tuple[_Family[T], int, int]:
        """(family, masked key, host-bit count) of ``addr/cidr``; raises
        ValueError/TypeError for a bad address or prefix length."""
        n = len(addr)
        if n == 4 and isinstance(addr, bytes | bytearray | memoryview):
            f = self._v4
        elif n == 16 and isinstance(addr, bytes | bytearray | memoryview):
            f = self._v6
        else:
            raise _bad_addr(addr)
        bits = f.bits
        if type(cidr) is not int:
            if not isinstance(cidr, int) or isinstance(cidr, bool):
                raise _bad_cidr(cidr, bits)
            cidr = int(cidr)  # an int subclass (e.g. IntEnum): use the plain value
        if not 0 <= cidr <= bits:
            raise _bad_cidr(cidr, bits)
        shift = bits - cidr
        return f, int.from_bytes(addr, "big") >> shift << shift, shift

    def insert(self, addr: bytes, cidr: int, owner: T) -> None:
        """Map ``addr/cidr`` to ``owner``.

        ``addr`` is 4 or 16 bytes; ``cidr`` is 0..32 or 0..128, else
        ValueError (TypeError for a non-bytes address or non-int cidr) and
        nothing changes.  Host bits are masked off.  If the prefix exists it
        moves to ``owner``, leaving its old owner's list.
        """
        f, key, shift = self._prefix(addr, cidr)
        if owner is None:
            raise ValueError("owner must not be None")
        self._insert(f, key, shift, owner)

    def insert_network(
        self, network: str | ipaddress.IPv4Network | ipaddress.IPv6Network, owner: T
    ) -> None:
        """Insert a prefix given as text ("10.0.0.1/8": host bits allowed,
        see :func:`parse_network`) or as an ``ipaddress`` network.
        ValueError on junk, nothing changes."""
        if isinstance(network, ipaddress.IPv4Network | ipaddress.IPv6Network):
            self.insert(network.network_address.packed, network.prefixlen, owner)
        else:
            addr, cidr = parse_network(network)
            self.insert(addr, cidr, owner)

    def _insert(self, f: _Family[T], key: int, shift: int, owner: T) -> None:
        bits = f.bits
        # Walk down while the node's prefix covers the new one.
        parent: _Node[T] | None = None
        node = f.root
        while node is not None:
            ns = node.shift
            if ns < shift or key >> ns != node.hi:
                break
            if ns == shift:
                self._set_owner(f, node, owner)
                return
            parent = node
            node = node.c1 if key & node.bm else node.c0

        new = f.node_cls(key >> shift, shift, owner, parent)
        if node is not None:
            # `node` sits where the new prefix belongs but does not cover it:
            # either the new prefix covers `node`, or the two diverge and a
            # branch node goes at their common prefix length.
            node_key = node.hi << node.shift
            common = bits - (key ^ node_key).bit_length()
            if common >= bits - shift:
                if node_key & new.bm:
                    new.c1 = node
                else:
                    new.c0 = node
                node.parent = new
                top = new
            else:
                bshift = bits - common  # common < both prefix lengths here
                top = f.node_cls(key >> bshift, bshift, None, parent)
                if key & top.bm:
                    top.c0, top.c1 = node, new
                else:
                    top.c0, top.c1 = new, node
                node.parent = top
                new.parent = top
            # Publish last: readers see the subtree only once it is complete.
            self._replace(f, parent, node, top)
        elif parent is None:
            f.root = new
        elif key & parent.bm:
            parent.c1 = new
        else:
            parent.c0 = new
        self._index(f, new, owner)
        self._generation += 1

    def _set_owner(self, f: _Family[T], node: _Node[T], owner: T) -> None:
        """An exact prefix exists at ``node``: give it to ``owner``."""
        old = node.owner
        if old is owner:
            # Same owner: routing is unchanged, but the prefix moves to the end
            # of the owner's list, as the kernel and wireguard-go do (so UAPI
            # `get` lists prefixes in the order they were last set).
            self._disown(node, owner)
            self._adopt(node, owner)
            return
        if old is None:
            node.owner = owner  # a branch node becomes a prefix
            self._index(f, node, owner)
        else:
            self._disown(node, old)
            node.owner = owner
            f.by_shift[node.shift][node.hi] = owner
            self._adopt(node, owner)
        self._generation += 1

    def _adopt(self, node: _Node[T], owner: T) -> None:
        nodes = self._owners.get(id(owner))
        if nodes is None:
            self._owners[id(owner)] = {node: None}
        else:
            nodes[node] = None

    def _disown(self, node: _Node[T], owner: T) -> None:
        nodes = self._owners[id(owner)]
        del nodes[node]
        if not nodes:
            del self._owners[id(owner)]

    def _index(self, f: _Family[T], node: _Node[T], owner: T) -> None:
        """Account for a prefix that just gained an owner."""
        self._adopt(node, owner)
        f.count += 1
        table = f.by_shift.get(node.shift)
        if table is None:
            f.by_shift[node.shift] = {node.hi: owner}
            f.reindex()
        else:
            table[node.hi] = owner
            if f.count.bit_length() != f.size_class:
                f.reindex()

    @staticmethod
    def _replace(
        f: _Family[T], parent: _Node[T] | None, old: _Node[T], new: _Node[T] | None
    ) -> None:
        if parent is None:
            f.root = new
        elif parent.c0 is old:
            parent.c0 = new
        else:
            parent.c1 = new

    def _unlink(self, f: _Family[T], node: _Node[T]) -> None:
        """Drop ``node``'s prefix (owner list already updated) and collapse
        the trie around it."""
        f.count -= 1
        table = f.by_shift[node.shift]
        del table[node.hi]
        if not table:
            del f.by_shift[node.shift]
            f.reindex()
        elif f.count.bit_length() != f.size_class:
            f.reindex()
        node.owner = None
        c0, c1 = node.c0, node.c1
        if c0 is not None and c1 is not None:
            return  # still needed as a branch point
        child = c0 if c0 is not None else c1
        parent = node.parent
        if child is not None:
            child.parent = parent
        self._replace(f, parent, node, child)
        node.parent = None
        if child is None and parent is not None and parent.owner is None:
            # A pure branch node left with one child: splice it out too.
            other = parent.c0 if parent.c0 is not None else parent.c1
            assert other is not None  # branch nodes always had two children
            grand = parent.parent
            other.parent = grand
            self._replace(f, grand, parent, other)
            parent.parent = None

    @staticmethod
    def _find(f: _Family[T], key: int, shift: int) -> _Node[T] | None:
        node = f.root
        while node is not None:
            ns = node.shift
            if ns < shift or key >> ns != node.hi:
                return None
            if ns == shift:
                return node
            node = node.c1 if key & node.bm else node.c0
        return None

    def remove(self, addr: bytes, cidr: int, owner: T) -> bool:
        """Remove exactly ``addr/cidr`` (host bits masked) if ``owner`` owns
        it; return whether it was removed.  Bad input raises as in
        :meth:`insert`."""
        f, key, shift = self._prefix(addr, cidr)
        if owner is None:
            return False
        node = self._find(f, key, shift)
        if node is None or node.owner is not owner:
            return False
        self._disown(node, owner)
        self._unlink(f, node)
        self._generation += 1
        return True

    def remove_by_owner(self, owner: T) -> int:
        """Remove every prefix of ``owner``; return how many there were."""
        nodes = self._owners.pop(id(owner), None)
        if nodes is None:
            return 0
        v4, v6 = self._v4, self._v6
        for node in nodes:
            self._unlink(v4 if node.BITS == 32 else v6, node)
        self._generation += 1
        return len(nodes)

    def clear(self) -> None:
        """Remove everything."""
        for f in (self._v4, self._v6):
            # Break parent links so the nodes are freed without waiting for
            # the cycle collector.
            stack = [f.root]
            while stack:
                node = stack.pop()
                if node is not None:
                    node.parent = None
                    stack.append(node.c0)
                    stack.append(node.c1)
            f.root = None
            f.by_shift = {}
            f.count = 0
            f.reindex()
        self._owners = {}
        self._generation += 1

    # -- lookup (per-packet path) -------------------------------------------

    def lookup(self, addr: bytes) -> T | None:
        """Owner of the longest prefix containing ``addr`` (4 or 16 bytes,
        else ValueError), or None."""
        n = len(addr)
        if n == 4:
            f = self._v4
        elif n == 16:
            f = self._v6
        else:
            raise ValueError(f"address must be 4 or 16 bytes, got {n}")
        a = int.from_bytes(addr, "big")
        lens = f.fast
        return _hash_lookup(lens, a) if lens is not None else _trie_lookup(f.root, a)

    # -- inspection -----------------------------------------------------------

    def entries(self, owner: T) -> list[tuple[bytes, int]]:
        """``owner``'s prefixes as (canonical address bytes, cidr), in the
        order each was first inserted for this owner."""
        nodes = self._owners.get(id(owner))
        if nodes is None:
            return []
        return [node.prefix() for node in nodes]

    def owner_count(self, owner: T) -> int:
        """How many prefixes ``owner`` has."""
        nodes = self._owners.get(id(owner))
        return 0 if nodes is None else len(nodes)

    def __iter__(self) -> Iterator[tuple[bytes, int, T]]:
        """Every prefix as (address bytes, cidr, owner): IPv4 first, each
        family in ascending (address, cidr) order.  Mutating the table while
        iterating raises RuntimeError."""
        gen = self._generation
        for f in (self._v4, self._v6):
            stack = [f.root]
            while stack:
                node = stack.pop()
                if node is None:
                    continue
                owner = node.owner
                if owner is not None:
                    addr, cidr = node.prefix()
                    yield addr, cidr, owner
                    if self._generation != gen:
                        raise RuntimeError("AllowedIPs changed during iteration")
                stack.append(node.c1)
                stack.append(node.c0)

    def __len__(self) -> int:
        return self._v4.count + self._v6.count

    def __repr__(self) -> str:
        return f"<AllowedIPs {len(self)} prefixes, {len(self._owners)} owners>"

    @property
    def generation(self) -> int:
        """Incremented by every call that changes the table (no-op calls
        leave it alone); callers use it to invalidate cached lookups."""
        return self._generation
