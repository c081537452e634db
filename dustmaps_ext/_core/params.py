"""Checks of the plain parameters that users pass to the query classes.

Each check returns the value in its canonical type or raises an error that names the
parameter, the allowed values and what was given.
"""

from __future__ import annotations

import numpy as np

__all__ = ["check_bool", "check_int"]


def check_bool(value, name: str) -> bool:
    """``value`` as a bool; it must be ``True``/``False`` (or a numpy bool).

    Raises
    ------
    TypeError
        For anything else (a string such as ``"no"`` would otherwise count as true).
    """
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise TypeError(f"{name} must be True or False; got {value!r}")


def check_int(value, name: str, minimum: int, maximum: int | None = None, *, why: str = "") -> int:
    """``value`` as an int in ``[minimum, maximum]`` (no upper bound when ``maximum`` is None).

    Parameters
    ----------
    value : int
        The value to check (bools and non-integral numbers are refused).
    name : str
        The parameter's name, for the messages.
    minimum, maximum : int
        The allowed range (inclusive).
    why : str
        Appended to the range in the message (e.g. ``" (the samples in map.h5)"``).

    Raises
    ------
    TypeError
        If it is not an integer.
    ValueError
        If it is outside the range.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer; got {value!r}")
    allowed = (f"between {minimum} and {maximum}" if maximum is not None
               else f"at least {minimum}")
    if value < minimum or (maximum is not None and value > maximum):
        raise ValueError(f"{name} must be {allowed}{why}; got {value}")
    return int(value)
