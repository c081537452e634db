"""A picklable block job for the Dask runner (worker processes import it by name)."""

from __future__ import annotations

import numpy as np


def squares_block(block_id: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Block ``block_id``: ``seed + block_id**2`` three times (deterministic)."""
    return {"value": np.full(3, seed + block_id ** 2, dtype=np.int64)}
