"""Sweeps: many runs over environments, batch sizes, learning rates and seeds, from a spec
to a results table, run by local processes or Ray Tune; population based training. See
docs/sweeps.md."""
