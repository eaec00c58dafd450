"""One script per paper reproduced (``python -m experiments.reproduce.NAME``); ``run_all`` runs them all."""
