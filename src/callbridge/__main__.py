"""`python -m callbridge`: the `callbridge` command."""

from ._cli import main

raise SystemExit(main())
