"""fwsiem sidecar: CLI, configuration, the store over Elasticsearch/OpenSearch, setup, shipping."""

from __future__ import annotations

__version__ = "0.1.0"
