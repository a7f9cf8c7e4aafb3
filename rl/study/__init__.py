"""The study: the headline comparison of critical batch sizes across games and with
supervised learning (``rlscale compare``), and its report."""
