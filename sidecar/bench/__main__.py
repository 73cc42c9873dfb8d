from sidecar.bench.cli import main

raise SystemExit(main())
