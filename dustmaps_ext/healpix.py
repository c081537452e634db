"""HEALPix helpers of the package, public so that the build pipeline uses the same ones.

* :func:`check_nside` -- the power-of-two rule, with an error naming the parameter;
* :func:`lb_to_nested`, :func:`nested_to_lb` and :func:`lb_to_ring` -- Galactic (l, b) to
  NESTED or RING pixel and back (the pixels healpy and astropy-healpix give, boundaries
  included);
* :func:`lb_to_unit_vectors` -- Galactic (l, b) to Cartesian unit vectors (for angular
  neighbour searches);
* :func:`in_lon_lat_box` -- the one footprint rule (open boundaries, longitudes may wrap);
  the DECaPS footprint itself is ``dustmaps_ext.formats.decaps.in_footprint``.

Example
-------
>>> import numpy as np
>>> from dustmaps_ext.healpix import in_lon_lat_box, lb_to_nested
>>> in_lon_lat_box(np.array([300.0, 2.0, 100.0]), np.zeros(3), (239.0, 366.0), (-10.0, 10.0))
array([ True,  True, False])
>>> int(lb_to_nested(1, np.array(0.0), np.array(90.0)))
0
"""

from ._core.pixels import (check_nside, in_lon_lat_box, lb_to_nested, lb_to_ring, lb_to_unit_vectors,
                           nested_to_lb)

__all__ = ["check_nside", "lb_to_nested", "nested_to_lb", "lb_to_ring", "lb_to_unit_vectors",
           "in_lon_lat_box"]
