"""The DECaPS map pipeline (Zucker et al. 2025 §4.2 and Appendix B).

Modules: :mod:`.inputs` (compact per-star posteriors), :mod:`.convert` (inputs from
posterior images or samples), :mod:`.filters` (§4.1.2 smoothing and
§4.2.1 cuts), :mod:`.pixelize` (§4.2.2 Gaussian weights), :mod:`.prior` (jump prior),
:mod:`.sampler` (§4.2.3 parallel-tempered MCMC), :mod:`.reliable` (Appendix B),
:mod:`.infill` (§4.2.4), :mod:`.mock` (posteriors from the simulated galaxy),
:mod:`.pipeline` (blocks, Dask run, release file), :mod:`.cli` (``build-decaps``) and
:mod:`.validate` (recovery figures on the simulated galaxy) and :mod:`.calibration`
(simulation-based calibration of the sampler). See docs/building_decaps.rst.
"""
