"""The experiments of this repository (not of the wheel): run each as ``python -m experiments.NAME``
from the repository root. Their harness is ``rnnjax._src.runs``."""
