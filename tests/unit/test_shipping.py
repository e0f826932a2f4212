"""The shipper without an engine: reading with offsets, ids, spool, accounting when the engine is down."""

from __future__ import annotations

import gzip
import io
import json
import os
import threading
import time

import pytest

from plugin.config import load_config
from plugin.errors import ConfigError, EngineUnavailable, InputError
from plugin.shipping import (
    Batch,
    IngestStats,
    LineBatcher,
    Shipper,
    ShipSettings,
    Spool,
    expand_paths,
    follow_paths,
    ingest_paths,
    line_id,
    open_source,
    read_lines,
)


def test_read_lines_gives_byte_offsets_and_strips_terminators():
    data = b"first\nsecond\r\n\nlast-without-newline"
    lines = list(read_lines(io.BytesIO(data)))
    assert [ln.raw for ln in lines] == [b"first", b"second", b"", b"last-without-newline"]
    for ln in lines:
        assert data[ln.offset:].startswith(ln.raw)
    assert sum(ln.length for ln in lines) == len(data)


def test_partial_last_line_is_held_back_when_a_writer_may_still_append():
    lines = list(read_lines(io.BytesIO(b"a\nhalf"), keep_partial=False))
    assert [ln.raw for ln in lines] == [b"a"]


def test_overlong_line_is_flagged_with_its_full_length_and_reading_continues():
    data = b"x" * 1000 + b"\nnext\n"
    lines = list(read_lines(io.BytesIO(data), max_bytes=100))
    assert lines[0].overlong and len(lines[0].raw) == 100 and lines[0].length == 1001
    assert lines[1].raw == b"next" and lines[1].offset == 1001 and not lines[1].overlong


def test_line_id_depends_on_source_offset_and_content():
    assert line_id("/a", 0, b"x") == line_id("/a", 0, b"x")
    assert len({line_id("/a", 0, b"x"), line_id("/b", 0, b"x"), line_id("/a", 1, b"x"),
                line_id("/a", 0, b"y")}) == 4


def test_expand_paths_walks_directories_and_globs_and_rejects_nothing_found(tmp_path):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    for name in ("d/b.log", "d/a.log", "d/sub/c.log", "d/.hidden", "top.log"):
        (tmp_path / name).write_text("x\n")
    got = expand_paths([str(tmp_path / "d"), str(tmp_path / "*.log"), "-"])
    names = [os.path.relpath(p, tmp_path) if p != "-" else p for p in got]
    assert names == ["d/a.log", "d/b.log", "d/sub/c.log", "top.log", "-"]
    with pytest.raises(InputError, match="nothing-here"):
        expand_paths([str(tmp_path / "nothing-here*.log")])


def test_gzip_is_read_transparently(tmp_path):
    path = tmp_path / "rotated.log.1"  # no .gz suffix: detected by content
    with gzip.open(path, "wb") as fh:
        fh.write(b"one\ntwo\n")
    with open_source(str(path)) as stream:
        assert [ln.raw for ln in read_lines(stream)] == [b"one", b"two"]


def test_spool_keeps_a_batch_byte_for_byte(tmp_path):
    batch = Batch("fwsiem-logs")
    batch.add({"create": {"_index": "e", "_id": line_id("/f", 0, b"1")}}, {"message": "é ünïcode"},
              "/f", 0, 10)
    batch.add({"create": {"_index": "e", "_id": line_id("/f", 10, b"2")}}, {"message": "two"},
              "/f", 10, 14)
    spool = Spool(tmp_path / "spool", events_index="e")
    path = spool.write(batch, "down")
    assert spool.pending() == [path] and spool.pending_documents() == 2
    again = spool.load(path)
    assert again.pipeline == "fwsiem-logs" and again.items == batch.items


def _unreachable():
    raise EngineUnavailable("cannot reach http://127.0.0.1:1")


def _settings(tmp_path, **kw) -> ShipSettings:
    return ShipSettings(spool_dir=str(tmp_path / "spool"), batch_docs=10, retry_wait=0, **kw)


def test_file_ingest_against_a_down_engine_spools_what_was_read_and_names_the_rest(tmp_path):
    log = tmp_path / "fw.log"
    log.write_bytes(b"".join(b"line %d\n" % i for i in range(35)))
    settings = _settings(tmp_path)
    stats = IngestStats()
    shipper = Shipper(_unreachable, events_index="e", deadletter_index="d",
                      spool=Spool(settings.spool_dir), stats=stats, retry_wait=0)
    ingest_paths(expand_paths([str(log)]), LineBatcher(shipper, settings))
    assert stats.read == 10 and stats.spooled == 10 and stats.indexed == 0
    first_ten = len(b"".join(b"line %d\n" % i for i in range(10)))
    assert stats.not_read == [f"{log} from byte {first_ten}"]
    assert Spool(settings.spool_dir).pending_documents() == 10
    assert not stats.ok


def test_stdin_against_a_down_engine_spools_every_line(tmp_path, monkeypatch):
    data = b"".join(b"line %d\n" % i for i in range(25))
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(data)))
    settings = _settings(tmp_path)
    stats = IngestStats()
    shipper = Shipper(_unreachable, events_index="e", deadletter_index="d",
                      spool=Spool(settings.spool_dir), stats=stats, retry_wait=0)
    ingest_paths(["-"], LineBatcher(shipper, settings))
    assert stats.read == 25 and stats.spooled == 25
    docs = []
    for path in Spool(settings.spool_dir).pending():
        docs += [json.loads(s)["message"] for _, s in Spool(settings.spool_dir).load(path).items]
    assert docs == [f"line {i}" for i in range(25)]


def test_follow_reads_appends_rotation_and_truncation_exactly_once(tmp_path, collecting_shipper):
    path = tmp_path / "dfw.log"
    path.write_bytes(b"a1\na2\n")
    shipper = collecting_shipper
    batcher = LineBatcher(shipper, ShipSettings(poll_interval=0.05, batch_docs=1000))
    stop = threading.Event()
    thread = threading.Thread(target=follow_paths, args=([str(path)], batcher),
                              kwargs={"should_stop": stop.is_set})
    thread.start()

    def wait_for(n):
        deadline = time.monotonic() + 10
        while len(shipper.sent) < n and time.monotonic() < deadline:
            time.sleep(0.02)

    try:
        wait_for(2)
        with open(path, "ab") as fh:
            fh.write(b"a3\npartial")
        wait_for(3)
        with open(path, "ab") as fh:
            fh.write(b"-done\n")
        wait_for(4)
        os.rename(path, tmp_path / "dfw.log.1")  # rotation: the old file gets one more line
        with open(tmp_path / "dfw.log.1", "ab") as fh:
            fh.write(b"a5\n")
        path.write_bytes(b"b1\n")
        wait_for(6)
        path.write_bytes(b"c\n")  # truncation
        wait_for(7)
    finally:
        stop.set()
        thread.join(10)
    assert [d["message"] for d in shipper.sent] == ["a1", "a2", "a3", "partial-done", "a5", "b1", "c"]
    assert [d["log"]["offset"] for d in shipper.sent] == [0, 3, 6, 9, 22, 0, 0]


def test_in_flight_is_read_from_the_configuration_and_must_be_one_or_more():
    config = load_config(env={})
    assert ShipSettings.from_config(config.with_overrides("ingest", in_flight=4)).in_flight == 4
    for bad in (0, -1, "two"):
        with pytest.raises(ConfigError, match=r"\[ingest\] in_flight"):
            ShipSettings.from_config(config.with_overrides("ingest", in_flight=bad))
