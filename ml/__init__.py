"""fwsiem models: features, online detectors, batch models, recommendation algorithms."""

from __future__ import annotations
