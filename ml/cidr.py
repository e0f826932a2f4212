"""Exact minimum-noise grouping of IP addresses into at most k disjoint CIDR blocks."""

from __future__ import annotations

import bisect
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

__all__ = ["CidrCover", "NoCoverError", "group_cidrs", "group_ints", "min_blocks"]


class NoCoverError(ValueError):
    """No cover exists under the limits; ``min_k`` is the smallest k that works."""

    def __init__(self, message: str, min_k: int) -> None:
        super().__init__(message)
        self.min_k = min_k


@dataclass(frozen=True)
class CidrCover:
    """A cover of authorized addresses by disjoint CIDR blocks.

    Attributes
    ----------
    blocks : list of ipaddress.IPv4Network or ipaddress.IPv6Network
        The blocks, in address order.
    noise : int
        Number of addresses inside the blocks that are not authorized.
    covered : int
        Number of authorized addresses (all of them are covered).
    min_k : int
        Smallest number of blocks with which any cover exists under the size limit.
    """

    blocks: list = field(default_factory=list)
    noise: int = 0
    covered: int = 0
    min_k: int = 0

    @property
    def cidrs(self) -> list[str]:
        """The blocks as strings, e.g. ``["10.0.0.0/30"]``."""
        return [str(b) for b in self.blocks]


class _Node:
    __slots__ = ("lo", "hi", "plen", "left", "right", "cost", "prefix")

    def __init__(self, lo, hi, plen, prefix, left=None, right=None):
        self.lo, self.hi, self.plen, self.prefix = lo, hi, plen, prefix
        self.left, self.right = left, right
        self.cost = None


def _build(values: list[int], lo: int, hi: int, bits: int) -> _Node:
    """Compressed binary prefix tree over ``values[lo:hi]`` (sorted, distinct)."""
    first, last = values[lo], values[hi - 1]
    if hi - lo == 1:
        return _Node(lo, hi, bits, first)
    h = (first ^ last).bit_length()  # the branching bit is h-1 (counting from the low end)
    plen = bits - h
    prefix = (first >> h) << h
    mid = bisect.bisect_left(values, prefix | (1 << (h - 1)), lo, hi)
    return _Node(lo, hi, plen, prefix, _build(values, lo, mid, bits), _build(values, mid, hi, bits))


def _postorder(root: _Node) -> list[_Node]:
    out, stack = [], [root]
    while stack:
        node = stack.pop()
        out.append(node)
        if node.left is not None:
            stack.append(node.left)
            stack.append(node.right)
    out.reverse()
    return out


def _min_blocks_tree(root: _Node, min_prefixlen: int) -> int:
    need: dict[int, int] = {}
    for node in _postorder(root):
        if node.plen >= min_prefixlen:
            need[id(node)] = 1
        else:
            need[id(node)] = need[id(node.left)] + need[id(node.right)]
    return need[id(root)]


def _to_ints(ips: Iterable) -> tuple[list[int], int]:
    addrs = set()
    versions = set()
    for ip in ips:
        a = ip if isinstance(ip, (ipaddress.IPv4Address, ipaddress.IPv6Address)) else (
            ipaddress.ip_address(ip))
        versions.add(a.version)
        addrs.add(int(a))
    if len(versions) > 1:
        raise ValueError("IPv4 and IPv6 addresses mixed: group each family separately")
    version = versions.pop() if versions else 4
    return sorted(addrs), version


def min_blocks(ips: Iterable, min_prefixlen: int = 0) -> int:
    """Smallest number of disjoint CIDR blocks, none larger than ``/min_prefixlen``, covering ``ips``.

    Examples
    --------
    >>> min_blocks(["10.0.0.1", "10.0.1.1"], min_prefixlen=24)
    2
    >>> min_blocks(["10.0.0.1", "10.0.1.1"], min_prefixlen=16)
    1
    """
    values, version = _to_ints(ips)
    if not values:
        return 0
    bits = 32 if version == 4 else 128
    return _min_blocks_tree(_build(values, 0, len(values), bits), min_prefixlen)


def group_ints(values: Iterable[int], k: int, bits: int, min_prefixlen: int = 0
               ) -> tuple[list[tuple[int, int]], int, int]:
    """Minimum-noise cover of integer addresses in a ``bits``-bit space.

    Parameters
    ----------
    values : iterable of int
        Authorized addresses, ``0 <= v < 2**bits`` (duplicates are ignored).
    k : int
        Maximum number of blocks.
    bits : int
        Width of the address space (32 for IPv4, 128 for IPv6, small values in tests).
    min_prefixlen : int
        No block may have a prefix shorter than this, i.e. at most ``2**(bits - min_prefixlen)``
        addresses per block (the paper's maximum prefix set size).

    Returns
    -------
    blocks : list of (prefix, prefixlen)
        Disjoint blocks in address order; ``prefix`` has its host bits cleared.
    noise : int
        Unauthorized addresses covered.
    min_k : int
        Smallest k for which a cover exists.

    Raises
    ------
    NoCoverError
        When no cover with at most ``k`` blocks exists; its ``min_k`` says which k would work.

    Examples
    --------
    The 5-bit space, authorized 11000 and 11011: one block ``110**`` has noise 2.

    >>> group_ints([0b11000, 0b11011], k=1, bits=5)
    ([(24, 3)], 2, 1)
    >>> group_ints([0b11000, 0b11011], k=2, bits=5)
    ([(24, 5), (27, 5)], 0, 1)
    """
    if not 0 <= min_prefixlen <= bits:
        raise ValueError(f"min_prefixlen must be between 0 and {bits}, got {min_prefixlen}")
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    vals = sorted(set(int(v) for v in values))
    if not vals:
        return [], 0, 0
    if vals[0] < 0 or vals[-1] >= (1 << bits):
        raise ValueError(f"addresses must lie in [0, 2**{bits})")
    root = _build(vals, 0, len(vals), bits)
    need = _min_blocks_tree(root, min_prefixlen)
    if need > k:
        raise NoCoverError(
            f"no cover of {len(vals)} addresses with at most {k} blocks of prefix length "
            f">= {min_prefixlen}; the smallest k that works is {need}", min_k=need)

    # Any total noise is below 2**bits, so costs are exact in int64 up to 60-bit spaces (IPv4);
    # wider spaces (IPv6) use Python integers.
    exact64 = bits <= 60
    dtype = np.int64 if exact64 else object
    inf = (1 << 61) if exact64 else (1 << (bits + 2))

    for node in _postorder(root):
        n = node.hi - node.lo
        m = min(k, n) + 1
        if node.left is None:
            cost = np.array([inf, 0], dtype=dtype)[:m]
        else:
            a, b = node.left.cost, node.right.cost
            if len(a) > len(b):
                a, b = b, a
            cost = np.full(m, inf, dtype=dtype)
            for i in range(1, len(a)):  # both children need at least one block
                width = min(len(b), m - i)
                if width <= 1:
                    break
                seg = a[i] + b[1:width]
                np.minimum(cost[i + 1:i + width], seg, out=cost[i + 1:i + width])
            if node.plen >= min_prefixlen and m > 1:
                block = (1 << (bits - node.plen)) - n
                np.minimum(cost[1:], np.array(block, dtype=dtype), out=cost[1:])
        # "at most j blocks": make the cost non-increasing in j
        node.cost = np.minimum.accumulate(cost) if dtype is np.int64 else np.array(
            np.minimum.accumulate(cost.astype(object)), dtype=object)

    best = root.cost[-1]
    used = int(np.argmax(root.cost == best))  # fewest blocks reaching the minimum noise
    blocks: list[tuple[int, int]] = []
    stack = [(root, used)]
    while stack:
        node, j = stack.pop()
        target = node.cost[j]
        n = node.hi - node.lo
        if node.plen >= min_prefixlen and (1 << (bits - node.plen)) - n == target:
            blocks.append((node.prefix, node.plen))
            continue
        a, b = node.left.cost, node.right.cost
        for i in range(1, min(len(a), j)):
            r = min(j - i, len(b) - 1)
            if a[i] + b[r] == target:
                stack.append((node.left, i))
                stack.append((node.right, r))
                break
        else:  # pragma: no cover - the DP guarantees a split reaching the target
            raise AssertionError("inconsistent grouping table")
    blocks.sort()
    return blocks, int(best), need


def group_cidrs(ips: Iterable, k: int, min_prefixlen: int | None = None) -> CidrCover:
    """Cover ``ips`` with at most ``k`` disjoint CIDR blocks adding the fewest other addresses.

    Exact dynamic programming over the binary prefix tree of the addresses (seed 001,
    section 3): for every branching node it keeps the minimum noise with at most ``j`` blocks,
    ``j <= k``, either the node's own block or the best split between its two subtrees.

    Parameters
    ----------
    ips : iterable of str or ipaddress objects
        Authorized addresses, all IPv4 or all IPv6.
    k : int
        Maximum number of blocks (firewall rules or group entries).
    min_prefixlen : int, optional
        Largest allowed block as a prefix length (e.g. 24: no block larger than a /24).
        Defaults to 0, i.e. no size limit.

    Returns
    -------
    CidrCover

    Raises
    ------
    NoCoverError
        When no cover exists; the message and ``min_k`` say the smallest k that works.

    Examples
    --------
    >>> cover = group_cidrs(["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.9"], k=2)
    >>> cover.cidrs, cover.noise
    (['10.0.0.0/30', '10.0.0.9/32'], 1)
    >>> group_cidrs(["2001:db8::1", "2001:db8::2"], k=1).cidrs
    ['2001:db8::/126']
    """
    values, version = _to_ints(ips)
    bits = 32 if version == 4 else 128
    blocks, noise, need = group_ints(values, k, bits, 0 if min_prefixlen is None else min_prefixlen)
    net = ipaddress.IPv4Network if version == 4 else ipaddress.IPv6Network
    return CidrCover([net((p, plen)) for p, plen in blocks], noise, len(values), need)
