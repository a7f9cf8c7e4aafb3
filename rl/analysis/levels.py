"""The default interval level of the critical-batch fits, apart from ``rl.analysis.fit`` (which
re-exports it) so that ``rlscale fit --ci``'s default costs no import of scipy."""

B_CRIT_CI = 0.95
"""Default level of the seed-bootstrap intervals of B_crit, S_min and E_min (as the
exponents and the noise scale's Fieller intervals)."""
