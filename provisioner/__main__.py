"""``python -m provisioner`` is ``owui-provision``."""

from provisioner.cli import main

raise SystemExit(main())
