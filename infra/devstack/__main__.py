"""``python -m infra.devstack``: see ``infra.devstack.cli``."""

import sys

from infra.devstack.cli import main

sys.exit(main())
