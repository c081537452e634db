"""Sphinx configuration for dustmaps_ext."""

project = "dustmaps_ext"
author = "dustmaps_ext developers"
extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.mathjax"]
napoleon_google_docstring = False
napoleon_numpy_docstring = True
html_theme = "alabaster"
exclude_patterns = ["_build"]
