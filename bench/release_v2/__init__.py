"""Release model v2 (track-day unit, per-tier L, noise on every cell), frozen as it was replaced by v3: kept only as
the comparison rows of bench/privacy_utility.py. Nothing in privacy_vision imports it."""
