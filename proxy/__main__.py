"""``python -m proxy``, same as ``owui-proxy``."""

import sys

from proxy.cli import main

sys.exit(main())
