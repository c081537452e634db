"""build_tools: the pipelines that generate the DECaPS and Wang et al. (2025) map files.

``build_tools`` writes files that :mod:`dustmaps_ext` reads; nothing in
:mod:`dustmaps_ext` imports it.
"""
