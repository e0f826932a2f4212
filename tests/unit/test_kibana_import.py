"""The saved-objects import request, checked by a local HTTP server that answers like Kibana."""

from __future__ import annotations

import base64
import json
import socket
import threading
from email.parser import BytesParser
from email.policy import default as default_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from plugin.config import load_config
from plugin.errors import ConfigError, EngineRequestError, EngineUnavailable
from plugin.kibana import SavedObjectsImportError, import_saved_objects, load_objects

OBJECTS = load_objects(Path(__file__).resolve().parents[2] / "kibana_saved_objects")


class FakeDashboards(BaseHTTPRequestHandler):
    """Answers ``POST /api/saved_objects/_import`` the way Kibana 8 / OpenSearch Dashboards 2 do."""

    xsrf = "kbn-xsrf"
    credentials: str | None = None  # expected Authorization header
    refuse: dict[str, dict] = {}  # object id -> error
    status: tuple[int, dict] | None = None  # forced answer
    seen: list[dict] = []

    def log_message(self, *args):  # keep test output clean
        pass

    def _answer(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):  # noqa: N802 - http.server's name
        raw = self.rfile.read(int(self.headers.get("content-length", 0)))
        url = urlsplit(self.path)
        parts = _multipart(self.headers.get("content-type", ""), raw)
        self.seen.append({"method": "POST", "path": url.path, "query": parse_qs(url.query),
                          "headers": dict(self.headers), "parts": parts})
        if self.status:
            return self._answer(*self.status)
        if url.path != "/api/saved_objects/_import":
            return self._answer(404, {"statusCode": 404, "error": "Not Found", "message": "Not Found"})
        if self.xsrf not in {k.lower() for k in self.headers}:
            return self._answer(400, {"statusCode": 400, "error": "Bad Request",
                                      "message": f"Request must contain a {self.xsrf} header."})
        if self.credentials and self.headers.get("authorization") != self.credentials:
            return self._answer(401, {"statusCode": 401, "error": "Unauthorized",
                                      "message": "[security_exception] unable to authenticate"})
        if "file" not in parts or not parts["file"]["filename"].endswith(".ndjson"):
            return self._answer(415, {"statusCode": 415, "message": "Unsupported Media Type"})
        objects = [json.loads(line) for line in parts["file"]["content"].splitlines() if line]
        errors = [{"id": o["id"], "type": o["type"], "title": o["attributes"]["title"],
                   "meta": {"title": o["attributes"]["title"]}, "error": self.refuse[o["id"]]}
                  for o in objects if o["id"] in self.refuse]
        ok = [o for o in objects if o["id"] not in self.refuse]
        body = {"success": not errors, "successCount": len(ok),
                "successResults": [{"type": o["type"], "id": o["id"], "overwrite": True,
                                    "meta": {"title": o["attributes"]["title"]}} for o in ok]}
        if errors:
            body["errors"] = errors
        return self._answer(200, body)


def _multipart(content_type: str, raw: bytes) -> dict[str, dict]:
    if not content_type.startswith("multipart/form-data"):
        return {}
    msg = BytesParser(policy=default_policy).parsebytes(
        f"content-type: {content_type}\r\n\r\n".encode() + raw)
    return {part.get_param("name", header="content-disposition"): {
        "filename": part.get_filename() or "", "content": part.get_payload(decode=True).decode()}
        for part in msg.iter_parts()}


@pytest.fixture
def dashboards():
    """A fresh fake product on 127.0.0.1 per test; yields (handler class, base URL)."""
    handler = type("Handler", (FakeDashboards,), {"seen": [], "refuse": {}})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield handler, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _config(**kibana):
    return load_config(env={}).with_overrides("kibana", **kibana)


def test_kibana_receives_every_object_with_overwrite_xsrf_and_credentials(dashboards):
    handler, url = dashboards
    handler.credentials = _basic("analyst", "s3cret")
    result = import_saved_objects(_config(username="analyst", password="s3cret"), url, "kibana")
    (req,) = handler.seen
    assert (req["method"], req["path"], req["query"]) == (
        "POST", "/api/saved_objects/_import", {"overwrite": ["true"]})
    assert req["headers"]["kbn-xsrf"] == "true"
    assert list(req["parts"]) == ["file"]
    sent = [json.loads(line) for line in req["parts"]["file"]["content"].splitlines()]
    assert [(o["type"], o["id"]) for o in sent] == [(o["type"], o["id"]) for o in OBJECTS]
    assert all(isinstance(o["attributes"]["visState"], str) for o in sent
               if o["type"] == "visualization")
    assert result.ok and result.success_count == len(OBJECTS) == result.sent
    assert f"imported {len(OBJECTS)} of {len(OBJECTS)}" in result.summary()


def test_opensearch_dashboards_gets_its_own_header_and_the_engine_credentials(dashboards):
    handler, url = dashboards
    handler.xsrf = "osd-xsrf"
    handler.credentials = _basic("admin", "engine-pw")
    config = load_config(env={}).with_overrides("engine", username="admin", password="engine-pw")
    result = import_saved_objects(config, url, "opensearch-dashboards")
    assert handler.seen[0]["headers"]["osd-xsrf"] == "true"
    assert "kbn-xsrf" not in handler.seen[0]["headers"]
    assert result.ok


def test_an_api_key_is_sent_as_kibana_expects(dashboards):
    handler, url = dashboards
    handler.credentials = "ApiKey " + base64.b64encode(b"key-id:key-secret").decode()
    assert import_saved_objects(_config(api_key="key-id:key-secret"), url, "kibana").ok


def test_the_url_and_flavor_come_from_the_kibana_section(dashboards):
    handler, url = dashboards
    handler.xsrf = "osd-xsrf"
    assert import_saved_objects(_config(url=url + "/", flavor="opensearch-dashboards")).ok


def test_opensearch_dashboards_is_the_default_beside_an_opensearch_engine(dashboards):
    handler, url = dashboards
    handler.xsrf = "osd-xsrf"
    result = import_saved_objects(_config(), url, engine_flavor="opensearch")
    assert result.ok and result.flavor == "opensearch-dashboards"


def test_a_product_still_starting_is_retried_until_it_answers(dashboards, monkeypatch):
    handler, url = dashboards
    monkeypatch.setattr("plugin.kibana.RETRY_PAUSE", 0.01)
    starting = [(503, {"statusCode": 503, "message": "Kibana server is not ready yet"})] * 2

    class Starting(handler):
        def do_POST(self):  # noqa: N802
            handler.status = starting.pop() if starting else None
            super().do_POST()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Starting)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        with pytest.raises(EngineRequestError, match="HTTP 503"):
            import_saved_objects(_config(), f"http://127.0.0.1:{server.server_address[1]}",
                                 "kibana", wait=0)
        result = import_saved_objects(_config(), f"http://127.0.0.1:{server.server_address[1]}",
                                      "kibana", wait=30)
    finally:
        server.shutdown()
        server.server_close()
    assert result.ok and len(handler.seen) == 3


def test_rejected_credentials_are_one_clear_line_without_the_password(dashboards):
    handler, url = dashboards
    handler.credentials = _basic("analyst", "right")
    with pytest.raises(EngineRequestError) as info:
        import_saved_objects(_config(username="analyst", password="wrong"), url, "kibana")
    text = str(info.value)
    assert "401" in text and url in text and "[kibana]" in text
    assert "wrong" not in text and "\n" not in text


def test_the_wrong_flavor_is_named_in_the_error(dashboards):
    handler, url = dashboards
    handler.xsrf = "osd-xsrf"
    with pytest.raises(EngineRequestError, match="--dashboards-flavor opensearch-dashboards"):
        import_saved_objects(_config(), url, "kibana")


def test_a_server_error_carries_the_products_message(dashboards):
    handler, url = dashboards
    handler.status = (500, {"statusCode": 500, "message": "saved objects index is read-only"})
    with pytest.raises(EngineRequestError, match=r"HTTP 500\): saved objects index is read-only"):
        import_saved_objects(_config(), url, "kibana")


def test_a_url_that_is_not_the_product_is_a_404_with_a_hint(dashboards):
    _, url = dashboards
    with pytest.raises(EngineRequestError, match="no saved-objects import API"):
        import_saved_objects(_config(), url + "/not-kibana", "kibana")


def test_refused_objects_are_listed_by_id_and_reason(dashboards):
    handler, url = dashboards
    handler.refuse = {
        "fwsiem-top-rules": {"type": "missing_references",
                             "references": [{"type": "index-pattern", "id": "fwsiem-events"}]},
        "fwsiem-anomalies-dashboard": {"type": "unknown", "message": "Document has a newer version",
                                       "statusCode": 400},
    }
    with pytest.raises(SavedObjectsImportError) as info:
        import_saved_objects(_config(), url, "kibana")
    text = str(info.value)
    assert "fwsiem-top-rules" in text and "missing references: index-pattern fwsiem-events" in text
    assert "fwsiem-anomalies-dashboard" in text and "Document has a newer version" in text
    assert info.value.result.success_count == len(OBJECTS) - 2
    assert {e.id for e in info.value.result.errors} == set(handler.refuse)


def test_an_unreachable_product_is_engine_unavailable():
    with socket.socket() as sock:  # a port nothing listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(EngineUnavailable, match="cannot reach kibana"):
        import_saved_objects(_config(), f"http://127.0.0.1:{port}", "kibana")


def test_no_url_and_unknown_flavor_are_configuration_errors():
    with pytest.raises(ConfigError, match="--kibana URL"):
        import_saved_objects(_config())
    with pytest.raises(ConfigError, match="unknown dashboards flavor"):
        import_saved_objects(_config(url="http://127.0.0.1:5601"), flavor="grafana")
