"""`fwsiem ingest` against a real OpenSearch: idempotent, kill-safe, spools when down, dead letters."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from plugin.pcap import pcap_flows
from plugin.setup import run_setup

pytestmark = pytest.mark.timeout(1800)
DEADLETTER = "fwsiem-deadletter"


def _has_ingest_node(store) -> bool:
    nodes = store.request("GET", "/_cat/nodes", params={"h": "node.role", "format": "json"})
    return any("i" in (n.get("node.role") or "") for n in nodes)


@pytest.fixture
def ship(os_engine, unique_prefix, tmp_path):
    """A configuration file for the `fwsiem` subprocess: own events stream, own spool."""
    store = os_engine.store
    if not _has_ingest_node(store):
        pytest.fail(f"{os_engine.url} has no node with the ingest role: bulk requests with "
                    "?pipeline= cannot run there (the local engine must start with node.roles "
                    "including ingest)")
    events = f"logs-fwsiem.{unique_prefix}-default"
    config = os_engine.config(events=events)
    run_setup(store, config)
    spool = tmp_path / "spool"
    toml = tmp_path / "fwsiem.toml"
    toml.write_text(f'[engine]\nurl = "{os_engine.url}"\nspool_dir = "{spool}"\n'
                    f'[indices]\nevents = "{events}"\n[ingest]\nretry_wait = "1s"\n')
    yield _Ship(os_engine, events, toml, spool, tmp_path)
    store.delete_index(events)


class _Ship:
    def __init__(self, engine, events, toml, spool, tmp):
        self.engine, self.store, self.events = engine, engine.store, events
        self.toml, self.spool, self.tmp = toml, spool, tmp

    def env(self, toml=None):
        env = dict(os.environ, FWSIEM_CONFIG=str(toml or self.toml))
        for key in ("FWSIEM_URL", "FWSIEM_ENGINE_URL"):
            env.pop(key, None)
        return env

    def cmd(self, *args):
        return [sys.executable, "-m", "plugin", "ingest", "--json", "--no-progress", *args]

    def run(self, *args, stdin=None, toml=None):
        proc = subprocess.run(self.cmd(*args), env=self.env(toml), input=stdin,
                              capture_output=True, timeout=1500)
        out = proc.stdout.decode()
        summary = json.loads(out[out.index("{"):]) if "{" in out else {}
        return proc.returncode, summary, proc.stderr.decode()

    def docs_from(self, path) -> int:
        """Documents from one source in the events stream and the dead-letter index."""
        query = {"term": {"log.file.path": str(path)}}
        self.store.refresh(self.events)
        self.store.refresh(DEADLETTER)
        return self.store.count(self.events, query) + self.store.count(DEADLETTER, query)


def _nsx_lines(n: int, seed: int = 3) -> list[str]:
    from ml.simulate import Simulation, load_scenario

    out: list[str] = []
    for chunk in Simulation(load_scenario("default"), hours=48, seed=seed).iter_nsx_lines():
        out.extend(chunk[: n - len(out)])
        if len(out) >= n:
            return out
    raise AssertionError(f"the simulator gave only {len(out)} lines")


def test_twice_and_killed_half_way_still_exactly_once(ship):
    n = 100_000
    log = ship.tmp / "dfw-100k.log"
    log.write_text("\n".join(_nsx_lines(n)) + "\n")

    proc = subprocess.Popen(ship.cmd(str(log)), env=ship.env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 900
    while ship.docs_from(log) < n // 4 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(1)
    assert proc.poll() is None, "ingest finished before it could be killed half-way"
    proc.kill()
    proc.wait()
    before = ship.docs_from(log)
    assert 0 < before < n

    rc, first, err = ship.run(str(log))
    assert rc == 0, err
    assert first["read"] == n
    assert first["indexed"] + first["dead_lettered"] + first["already_present"] == n
    assert first["already_present"] >= before
    assert ship.docs_from(log) == n

    rc, second, err = ship.run(str(log))
    assert rc == 0, err
    assert (second["read"], second["already_present"], second["indexed"]) == (n, n, 0)
    assert ship.docs_from(log) == n


def test_engine_down_spools_and_the_next_run_replays_every_line_once(ship):
    n = 5000
    data = ("\n".join(_nsx_lines(n, seed=5)) + "\n").encode()
    down = ship.tmp / "down.toml"
    down.write_text(ship.toml.read_text().replace(ship.engine.url, "http://127.0.0.1:9"))

    rc, summary, err = ship.run("-", stdin=data, toml=down)
    assert rc == 3
    assert summary["spooled"] == n and summary["indexed"] == 0
    assert str(ship.spool) in err

    rc, replay, err = ship.run()
    assert rc == 0, err
    assert replay["replayed"] == n
    assert replay["indexed"] + replay["dead_lettered"] == n
    assert not list(Path(ship.spool).glob("batch-*"))
    ship.store.refresh(ship.events)
    assert ship.store.count(ship.events, {"term": {"log.file.path": "stdin"}}) == replay["indexed"]

    rc, again, err = ship.run("-", stdin=data)
    assert rc == 0, err
    assert again["already_present"] == n and again["indexed"] == 0


def test_bad_lines_are_dead_lettered_with_their_reason_and_counted(ship):
    good = _nsx_lines(20, seed=9)
    bad = [
        b"",
        b"\x00\x01\x02 binary garbage \xde\xad",
        b"2024-03-04T00:00:00.000Z 10421bac INET match PASS mainrs/1301 OUT 60 TCP 10.17.2.11/45321->",
        b"caf\xe9 not utf-8",
        b"A" * (1024 * 1024),
        b"B" * (5 * 1024 * 1024),  # longer than the shipper's read limit
    ]
    raw = b"\n".join([g.encode() for g in good[:10]] + bad + [g.encode() for g in good[10:]]) + b"\n"
    log = ship.tmp / "bad.log"
    log.write_bytes(raw)
    offsets, pos = {}, 0
    for line in raw.split(b"\n")[:-1]:
        offsets[pos] = line
        pos += len(line) + 1
    bad_offsets = {o for o, line in offsets.items() if line in bad}

    rc, summary, err = ship.run(str(log))
    assert rc == 0, err
    assert summary["read"] == len(offsets)
    assert summary["indexed"] + summary["dead_lettered"] == len(offsets)
    ship.store.refresh(DEADLETTER)
    letters = {h["_source"]["log"]["offset"]: h["_source"] for h in ship.store.scan(
        DEADLETTER, query={"term": {"log.file.path": str(log)}})}
    assert len(letters) == summary["dead_lettered"]
    assert bad_offsets <= set(letters)
    for doc in letters.values():
        assert doc["error"]["message"] and doc["event"]["kind"] == "pipeline_error"
    utf8 = next(o for o, line in offsets.items() if line == b"caf\xe9 not utf-8")
    assert base64.b64decode(letters[utf8]["fwsiem"]["original_b64"]) == b"caf\xe9 not utf-8"
    huge = next(o for o, line in offsets.items() if line.startswith(b"BBBB"))
    assert "limit" in letters[huge]["error"]["message"]


def test_pcap_flows_are_indexed_as_ecs_events(ship):
    import socket

    import dpkt

    cap = ship.tmp / "dns.pcap"
    with open(cap, "wb") as fh:
        writer = dpkt.pcap.Writer(fh)
        for i in range(30):
            udp = dpkt.udp.UDP(sport=20000 + i, dport=53, data=b"q")
            udp.ulen += 1
            ip = dpkt.ip.IP(src=socket.inet_aton("10.0.0.5"), dst=socket.inet_aton("10.0.0.53"),
                            p=dpkt.ip.IP_PROTO_UDP, data=udp)
            ip.len += len(bytes(udp))
            frame = dpkt.ethernet.Ethernet(type=dpkt.ethernet.ETH_TYPE_IP, data=ip)
            writer.writepkt(bytes(frame), ts=1_700_000_000.0 + i)
    flows = list(pcap_flows(str(cap)))
    rc, summary, err = ship.run(str(cap))
    assert rc == 0, err
    assert summary["indexed"] == len(flows) == 30
    ship.store.refresh(ship.events)
    query = {"bool": {"filter": [{"term": {"event.dataset": "fwsiem.pcap"}},
                                 {"term": {"log.file.path": str(cap)}}]}}
    assert ship.store.count(ship.events, query) == 30
    rc, again, err = ship.run(str(cap))
    assert again["already_present"] == 30


def test_files_that_declare_their_fields_index_every_record_and_skip_their_header(ship):
    w3c = ship.tmp / "pfirewall.log"
    w3c.write_text(
        "#Version: 1.5\n#Software: Microsoft Windows Firewall\n#Time Format: Local\n"
        "#Fields: date time action protocol src-ip dst-ip src-port dst-port size tcpflags tcpsyn "
        "tcpack tcpwin icmptype icmpcode info path\n\n"
        "2024-03-05 10:00:00 DROP TCP 203.0.113.15 192.168.20.10 51234 3389 52 S 1 0 64240 - - - "
        "RECEIVE\n"
        "2024-03-05 10:00:01 ALLOW UDP 2001:db8::10 2001:db8::53 50123 53 0 - - - - - - - SEND\n")
    t = "\t"
    zeek = ship.tmp / "conn.log.labeled"
    zeek.write_text(
        "#separator \\x09\n#set_separator\t,\n#empty_field\t(empty)\n#unset_field\t-\n"
        "#path\tconn\n#fields\tuid\tts\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tproto\t"
        "conn_state\tlabel\n"
        f"C1{t}1709632800.5{t}192.168.10.20{t}51514{t}198.51.100.80{t}443{t}tcp{t}SF{t}Benign\n"
        f"C2{t}1709632801.5{t}203.0.113.77{t}40112{t}192.168.10.5{t}22{t}tcp{t}S0{t}Malicious\n"
        "#close\t2024-03-05-11-00-00\n")

    rc, summary, err = ship.run(str(w3c), str(zeek))
    assert rc == 0, err
    assert summary["read"] == 7 + 9
    assert summary["headers"] == 5 + 7  # directives and the blank line: not events
    assert (summary["indexed"], summary["dead_lettered"]) == (4, 0)

    ship.store.refresh(ship.events)
    hits = ship.store.search(ship.events, {"size": 10, "query": {"terms": {
        "log.file.path": [str(w3c), str(zeek)]}}})["hits"]["hits"]
    got = sorted((h["_source"]["event"]["dataset"], h["_source"]["source"]["ip"],
                  h["_source"]["source"]["port"], h["_source"]["destination"]["port"],
                  h["_source"]["event"]["outcome"]) for h in hits)
    assert got == [
        ("fwsiem.windows_firewall", "2001:db8::10", 50123, 53, "success"),
        ("fwsiem.windows_firewall", "203.0.113.15", 51234, 3389, "failure"),
        ("fwsiem.zeek", "192.168.10.20", 51514, 443, "success"),
        ("fwsiem.zeek", "203.0.113.77", 40112, 22, "failure"),
    ]
    assert not any("header" in h["_source"].get("fwsiem", {}) for h in hits)
