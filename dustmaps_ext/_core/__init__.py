"""Numerical core on plain arrays (no astropy objects): private numba kernels and checked helpers."""
