"""Former name of :mod:`dustmaps_ext._io.wang2025` (the Wang et al. 2025 table's home); the same module."""

import sys

from . import wang2025 as _home

sys.modules[__name__] = _home
