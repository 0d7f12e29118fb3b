"""`python -m cli`: the `artbot` command without its installed script."""

from cli.main import main

raise SystemExit(main())
