from modbuild.weights.cli import main

raise SystemExit(main())
