#!/usr/bin/env bash
# Runs the whole test suite: unit, content and integration tests against real Elasticsearch 8
# and OpenSearch 2, which the tests start themselves (see tests/conftest.py).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/fwsiem ] || bash scripts/bootstrap.sh
exec .venv/bin/python -m pytest "$@"
