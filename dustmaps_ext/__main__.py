"""``python -m dustmaps_ext`` runs the ``dustmaps-ext`` command line."""

import sys

from .cli import main

sys.exit(main())
