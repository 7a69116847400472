"""Post-processing from public facts only, kept unbiased: nothing here looks at a true value.

- A cell's head count has several independent unbiased estimates (its own total, the sums of its histograms, the
  sum of its finer tier's released cells): their inverse-variance average is unbiased and has the least variance
  of any such average (weights from the stated noise, which is public).
- A histogram is then made to add up to that total by the least-squares adjustment under the equality alone (every
  bin moves by the same share of the gap), which keeps every bin unbiased. Non-negativity is left to the displays
  (intervals are cut at 0, values shown as at least 0): clamping a value would bias it and every sum made of it.
"""

from __future__ import annotations

from privacy_vision.core.release.estimates import Estimate, total


def combine(estimates: list[Estimate]) -> Estimate:
    """Inverse-variance average of independent unbiased estimates of one quantity."""
    if not estimates:
        raise ValueError("combine needs at least one estimate")
    ids = [term.noise_id for estimate in estimates for term in estimate.terms]
    if len(ids) != len(set(ids)):
        raise ValueError("combine needs independent estimates (disjoint noise draws)")
    weights = [1.0 / estimate.variance for estimate in estimates]
    norm = sum(weights)
    return total(estimate * (weight / norm) for estimate, weight in zip(estimates, weights))


def consistent(histogram: list[Estimate], head_count: Estimate) -> list[Estimate]:
    """The histogram moved, bin for bin by an equal share, so that it adds up to head_count (least squares)."""
    gap = (head_count - total(histogram)) * (1.0 / len(histogram))
    return [bin_ + gap for bin_ in histogram]
