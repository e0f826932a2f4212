"""Build the Kibana / OpenSearch Dashboards import file from the readable saved objects.

    python scripts/build_saved_objects.py          # writes kibana_saved_objects/build/fwsiem-kibana.ndjson
    python scripts/build_saved_objects.py --check  # exit 1 when the file is out of date
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from plugin.kibana import build_ndjson, load_objects, ndjson_path

ROOT = Path(__file__).resolve().parent.parent / "kibana_saved_objects"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check that the file is current")
    args = parser.parse_args(argv)
    text = build_ndjson(ROOT)
    out = ndjson_path(ROOT)
    if args.check:
        current = out.read_text() if out.is_file() else ""
        if current != text:
            print(f"{out} is out of date: run scripts/build_saved_objects.py", file=sys.stderr)
            return 1
        return 0
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"wrote {len(load_objects(ROOT))} saved objects to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
