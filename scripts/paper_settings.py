"""Write docs/paper_settings.md from the composed paper experiment configs (scalelong.paper).

    python scripts/paper_settings.py            # (re)write the table
    python scripts/paper_settings.py --check    # exit 1 if the committed table is out of date
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from scalelong.paper import render

DOC = Path(__file__).resolve().parents[1] / "docs" / "paper_settings.md"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args()
    text = render()
    if args.check:
        if not DOC.is_file() or DOC.read_text() != text:
            sys.exit(f"{DOC} is out of date; run python scripts/paper_settings.py")
        return
    DOC.write_text(text)


if __name__ == "__main__":
    main()
