"""Fixtures for tests without an engine: a shipper whose engine is a list."""

from __future__ import annotations

import json

import pytest

from plugin.errors import EngineUnavailable
from plugin.shipping import Shipper, Spool


def _unreachable():
    raise EngineUnavailable("cannot reach http://127.0.0.1:1")


class CollectingShipper(Shipper):
    """A shipper whose engine is a list: what it would have sent, in order."""

    def __init__(self, tmp_path):
        super().__init__(_unreachable, events_index="e", deadletter_index="d",
                         spool=Spool(tmp_path / "spool"))
        self.sent: list[dict] = []
        self.ids: set[str] = set()

    def submit(self, batch):
        for action, source in batch.items:
            self.sent.append(json.loads(source))
            self.ids.add(json.loads(action)["create"]["_id"])
        self.stats.indexed += len(batch)


@pytest.fixture
def collecting_shipper(tmp_path) -> CollectingShipper:
    return CollectingShipper(tmp_path)
