"""Former name of :mod:`dustmaps_ext._io.decaps` (the DECaPS format's home); the same module."""

import sys

from . import decaps as _home

sys.modules[__name__] = _home
