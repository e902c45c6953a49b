from msdfast.cli import main

raise SystemExit(main())
