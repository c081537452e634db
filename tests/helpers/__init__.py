"""Helpers shared by the test modules: independent reference computations
(:mod:`helpers.reference`, :mod:`helpers.parametric_cases`) and a local HTTP server that
plays Dataverse and GitHub (:mod:`helpers.fake_dataverse`).

``tests/`` is on ``sys.path`` while the tests run (``pythonpath`` in ``pyproject.toml``), so
test modules import ``helpers.<module>``; they never import each other.
"""
