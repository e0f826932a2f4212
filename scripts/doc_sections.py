"""Replace one marked section of BENCHMARKS.md or EVALUATION.md, leaving the others' sections alone."""

from __future__ import annotations

from pathlib import Path


def markers(name: str) -> tuple[str, str]:
    """The HTML comments that delimit section ``name``.

    >>> markers("detection")
    ('<!-- fwsiem:detection:start -->', '<!-- fwsiem:detection:end -->')
    """
    return f"<!-- fwsiem:{name}:start -->", f"<!-- fwsiem:{name}:end -->"


def replace_section(path: Path, name: str, text: str, title: str) -> None:
    """Write ``text`` as section ``name`` of ``path`` (appended if the section is new).

    ``title`` is the document's first line when the file does not exist yet.
    """
    start, end = markers(name)
    body = f"{start}\n{text.strip()}\n{end}"
    old = path.read_text() if path.exists() else f"{title}\n"
    if start in old and end in old:
        new = old.split(start, 1)[0] + body + old.split(end, 1)[1]
    else:
        new = old.rstrip() + "\n\n" + body + "\n"
    path.write_text(new)
