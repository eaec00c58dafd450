"""The implementation of :mod:`rnnjax.training`: the pure step, devices, the run directory, fit."""
