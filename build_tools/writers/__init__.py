"""Writers of released-format files: DECaPS release, parametric table, Bayestar-format test files."""
