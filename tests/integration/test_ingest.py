"""`fwsiem ingest` against a real OpenSearch: idempotent, kill-safe, spools when down, dead letters."""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from plugin.errors import EngineUnavailable
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

    def offsets_written_twice(self, path) -> list[int]:
        """Lines of one source with more than one document (events and dead letters together)."""
        buckets = self.store.composite(f"{self.events},{DEADLETTER}",
                                       [{"offset": {"terms": {"field": "log.offset"}}}],
                                       query={"term": {"log.file.path": str(path)}}, size=10000)
        return [b["key"]["offset"] for b in buckets if b["doc_count"] > 1]


def _nsx_lines(n: int, seed: int = 3) -> list[str]:
    from ml.simulate import Simulation, load_scenario

    out: list[str] = []
    for chunk in Simulation(load_scenario("default"), hours=48, seed=seed).iter_nsx_lines():
        out.extend(chunk[: n - len(out)])
        if len(out) >= n:
            return out
    raise AssertionError(f"the simulator gave only {len(out)} lines")


@pytest.mark.parametrize("in_flight", [1, 4])
def test_twice_and_killed_half_way_still_exactly_once(ship, in_flight):
    n = 100_000
    log = ship.tmp / "dfw-100k.log"
    log.write_text("\n".join(_nsx_lines(n)) + "\n")
    ship.toml.write_text(ship.toml.read_text() + f"in_flight = {in_flight}\n")  # in [ingest]

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
    assert ship.offsets_written_twice(log) == []


class _Proxy:
    """A TCP forwarder to the engine that can be absent: the same URL, down then up."""

    def __init__(self, target_url: str) -> None:
        import socket
        from urllib.parse import urlsplit

        parts = urlsplit(target_url)
        self.target = (parts.hostname, parts.port)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = None

    def start(self) -> None:
        import socket
        import socketserver
        import threading

        target = self.target

        class Pipe(socketserver.BaseRequestHandler):
            def handle(self):
                with socket.create_connection(target) as up:
                    def pump(a, b):
                        try:
                            while data := a.recv(65536):
                                b.sendall(data)
                        except OSError:
                            pass
                        finally:
                            for sock in (a, b):
                                try:
                                    sock.shutdown(socket.SHUT_RDWR)
                                except OSError:
                                    pass
                    t = threading.Thread(target=pump, args=(up, self.request), daemon=True)
                    t.start()
                    pump(self.request, up)
                    t.join(60)

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", self.port), Pipe)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()


def test_engine_down_spools_and_the_next_run_replays_every_line_once(ship):
    n = 5000
    data = ("\n".join(_nsx_lines(n, seed=5)) + "\n").encode()
    proxy = _Proxy(ship.engine.url)  # the engine's URL, with nothing listening yet
    down = ship.tmp / "down.toml"
    down.write_text(ship.toml.read_text().replace(ship.engine.url, proxy.url))

    rc, summary, err = ship.run("-", stdin=data, toml=down)
    assert rc == 3
    assert summary["spooled"] == n and summary["indexed"] == 0
    assert str(ship.spool) in err

    proxy.start()
    try:
        rc, replay, err = ship.run(toml=down)
    finally:
        proxy.stop()
    assert rc == 0, err
    assert replay["replayed"] == n
    assert replay["indexed"] + replay["dead_lettered"] == n
    assert not list(Path(ship.spool).rglob("batch-*"))
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


# -- nothing lost: refusals about the cluster, damaged sources, signals, the spool (issue 15) ------
NSX_LINE = ("2017-10-19T22:38:08.723Z 58734 INET match PASS domain-c8/1006 OUT 60 TCP "
            "172.18.8.121/{sport}->172.18.8.119/{dport} S RULE_TAG")
HIGH_PORTS = [(65535, 443), (40000, 65535), (63343, 63344)]


def _count(store, index, query=None) -> int:
    store.refresh(index)
    return store.count(index, query)


def test_lines_refused_for_a_missing_pipeline_are_spooled_then_indexed_never_dead_lettered(ship):
    log = ship.tmp / "pipeline-gone.log"
    log.write_text("\n".join(_nsx_lines(100, seed=21)) + "\n")
    query = {"term": {"log.file.path": str(log)}}
    ship.store.delete_pipeline("fwsiem-logs")
    try:
        rc, summary, err = ship.run(str(log))
        assert rc == 3, err
        assert (summary["spooled"], summary["dead_lettered"], summary["indexed"]) == (100, 0, 0)
        assert "pipeline with id [fwsiem-logs] does not exist" in err
    finally:
        run_setup(ship.store, ship.engine.config(events=ship.events))
    rc, again, err = ship.run(str(log))
    assert rc == 0, err
    assert again["replayed"] == 100 and again["dead_lettered"] == 0
    assert _count(ship.store, ship.events, query) == 100
    assert _count(ship.store, DEADLETTER, query) == 0


def test_an_index_made_without_fwsiem_mappings_spools_lines_instead_of_dead_lettering(ship):
    plain = f"{ship.events.split('.', 1)[1]}-plain"  # matches no fwsiem template
    ship.store.create_index(plain, {"mappings": {"properties": {
        "source": {"properties": {"ip": {"type": "long"}}}}}})
    toml = ship.tmp / "plain.toml"
    toml.write_text(ship.toml.read_text().replace(f'events = "{ship.events}"',
                                                  f'events = "{plain}"'))
    log = ship.tmp / "plain.log"
    log.write_text("\n".join(_nsx_lines(20, seed=22)) + "\n")
    try:
        rc, summary, err = ship.run(str(log), toml=toml)
        assert rc == 3, err
        assert summary["dead_lettered"] == 0 and summary["spooled"] == 20
        assert _count(ship.store, DEADLETTER, {"term": {"log.file.path": str(log)}}) == 0
    finally:
        ship.store.delete_index(plain)


def test_a_dead_letter_index_that_refuses_writes_spools_the_lines_without_looping(ship):
    log = ship.tmp / "garbage.log"
    log.write_bytes(b"garbage one\ngarbage two\ngarbage three\n")
    ship.store.request("PUT", f"/{DEADLETTER}/_block/write")
    try:
        rc, summary, err = ship.run(str(log))
        assert rc == 3, err
        assert "recursion" not in err and "Traceback" not in err
        assert (summary["spooled"], summary["dead_lettered"]) == (3, 0)
    finally:
        ship.store.request("PUT", f"/{DEADLETTER}/_settings",
                           body={"index": {"blocks": {"write": False}}})
    rc, again, err = ship.run(str(log))
    assert rc == 0, err
    assert again["dead_lettered"] + again["already_present"] >= 3
    assert _count(ship.store, DEADLETTER, {"term": {"log.file.path": str(log)}}) == 3


def test_events_with_ports_up_to_65535_are_indexed_through_ingest(ship):
    log = ship.tmp / "high-ports.log"
    log.write_text("\n".join(NSX_LINE.format(sport=s, dport=d) for s, d in HIGH_PORTS) + "\n")
    rc, summary, err = ship.run(str(log))
    assert rc == 0, err
    assert (summary["indexed"], summary["dead_lettered"]) == (3, 0)
    ports = {h["_source"]["destination"]["port"] for h in ship.store.scan(
        ship.events, query={"term": {"log.file.path": str(log)}})}
    assert ports == {443, 65535, 63344}


def _listen(env, *args):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "plugin", "listen", "--udp-port", "-1",
                             "--tcp-port", str(port), "--status-every", "5", *args],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
            return proc, port
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"fwsiem listen did not start: {proc.communicate()[1][-2000:]}")
            time.sleep(0.2)


def _stop_listen(proc, timeout=600):
    import signal

    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def test_events_with_ports_up_to_65535_are_indexed_through_listen(ship):
    import socket

    proc, port = _listen(ship.env())
    try:
        with socket.create_connection(("127.0.0.1", port)) as conn:
            conn.sendall("".join(NSX_LINE.format(sport=s, dport=d) + "\n"
                                 for s, d in HIGH_PORTS).encode())
    finally:
        rc, out, err = _stop_listen(proc)
    assert rc == 0, out + err
    assert "dead-lettered:    0" in out, out
    ship.store.refresh(ship.events)
    ports = {h["_source"]["destination"]["port"] for h in ship.store.scan(ship.events)}
    assert ports == {443, 65535, 63344}


def test_damaged_gzip_and_dangling_symlink_keep_the_rest_and_say_so(ship):
    import gzip

    folder = ship.tmp / "folder"
    folder.mkdir()
    lines = _nsx_lines(300, seed=23)
    whole = gzip.compress(("\n".join(lines[:200]) + "\n").encode())
    (folder / "a.log.gz").write_bytes(whole[: len(whole) // 2])
    (folder / "b.log").write_text("\n".join(lines[200:]) + "\n")
    (folder / "c.log").symlink_to(ship.tmp / "nowhere")
    rc, summary, err = ship.run(str(folder))
    assert rc == 2, err
    assert "Traceback" not in err
    assert len(summary["damaged"]) == 2
    assert 0 < ship.docs_from(folder / "a.log.gz") < 200
    assert ship.docs_from(folder / "b.log") == 100
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "a.log.gz" in errors[0]


def test_a_slow_stdin_is_shipped_as_it_comes_and_sigterm_ends_the_run_with_a_summary(ship):
    import signal

    proc = subprocess.Popen(ship.cmd("-"), env=ship.env(), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    lines = _nsx_lines(5, seed=24)
    proc.stdin.write(("\n".join(lines) + "\n").encode())
    proc.stdin.flush()
    stdin = {"term": {"log.file.path": "stdin"}}
    deadline = time.monotonic() + 120
    while _count(ship.store, ship.events, stdin) < 5 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _count(ship.store, ship.events, stdin) == 5, "a slow stdin was held until it ends"
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    summary = json.loads(out[out.index(b"{"):])
    assert proc.returncode == 3, err
    assert summary["read"] == 5 and summary["indexed"] == 5
    assert summary["not_read"] and summary["not_read"][0].startswith("stdin from byte")


def test_endless_input_without_line_ends_ends_with_one_dead_letter(ship):
    with open("/dev/zero", "rb") as zero:
        proc = subprocess.run(ship.cmd("-"), env=ship.env(), stdin=zero, capture_output=True,
                              timeout=1200)
    out = proc.stdout.decode()
    summary = json.loads(out[out.index("{"):])
    assert proc.returncode == 2, proc.stderr
    # the same input gives the same dead letter: a second run finds it already present
    assert summary["dead_lettered"] + summary["already_present"] == 1 and summary["indexed"] == 0
    assert "not a line-oriented log" in summary["damaged"][0]
    letters = _count(ship.store, DEADLETTER, {"bool": {"filter": [
        {"term": {"log.file.path": "stdin"}}, {"term": {"error.type": "rejected_line"}}]}})
    assert letters >= 1


def test_fifos_and_process_substitutions_are_read(ship):
    lines = _nsx_lines(10, seed=25)
    src = ship.tmp / "src.log"
    src.write_text("\n".join(lines) + "\n")
    cmd = " ".join(f"'{c}'" for c in ship.cmd()) + f" <(cat '{src}')"
    proc = subprocess.run(["bash", "-c", cmd], env=ship.env(), capture_output=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.decode()
    assert json.loads(out[out.index("{"):])["indexed"] == 10


def test_a_truncated_pcap_keeps_its_flows_and_exits_non_zero(ship):
    import socket

    import dpkt

    cap = ship.tmp / "cut.pcap"
    with open(cap, "wb") as fh:
        writer = dpkt.pcap.Writer(fh)
        for i in range(40):
            udp = dpkt.udp.UDP(sport=30000 + i, dport=53, data=b"q" * 50)
            ip = dpkt.ip.IP(src=socket.inet_aton("10.0.0.6"), dst=socket.inet_aton("10.0.0.53"),
                            p=dpkt.ip.IP_PROTO_UDP, data=udp)
            frame = dpkt.ethernet.Ethernet(type=dpkt.ethernet.ETH_TYPE_IP, data=ip)
            writer.writepkt(bytes(frame), ts=1_700_000_100.0 + i)
    data = cap.read_bytes()
    cap.write_bytes(data[: len(data) // 2 + 5])
    rc, summary, err = ship.run(str(cap))
    assert rc == 2, err
    assert 0 < summary["indexed"] < 40
    assert "truncated" in summary["damaged"][0]
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err


def test_recommend_labels_that_are_not_json_is_a_one_line_error(ship):
    proc = subprocess.run([sys.executable, "-m", "plugin", "recommend", "--kind", "allowlist",
                           "--labels", "/bin/ls", "--dry-run"], env=ship.env(), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "/bin/ls" in errors[0]


def test_a_spool_is_replayed_only_into_its_cluster_and_planted_files_are_quarantined(ship):
    from plugin.shipping import Batch, Spool, line_id

    data = ("\n".join(_nsx_lines(30, seed=26)) + "\n").encode()
    down = ship.tmp / "down.toml"
    down.write_text(ship.toml.read_text().replace(ship.engine.url, "http://127.0.0.1:9"))
    rc, summary, err = ship.run("-", stdin=data, toml=down)
    assert rc == 3 and summary["spooled"] == 30
    other = Path(summary["spool_files"][0])

    legit = Batch("fwsiem-logs")
    for i in range(5):
        legit.add({"create": {"_index": ship.events, "_id": line_id("spooled", i, b"x")}},
                  {"message": NSX_LINE.format(sport=1000 + i, dport=22),
                   "log": {"file": {"path": "spooled"}, "offset": i}})
    spool = Spool(ship.spool, target=ship.engine.url, events_index=ship.events)
    spool.write(legit, "down")
    models = "fwsiem-models"
    planted_id = "0" * 40
    (spool.dir / "batch-0-planted.ndjson").write_text("\n".join(json.dumps(x) for x in [
        {"fwsiem_spool": 2, "target": ship.engine.url, "pipeline": None, "documents": 1},
        {"create": {"_index": models, "_id": planted_id}},
        {"kind": "active", "sha256": "planted"}]) + "\n")
    (spool.dir / "batch-1-corrupt.ndjson").write_bytes(b"\x00\xff not json\n")
    assert stat.S_IMODE(other.stat().st_mode) == 0o600

    rc, replay, err = ship.run()
    assert rc == 0, err
    assert replay["replayed"] == 5  # the batch for this cluster, not the one for :9
    assert len(replay["quarantined"]) == 2
    assert other.exists()
    assert ship.store.get_doc(models, planted_id) is None
    assert _count(ship.store, ship.events, {"term": {"log.file.path": "spooled"}}) == 5
    assert not list(spool.dir.glob("batch-*"))


def test_listen_through_an_engine_restart_indexes_every_line_once(tmp_path, dedicated_engine):
    """20,000 lines sent over TCP while the engine is stopped and started again: all indexed."""
    import socket
    import threading

    from plugin.config import load_config
    from plugin.store import Store

    # An engine of its own: stopping the shared one would disturb the other tests.
    eng = dedicated_engine("opensearch", "the listen restart test")
    proc = None
    try:
        events = "logs-fwsiem.restart-default"
        toml = tmp_path / "fwsiem.toml"
        toml.write_text(f'[engine]\nurl = "{eng.url}"\nspool_dir = "{tmp_path / "spool"}"\n'
                        f'max_retries = 1\ntimeout = 10\n[indices]\nevents = "{events}"\n'
                        '[ingest]\nretry_wait = "2s"\n')
        config = load_config(toml, env={})
        store = Store.connect(config.engine)
        run_setup(store, config)
        env = dict(os.environ, FWSIEM_CONFIG=str(toml))
        for key in ("FWSIEM_URL", "FWSIEM_ENGINE_URL"):
            env.pop(key, None)
        proc, port = _listen(env)
        n = 20_000
        lines = _nsx_lines(n, seed=31)
        sent = [0]

        def send():
            with socket.create_connection(("127.0.0.1", port)) as conn:
                for i in range(0, n, 200):
                    conn.sendall(("\n".join(lines[i:i + 200]) + "\n").encode())
                    sent[0] = i + 200
                    time.sleep(0.05)

        sender = threading.Thread(target=send)
        sender.start()
        while sent[0] < n // 4 and sender.is_alive():
            time.sleep(0.05)
        eng.stop()  # the restart happens while lines keep arriving
        eng.start()
        sender.join(900)
        assert sent[0] >= n
        store = Store.connect(config.engine)
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            try:
                store.refresh(events)
                if store.count(events) >= n:
                    break
            except EngineUnavailable:  # the restarted node may still be recovering its shards
                pass
            time.sleep(2)
        rc, out, err = _stop_listen(proc)
        proc = None
        assert rc == 0, out + err[-3000:]
        store.refresh(events)
        store.refresh(DEADLETTER)
        assert store.count(events) == n
        assert store.count(DEADLETTER) == 0
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
