"""Release model v3: the whole privacy proof in one folder.

- grid.py: the public release grid (tiers, periods, presence ticks, labels).
- presence.py: identity-free presence integration: at every tick each body present in a zone adds at most one
  unit (tracks closer than a stated radius count once), so one person's presence over D seconds changes a tier by at
  most D / tick units in L1, whatever the tracker does over time.
- events.py: footfall per stitched track (conservative stitching, at most m zones per track and bound instance).
- strict.py: strict mode's pending groups (no group below k) per stitched track.
- mechanisms.py: OpenDP noise and accounts (per presence-hour, per stitched-track-day), the stated guarantee.
- estimates.py: noisy values as linear combinations of independent noise terms, and their 95% intervals.
- postprocess.py: unbiased consistency (histogram sums, tier nesting) from what is public.
- store.py: the durable release store (each released span once, ever; ledger charges; the outbox the uplink sends
  from), checked against the audit log.
- releaser.py: totals in, noise once, post-processing, one durable transaction, a release out.
"""
