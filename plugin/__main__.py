"""Run the fwsiem CLI as ``python -m plugin``."""

from __future__ import annotations

from plugin.cli import main

if __name__ == "__main__":
    main()
