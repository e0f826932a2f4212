"""CIDR grouping: exact minimum noise, checked against exhaustive search on small address spaces."""

from __future__ import annotations

import ipaddress
import itertools
import random

import pytest

from ml.cidr import NoCoverError, group_cidrs, group_ints, min_blocks


def brute_force(authorized: set[int], k: int, bits: int, min_prefixlen: int):
    """Minimum noise over every cover by <= k disjoint prefix blocks, or None if none exists.

    Independent of the tree DP: it branches on which block covers the smallest uncovered
    address (blocks without authorized addresses never help, so they are not tried).
    """
    best = None

    def overlaps(block, chosen):
        p, plen = block
        for q, qlen in chosen:
            short = min(plen, qlen)
            if (p >> (bits - short)) == (q >> (bits - short)):
                return True
        return False

    def rec(uncovered: frozenset, chosen: list, noise: int):
        nonlocal best
        if not uncovered:
            if best is None or noise < best:
                best = noise
            return
        if len(chosen) == k:
            return
        x = min(uncovered)
        for plen in range(min_prefixlen, bits + 1):
            prefix = (x >> (bits - plen)) << (bits - plen)
            block = (prefix, plen)
            if overlaps(block, chosen):
                continue
            inside = {a for a in uncovered if (a >> (bits - plen)) == (x >> (bits - plen))}
            rec(uncovered - inside, chosen + [block], noise + (1 << (bits - plen)) - len(inside))

    rec(frozenset(authorized), [], 0)
    return best


def check_cover(blocks, authorized, k, bits, min_prefixlen):
    """The returned blocks are a valid cover; returns their noise computed from scratch."""
    assert len(blocks) <= k
    members = []
    for prefix, plen in blocks:
        assert min_prefixlen <= plen <= bits
        assert prefix % (1 << (bits - plen)) == 0, "host bits must be clear"
        members.append(set(range(prefix, prefix + (1 << (bits - plen)))))
    for a, b in itertools.combinations(members, 2):
        assert not (a & b), "blocks must be disjoint"
    union = set().union(*members) if members else set()
    assert authorized <= union, "every authorized address must be covered"
    return len(union - authorized)


def test_three_bit_example_by_hand():
    # 3-bit space as in the paper's section 3.3: authorized 000, 001, 011, 101, 110
    a = [0b000, 0b001, 0b011, 0b101, 0b110]
    expected = {1: 3, 2: 3, 3: 1, 4: 0, 5: 0}  # worked out by hand on the binary tree
    for k, noise in expected.items():
        blocks, got, _ = group_ints(a, k=k, bits=3)
        assert got == noise
        assert check_cover(blocks, set(a), k, 3, 0) == noise
    # with equal noise the fewest blocks win: k=2 gives the single block *** (noise 3)
    assert group_ints(a, k=2, bits=3)[0] == [(0, 0)]
    assert group_ints(a, k=3, bits=3)[0] == [(0b000, 1), (0b101, 3), (0b110, 3)]


def test_five_bit_example_from_the_paper():
    # 110** has size 4 and noise 2; 111** and 110** share the prefix 11
    a = [0b11000, 0b11011, 0b11101, 0b11110, 0b11111]
    assert group_ints(a, k=1, bits=5)[:2] == ([(0b11000, 2)], 3)
    assert group_ints(a, k=3, bits=5)[:2] == ([(0b11000, 5), (0b11011, 5), (0b11100, 3)], 1)
    assert group_ints(a, k=4, bits=5)[1] == 0
    # a 110** block alone carries the paper's noise of 2
    blocks, noise, _ = group_ints([0b11000, 0b11011], k=1, bits=5)
    assert blocks == [(0b11000, 3)] and noise == 2


@pytest.mark.parametrize("min_prefixlen", [0, 1, 2, 3])
def test_every_three_bit_set_matches_brute_force(min_prefixlen):
    for r in range(1, 9):
        for subset in itertools.combinations(range(8), r):
            authorized = set(subset)
            for k in range(1, 6):
                expected = brute_force(authorized, k, 3, min_prefixlen)
                if expected is None:
                    with pytest.raises(NoCoverError):
                        group_ints(subset, k=k, bits=3, min_prefixlen=min_prefixlen)
                    continue
                blocks, noise, _ = group_ints(subset, k=k, bits=3, min_prefixlen=min_prefixlen)
                assert noise == expected, (subset, k, min_prefixlen)
                assert check_cover(blocks, authorized, k, 3, min_prefixlen) == noise


def test_random_five_and_six_bit_sets_match_brute_force():
    rng = random.Random(7)
    for _ in range(150):
        bits = rng.choice([5, 6])
        authorized = set(rng.sample(range(1 << bits), rng.randint(1, 9)))
        k = rng.randint(1, 6)
        min_prefixlen = rng.choice([0, 1, bits - 3, bits - 2])
        expected = brute_force(authorized, k, bits, min_prefixlen)
        if expected is None:
            with pytest.raises(NoCoverError):
                group_ints(authorized, k=k, bits=bits, min_prefixlen=min_prefixlen)
            continue
        blocks, noise, _ = group_ints(authorized, k=k, bits=bits, min_prefixlen=min_prefixlen)
        assert noise == expected, (sorted(authorized), k, bits, min_prefixlen)
        assert check_cover(blocks, authorized, k, bits, min_prefixlen) == noise


def test_no_cover_reports_the_smallest_k_that_works():
    ips = ["10.0.0.1", "10.0.1.1", "10.0.2.1", "192.168.0.1"]
    with pytest.raises(NoCoverError) as err:
        group_cidrs(ips, k=2, min_prefixlen=24)
    assert err.value.min_k == 4
    assert "smallest k that works is 4" in str(err.value)
    assert min_blocks(ips, min_prefixlen=24) == 4
    # and that k does work
    assert len(group_cidrs(ips, k=4, min_prefixlen=24).blocks) == 4
    # the smallest k agrees with exhaustive search
    rng = random.Random(3)
    for _ in range(50):
        authorized = set(rng.sample(range(32), rng.randint(1, 8)))
        mp = rng.randint(0, 5)
        need = min_blocks([ipaddress.IPv4Address(a) for a in authorized], min_prefixlen=27 + mp)
        smallest = next(k for k in range(1, 9) if brute_force(authorized, k, 5, mp) is not None)
        assert need == smallest


def test_ipv4_cidrs_cover_the_addresses_with_size_limit():
    ips = [f"10.1.{i}.{j}" for i in range(4) for j in (1, 7, 200)] + ["172.16.5.5"]
    cover = group_cidrs(ips, k=5, min_prefixlen=24)
    nets = [ipaddress.ip_network(c) for c in cover.cidrs]
    assert all(n.prefixlen >= 24 for n in nets)
    assert all(any(ipaddress.ip_address(ip) in n for n in nets) for ip in ips)
    assert cover.noise == sum(n.num_addresses for n in nets) - len(ips)
    assert cover.covered == len(ips)


def test_ipv6_is_exact_with_huge_blocks():
    ips = ["2001:db8::1", "2001:db8::2", "2001:db8:0:1::5", "fd00::1"]
    cover = group_cidrs(ips, k=1)
    assert cover.cidrs == ["::/0"]
    assert cover.noise == 2**128 - 4  # exact integer, not a float approximation
    cover = group_cidrs(ips, k=3, min_prefixlen=64)
    nets = [ipaddress.ip_network(c) for c in cover.cidrs]
    assert all(any(ipaddress.ip_address(ip) in n for n in nets) for ip in ips)
    assert cover.noise == sum(n.num_addresses for n in nets) - 4
    assert cover.noise == 2 + 0 + 0  # 2001:db8::/126 around ::1 and ::2, two single addresses


def test_mixed_families_and_empty_input():
    with pytest.raises(ValueError, match="mixed"):
        group_cidrs(["10.0.0.1", "::1"], k=2)
    assert group_cidrs([], k=3).blocks == []
