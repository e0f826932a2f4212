"""Checkpoint state is signed with a local key: only this machine's own state is unpickled."""

from __future__ import annotations

import base64
import pickle
import stat

import pytest

from plugin.checkpoint import decode_state, encode_state, state_key
from plugin.errors import ArtifactIntegrityError, ConfigError


class Boom:
    """Unpickling this runs code: what a forged checkpoint would carry."""

    def __reduce__(self):
        return (exec, ("raise SystemExit('forged state was unpickled')",))


def test_the_key_is_made_once_private_and_then_reused(tmp_path):
    path = tmp_path / "conf" / "run-state.key"
    key = state_key(path)
    assert len(key) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert state_key(path) == key
    assert state_key(tmp_path / "other.key") != key


def test_state_round_trips_under_its_own_key(tmp_path):
    key = state_key(tmp_path / "k")
    blob, mac = encode_state({"windows": 3, "seen": ["10.0.0.1"]}, key)
    assert decode_state(blob, mac, key, "fwsiem-state/x") == {"windows": 3, "seen": ["10.0.0.1"]}


def test_a_forged_or_foreign_state_is_refused_before_unpickling(tmp_path):
    key, other = state_key(tmp_path / "k"), state_key(tmp_path / "other")
    blob, mac = encode_state({"ok": True}, key)
    with pytest.raises(ArtifactIntegrityError, match="not signed"):
        decode_state(blob, mac, other, "fwsiem-state/x")
    # someone with write access to the index swaps in a payload with a plain sha256 beside it
    import hashlib
    import zlib
    raw = zlib.compress(pickle.dumps(Boom()))
    forged = base64.b64encode(raw).decode()
    with pytest.raises(ArtifactIntegrityError):
        decode_state(forged, hashlib.sha256(raw).hexdigest(), key, "fwsiem-state/x")
    with pytest.raises(ArtifactIntegrityError):
        decode_state(forged, mac, key, "fwsiem-state/x")


def test_a_truncated_key_file_is_a_clear_error(tmp_path):
    path = tmp_path / "k"
    path.write_text("short\n")
    path.chmod(0o600)
    with pytest.raises(ConfigError, match="too short"):
        state_key(path)


def test_an_outage_is_declared_over_only_after_the_engine_is_ready_again(caplog):
    """A restarted engine answers before its shards are allocated: `ready` runs once, first."""
    from plugin.checkpoint import OutageRetry
    from plugin.errors import EngineUnavailable

    events: list[str] = []
    answers = iter([EngineUnavailable("down"), EngineUnavailable("down"), "ok", "ok again"])

    def call():
        got = next(answers)
        if isinstance(got, Exception):
            events.append("refused")
            raise got
        events.append("answered")
        return got

    retry = OutageRetry("http://127.0.0.1:9", sleep=lambda s: None,
                        ready=lambda: events.append("ready"))
    with caplog.at_level("WARNING", logger="plugin.checkpoint"):
        assert retry("reading", call) == "ok"
        assert retry("reading", call) == "ok again"
    assert events == ["refused", "refused", "answered", "ready", "answered"]
    assert retry.outages == 1
    assert [r.getMessage().split(" is ")[1][:11] for r in caplog.records] == ["unavailable",
                                                                              "back after "]
