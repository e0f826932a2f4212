"""One raw log line as the document the shipper sends to the ``fwsiem-logs`` pipeline."""

from __future__ import annotations

import base64


def line_document(
    raw: bytes, *, path: str | None = None, offset: int | None = None, module: str | None = None
) -> dict:
    """The ``_source`` for one line (without its line terminator).

    Invalid UTF-8 is never dropped: the text is decoded with replacement characters, the raw
    bytes are kept base64-encoded and the line is tagged so the pipeline dead-letters it.

    >>> line_document(b"abc", path="/var/log/x.log", offset=7)
    {'message': 'abc', 'log': {'file': {'path': '/var/log/x.log'}, 'offset': 7}}
    >>> line_document(b"\\xff\\xfe")["tags"]
    ['invalid_utf8']
    """
    if raw.endswith(b"\n"):
        raw = raw[:-1]
    if raw.endswith(b"\r"):
        raw = raw[:-1]
    doc: dict = {}
    try:
        doc["message"] = raw.decode("utf-8")
    except UnicodeDecodeError:
        doc["message"] = raw.decode("utf-8", errors="replace")
        doc["tags"] = ["invalid_utf8"]
        doc["fwsiem"] = {"original_b64": base64.b64encode(raw).decode("ascii")}
    log: dict = {}
    if path is not None:
        log["file"] = {"path": path}
    if offset is not None:
        log["offset"] = offset
    if log:
        doc["log"] = log
    if module:
        doc["event"] = {"module": module}
    return doc
