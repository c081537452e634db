"""``build-decaps``: build a DECaPS-format release from per-star posteriors.

The command line lives in :mod:`dustmaps_ext_build.cli` with ``build-parametric``'s, so both
share their options; this module keeps the names it has always offered. Example::

    build-decaps stars.npz decaps_mean_and_samples.h5 --nside 8192 --scheduler tcp://host:8786
"""

from __future__ import annotations

from ..cli import build_decaps_convert_main as convert_inputs_main
from ..cli import build_decaps_main
from ..cli import decaps_config_from_args as config_from_args
from ..cli import decaps_parser as make_parser

__all__ = ["build_decaps_main", "make_parser", "config_from_args", "convert_inputs_main"]

if __name__ == "__main__":
    raise SystemExit(build_decaps_main())
