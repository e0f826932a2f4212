"""Nothing lost without an engine: refusals classified, spool bound and checked, listener bounded."""

from __future__ import annotations

import gzip
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time

import pytest

from plugin.errors import EngineUnavailable
from plugin.shipping import (
    Batch,
    IngestStats,
    LineBatcher,
    Shipper,
    ShipSettings,
    Spool,
    SpoolFileInvalid,
    expand_paths,
    ingest_paths,
    line_id,
)
from plugin.store import bulk_item_fault
from plugin.syslog import SyslogReceiver

# -- item 2: what a refused bulk item is about -----------------------------------------------------
CLUSTER_REFUSALS = [
    (400, {"type": "illegal_argument_exception",
           "reason": "pipeline with id [fwsiem-logs] does not exist"}),
    (403, {"type": "cluster_block_exception",
           "reason": "index [fwsiem-deadletter] blocked by: [FORBIDDEN/8/index write (api)];"}),
    (429, {"type": "cluster_block_exception",
           "reason": "index [x] blocked by: [TOO_MANY_REQUESTS/12/disk usage exceeded "
                     "flood-stage watermark, index has read-only-allow-delete block];"}),
    (400, {"type": "index_closed_exception", "reason": "closed", "index": "x"}),
    (404, {"type": "index_not_found_exception", "reason": "no such index [x]"}),
    (403, {"type": "security_exception", "reason": "action [indices:data/write/bulk[s]] is "
                                                   "unauthorized for user [fwsiem]"}),
    (503, {"type": "unavailable_shards_exception", "reason": "primary shard is not active"}),
    (500, {"type": "exception", "reason": "anything the node failed at"}),
    (400, {"type": "illegal_argument_exception", "reason": "wrapped",
           "caused_by": {"type": "cluster_block_exception", "reason": "blocked by: [x]"}}),
]
LINE_REFUSALS = [
    (400, {"type": "illegal_argument_exception", "reason": "field [a] of type [long] cannot "
                                                           "take value [x]"}),
    (400, {"type": "x_content_parse_exception", "reason": "[1:2] Unexpected character"}),
]


@pytest.mark.parametrize("status,error", CLUSTER_REFUSALS, ids=lambda v: str(v)[:40])
def test_refusals_about_the_cluster_are_never_dead_letters(status, error):
    assert bulk_item_fault(status, error) == "cluster"


@pytest.mark.parametrize("status,error", LINE_REFUSALS, ids=lambda v: str(v)[:40])
def test_refusals_about_the_line_are_dead_letters(status, error):
    assert bulk_item_fault(status, error) == "line"


def test_mapping_refusals_are_decided_by_the_target_index():
    err = {"type": "mapper_parsing_exception", "reason": "failed to parse field [source.ip]"}
    assert bulk_item_fault(400, err) == "mapping"


# -- item 5: the spool is bound to its cluster and is checked as data ---------------------------------
def _batch(events="e", n=2, pipeline="fwsiem-logs") -> Batch:
    batch = Batch(pipeline)
    for i in range(n):
        batch.add({"create": {"_index": events, "_id": line_id("/f", i, b"x")}},
                  {"message": f"line {i}", "log": {"file": {"path": "/f"}, "offset": i}})
    return batch


def test_spool_of_one_cluster_is_never_seen_by_another(tmp_path):
    a = Spool(tmp_path, target="http://127.0.0.1:9201", events_index="e")
    b = Spool(tmp_path, target="http://es.example:9200", events_index="e")
    a.write(_batch(), "down")
    assert len(a.pending()) == 1 and b.pending() == []
    moved = a.pending()[0].read_bytes()
    (b.dir).mkdir(parents=True)
    (b.dir / a.pending()[0].name).write_bytes(moved)  # copied by hand into the other's folder
    with pytest.raises(SpoolFileInvalid, match="spooled for"):
        b.load(b.pending()[0])


def test_spool_files_are_owner_only(tmp_path):
    path = Spool(tmp_path, target="http://127.0.0.1:9201", events_index="e").write(_batch())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def _plant(spool: Spool, name: str, header: dict, pairs: list[tuple[dict, dict]]) -> None:
    spool.dir.mkdir(parents=True, exist_ok=True)
    body = [json.dumps(header)] + [json.dumps(x) for pair in pairs for x in pair]
    (spool.dir / name).write_text("\n".join(body) + "\n")


@pytest.mark.parametrize("case", ["other-index", "other-pipeline", "extra-action-keys",
                                  "not-a-line", "bad-id", "truncated", "not-json", "no-header"])
def test_planted_or_corrupt_spool_files_are_refused_as_data(tmp_path, case):
    spool = Spool(tmp_path, target="http://127.0.0.1:9201", events_index="e",
                  deadletter_index="d", pipeline="fwsiem-logs")
    good = spool.write(_batch(), "down")
    header = json.loads(good.read_text().splitlines()[0])
    ok_id = line_id("/f", 0, b"x")
    action = {"create": {"_index": "e", "_id": ok_id}}
    doc = {"message": "x"}
    pairs = [(action, doc)]
    if case == "other-index":
        pairs = [({"create": {"_index": "fwsiem-models", "_id": ok_id}}, doc)]
    elif case == "other-pipeline":
        header = dict(header, pipeline="attacker-pipeline")
    elif case == "extra-action-keys":
        pairs = [({"create": {"_index": "e", "_id": ok_id, "pipeline": "x"}}, doc)]
    elif case == "not-a-line":
        pairs = [(action, {"message": "x", "active": True, "sha256": "00"})]
    elif case == "bad-id":
        pairs = [({"create": {"_index": "e", "_id": "active"}}, doc)]
    elif case == "truncated":
        header = dict(header, documents=2)
    header["documents"] = header["documents"] if case == "truncated" else len(pairs)
    _plant(spool, "batch-0-planted.ndjson", header, pairs)
    planted = spool.dir / "batch-0-planted.ndjson"
    if case == "not-json":
        planted.write_bytes(b"\x00\x01garbage\n")
    elif case == "no-header":
        planted.write_text(json.dumps(action) + "\n" + json.dumps(doc) + "\n")
    with pytest.raises(SpoolFileInvalid):
        spool.load(planted)
    assert len(spool.load(good)) == 2


def _down():
    raise EngineUnavailable("cannot reach http://127.0.0.1:1")


def test_a_refused_spool_file_is_quarantined_and_never_blocks_the_rest(tmp_path):
    spool = Spool(tmp_path, target="http://127.0.0.1:1", events_index="e")
    good = spool.write(_batch(), "down")
    _plant(spool, "batch-0-planted.ndjson", {"fwsiem_spool": 2}, [])
    shipper = Shipper(_down, events_index="e", deadletter_index="d", spool=spool, retry_wait=0)
    shipper.replay()
    assert not (spool.dir / "batch-0-planted.ndjson").exists()
    assert (spool.dir / "quarantine" / "batch-0-planted.ndjson").exists()
    assert shipper.stats.quarantined and spool.pending() == [good]  # reached, kept (engine down)


# -- item 3: a spool that cannot be written is counted and named, never silent -------------------------
def test_a_batch_that_can_be_neither_written_nor_spooled_is_counted_as_not_written(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    stats = IngestStats()
    shipper = Shipper(_down, events_index="e", deadletter_index="d",
                      spool=Spool(blocker / "spool"), stats=stats, retry_wait=0)
    shipper.send(_batch(n=5))
    shipper.send(_batch(n=3))
    assert stats.not_spooled == 8 and stats.spooled == 0 and not stats.ok
    assert all("NOT SPOOLED" in w for w in stats.not_written)


def _listen_env(tmp_path, spool_dir: str, url: str = "http://127.0.0.1:9") -> dict:
    toml = tmp_path / "fwsiem.toml"
    toml.write_text(f'[engine]\nurl = "{url}"\nspool_dir = "{spool_dir}"\nmax_retries = 0\n'
                    '[ingest]\nretry_wait = "0s"\n')
    env = dict(os.environ, FWSIEM_CONFIG=str(toml))
    for key in ("FWSIEM_URL", "FWSIEM_ENGINE_URL"):
        env.pop(key, None)
    return env


def _free_port(kind=socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_listen_reports_lines_it_could_not_spool_and_exits_non_zero(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "plugin", "listen", "--udp-port", "-1",
                             "--tcp-port", str(port), "--status-every", "0.5"],
                            env=_listen_env(tmp_path, str(blocker / "spool")),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                conn = socket.create_connection(("127.0.0.1", port), timeout=2)
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None, "listen did not start"
                time.sleep(0.2)
        with conn:
            conn.sendall(b"".join(b"<14>line %d\n" % i for i in range(50)))
        time.sleep(3)  # let the shipping thread fail at least once (not a timing assertion)
        conn2 = socket.create_connection(("127.0.0.1", port), timeout=5)
        with conn2:
            conn2.sendall(b"<14>after the failure\n")
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    assert proc.returncode != 0, out + err
    assert "NOT WRITTEN:      51" in out, out + err
    assert "NOT SPOOLED" in out
    assert "Traceback" not in err


# -- item 4 and 15: damaged and unusual sources --------------------------------------------------------
def test_a_truncated_or_fake_gzip_keeps_what_was_read_and_the_next_files_are_read(
        tmp_path, collecting_shipper):
    folder = tmp_path / "logs"
    folder.mkdir()
    whole = gzip.compress(b"".join(b"a %05d padding padding padding\n" % i for i in range(3232)))
    (folder / "a.log.gz").write_bytes(whole[: len(whole) // 2])
    (folder / "b.log.gz").write_bytes(b"\x1f\x8b" + b"not really gzip" * 10)
    (folder / "c.log").write_bytes(b"c1\nc2\n")
    shipper = collecting_shipper
    ingest_paths(expand_paths([str(folder)]), LineBatcher(shipper, ShipSettings()))
    messages = [d["message"] for d in shipper.sent]
    got_a = [m for m in messages if m.startswith("a ")]
    assert 0 < len(got_a) < 3232
    assert got_a == [f"a {i:05d} padding padding padding" for i in range(len(got_a))]
    assert messages[-2:] == ["c1", "c2"]
    damaged = shipper.stats.damaged
    assert len(damaged) == 2 and "a.log.gz" in damaged[0] and "b.log.gz" in damaged[1]
    assert not shipper.stats.ok


def test_a_dangling_symlink_in_a_folder_is_reported_and_the_rest_is_read(
        tmp_path, collecting_shipper):
    folder = tmp_path / "logs"
    folder.mkdir()
    (folder / "good.log").write_bytes(b"g1\ng2\n")
    (folder / "gone.log").symlink_to(tmp_path / "nowhere")
    shipper = collecting_shipper
    ingest_paths(expand_paths([str(folder)]), LineBatcher(shipper, ShipSettings()))
    assert [d["message"] for d in shipper.sent] == ["g1", "g2"]
    assert len(shipper.stats.damaged) == 1 and "dangling symlink" in shipper.stats.damaged[0]


def test_a_fifo_is_read_like_a_file(tmp_path, collecting_shipper):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)

    def write():
        with open(fifo, "wb") as fh:
            fh.write(b"f1\nf2\nf3\n")

    writer = threading.Thread(target=write)
    writer.start()
    shipper = collecting_shipper
    ingest_paths(expand_paths([str(fifo)]), LineBatcher(shipper, ShipSettings()))
    writer.join(10)
    assert [d["message"] for d in shipper.sent] == ["f1", "f2", "f3"]
    assert shipper.stats.ok


def test_endless_input_without_line_ends_is_bounded_and_ends(tmp_path, collecting_shipper):
    shipper = collecting_shipper
    settings = ShipSettings(max_read_line_bytes=1024)
    ingest_paths(["/dev/zero"], LineBatcher(shipper, settings))
    assert len(shipper.sent) == 1  # one dead letter for the over-long line, then the source ends
    assert shipper.sent[0]["event"]["kind"] == "pipeline_error"
    assert "not a line-oriented log" in shipper.stats.damaged[0]


def test_a_slow_writer_is_shipped_before_it_closes_and_a_stop_request_ends_the_read(
        tmp_path, collecting_shipper):
    fifo = tmp_path / "slow"
    os.mkfifo(fifo)
    shipper = collecting_shipper
    stop = threading.Event()
    batcher = LineBatcher(shipper, ShipSettings(flush_interval=0.05))
    thread = threading.Thread(target=ingest_paths, args=([str(fifo)], batcher),
                              kwargs={"should_stop": stop.is_set})
    thread.start()
    with open(fifo, "wb", buffering=0) as fh:
        fh.write(b"first\n")
        deadline = time.monotonic() + 30
        while not shipper.sent and time.monotonic() < deadline:
            time.sleep(0.02)
        assert [d["message"] for d in shipper.sent] == ["first"]  # the writer is still open
        stop.set()
        thread.join(30)
        assert not thread.is_alive()
    assert shipper.stats.not_read == [f"{fifo} from byte 6"]


# -- item 17: a burst of TCP clients costs no thread per client -------------------------------------------
def test_a_burst_of_tcp_clients_is_served_without_a_thread_each(tmp_path, collecting_shipper):
    shipper = collecting_shipper
    batcher = LineBatcher(shipper, ShipSettings(batch_docs=1000))
    receiver = SyslogReceiver(batcher, udp_port=None, tcp_port=0, max_connections=4).start()
    before = threading.active_count()
    clients = [socket.create_connection(("127.0.0.1", receiver.tcp_port)) for _ in range(60)]
    peak = threading.active_count()
    for i, c in enumerate(clients):
        c.sendall(b"<14>client %d\n" % i)
        c.close()
    deadline = time.monotonic() + 60
    while receiver.received < 60 and time.monotonic() < deadline:
        time.sleep(0.05)
        peak = max(peak, threading.active_count())
    receiver.stop()
    assert peak == before
    assert sorted(d["message"] for d in shipper.sent) == sorted(f"<14>client {i}"
                                                                 for i in range(60))


# -- item 13: listen's own errors are one line --------------------------------------------------------
@pytest.mark.parametrize("case", ["port-in-use", "port-out-of-range", "unresolvable-host"])
def test_listen_errors_are_one_line(tmp_path, case):
    holder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    holder.bind(("127.0.0.1", 0))
    args = {"port-in-use": ["--udp-port", str(holder.getsockname()[1]), "--tcp-port", "-1"],
            "port-out-of-range": ["--udp-port", "70000"],
            "unresolvable-host": ["--host", "no-such-host.invalid", "--tcp-port", "-1",
                                  "--udp-port", "0"]}[case]
    try:
        proc = subprocess.run([sys.executable, "-m", "plugin", "listen", *args],
                              env=_listen_env(tmp_path, str(tmp_path / "spool")),
                              capture_output=True, text=True, timeout=120)
    finally:
        holder.close()
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.lower().startswith(("error", "usage"))]
    assert errors and any(w in proc.stderr for w in ("cannot listen", "70000")), proc.stderr
