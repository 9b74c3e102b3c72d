"""The schema tables in docs/: each is rendered from a schema's field descriptions (`Field(description=...)`).

    python scripts/schema_docs.py           # list the docs whose tables differ from their schemas (exit 1)
    python scripts/schema_docs.py --write   # render them afresh

A table sits between `<!-- schema MODULE:CLASS -->` (e.g. `<!-- schema medharness.trainers.schema:TrainConfig
-->`) and `<!-- /schema -->`; what is written between the markers is replaced. To document a new field, give
it a description in its schema and run this with --write (docs/design.md, "Field documentation").
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from medharness.core.schemadocs import render_docs

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--write", action="store_true", help="rewrite the docs whose tables are stale")
    args = parser.parse_args(argv)
    stale = []
    for path in sorted((ROOT / "docs").rglob("*.md")):
        text = path.read_text(encoding="utf-8")
        rendered = render_docs(text)
        if rendered != text:
            stale.append(path.relative_to(ROOT))
            if args.write:
                path.write_text(rendered, encoding="utf-8")
    for path in stale:
        print(f"{'rewrote' if args.write else 'stale'}: {path}")
    return 1 if stale and not args.write else 0


if __name__ == "__main__":
    sys.exit(main())
