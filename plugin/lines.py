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


# Files whose header declares their fields: a W3C extended log (Windows Defender Firewall's
# pfirewall.log, IIS) and a Zeek ASCII log. Their header lines are not events.
W3C_DIRECTIVES = ("#Version:", "#Fields:", "#Software:", "#Date:", "#Start-Date:", "#End-Date:",
                  "#Remark:", "#Time Format:")
ZEEK_DIRECTIVES = ("#separator", "#set_separator", "#empty_field", "#unset_field", "#path",
                   "#open", "#close", "#fields", "#types")
# What a record's format assumes when its header does not say otherwise: the standard layout
# (Windows Defender Firewall's pfirewall.log; Zeek's conn.log) and markers. The pipelines hold
# the same defaults, so a document carries only what differs from them: sending the field list
# with every record would add 56% to a pfirewall.log line's bulk bytes and 72% to a conn.log
# row's, for no gain in engine time.
HEADER_DEFAULTS: dict[str, dict] = {
    "w3c": {"separator": " ", "empty_field": "-", "unset_field": "-",
            "fields": ["date", "time", "action", "protocol", "src-ip", "dst-ip", "src-port",
                       "dst-port", "size", "tcpflags", "tcpsyn", "tcpack", "tcpwin", "icmptype",
                       "icmpcode", "info", "path", "pid"]},
    "zeek": {"separator": "\t", "set_separator": ",", "empty_field": "(empty)", "unset_field": "-",
             "path": "conn",
             "fields": ["ts", "uid", "id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p", "proto",
                        "service", "duration", "orig_bytes", "resp_bytes", "conn_state",
                        "local_orig", "local_resp", "missed_bytes", "history", "orig_pkts",
                        "orig_ip_bytes", "resp_pkts", "resp_ip_bytes", "tunnel_parents"]},
}


class DeclaredHeader:
    """The header of one file that declares its own fields, read line by line.

    :meth:`consume` says whether a line is a header line (W3C ``#Fields:``, ``#Version:`` ...;
    Zeek ``#separator``, ``#fields`` ...) or a blank line of such a file: none of them is an event.
    :attr:`hint` is what each following record's document carries under ``fwsiem.header``: the
    format, the declared field names and any separator or empty/unset marker that differs from
    the format's default, so the pipeline can split the record by name.

    >>> h = DeclaredHeader()
    >>> [h.consume(x) for x in (b"#Version: 1.5", b"#Fields: time date action", b"2021-06-22 x")]
    [True, True, False]
    >>> h.hint
    {'format': 'w3c', 'fields': ['time', 'date', 'action']}
    >>> h.consume(b"#Fields: date time action") and h.hint  # the standard order: no list
    {'format': 'w3c'}
    >>> z = DeclaredHeader()
    >>> [z.consume(x) for x in (b"#separator \\\\x09", b"#fields\\tuid\\tts", b"#unset_field\\t?")]
    [True, True, True]
    >>> z.hint
    {'format': 'zeek', 'fields': ['uid', 'ts'], 'unset_field': '?'}
    """

    def __init__(self) -> None:
        self.hint: dict | None = None
        self._format: str | None = None
        self._values: dict[str, str] = {}
        self._fields: list[str] | None = None

    def consume(self, raw: bytes) -> bool:
        if not raw.startswith(b"#"):
            return self._format is not None and not raw.strip()
        text = raw.decode("utf-8", errors="replace")
        if text.startswith(W3C_DIRECTIVES):
            self._format = "w3c"
            name, _, value = text[1:].partition(":")
            if name == "Fields":
                self._fields = value.split()
        elif text.startswith(ZEEK_DIRECTIVES):
            self._format = "zeek"
            if text.startswith("#separator "):  # the one directive written before the separator
                sep = text[len("#separator "):].strip()
                self._values["separator"] = sep.encode("ascii").decode("unicode_escape") if (
                    sep.startswith("\\x")) else sep
            else:
                sep = self._values.get("separator", "\t")
                name, _, value = text[1:].partition(sep)
                if name == "fields":  # a name holding spaces is a mis-joined column: split it
                    self._fields = [n for f in value.split(sep) for n in f.split()]
                elif name in ("set_separator", "empty_field", "unset_field", "path"):
                    self._values[name] = value
        else:
            return False
        hint: dict = {"format": self._format}
        defaults = HEADER_DEFAULTS[self._format]
        standard = defaults["fields"]
        n = min(len(standard), len(self._fields or ()))
        if self._fields and self._fields[:n] != standard[:n]:
            hint["fields"] = self._fields  # the standard columns first (then any extra) need none
        hint.update((k, v) for k, v in self._values.items() if defaults.get(k) != v)
        self.hint = hint
        return True

    def annotate(self, doc: dict) -> dict:
        """``doc`` with the header's hint under ``fwsiem.header`` (when a header was read)."""
        if self.hint is not None:
            doc.setdefault("fwsiem", {})["header"] = self.hint
        return doc
