"""`python -m app`: the same as the `hushcc` command (tests and the demo start services so)."""

from __future__ import annotations

from app.cli import main

raise SystemExit(main())
