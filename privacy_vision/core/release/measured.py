"""Figures the stated guarantee rests on, measured on the shared data: the DPIA quotes them as measured, never as
bounds. Re-measure on your own scene with the commands named here.
"""

from __future__ import annotations

# How often the presence bound's assumption fails, from `bench/presence_assumption.py`: at the same instant, two
# confirmed tracks matched to one annotated person farther apart than the radius (that person counts twice), and
# two annotated people closer than it (counted once).
SAME_BODY = {
    "radius_m": 0.3,
    "statement": "not yet measured on this commit",
}

# Lineages (stitched tracks) per annotated person, by time in view, from `bench/tracks_per_person.py`.
LINEAGES_PER_PERSON: dict = {"by_time_in_view": {}, "command": "bench/tracks_per_person.py"}
