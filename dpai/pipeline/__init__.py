"""The DVC pipeline's side of dpai: the parameter schema (params.py, validate.py), item and
file names (names.py) and the parallel runner `dpai-repro` (runner.py). Import the module
you need: this package imports nothing, so a stage loads only what it reads."""
