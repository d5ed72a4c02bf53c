"""``python -m benchmarks``: the explanation speed benchmark (issues 3 and 7)."""

from .explain_speed import main

raise SystemExit(main())
