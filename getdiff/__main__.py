from getdiff.cli import main

raise SystemExit(main())
