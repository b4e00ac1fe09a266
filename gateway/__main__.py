"""`python -m gateway`: the `llm-gateway` command."""

from gateway.cli import main

raise SystemExit(main())
