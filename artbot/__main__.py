from artbot.cli import main

raise SystemExit(main())
