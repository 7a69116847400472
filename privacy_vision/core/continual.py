"""Continual release of a running count (daily footfall per zone) with the binary-tree mechanism.

Releasing a noisy count per window and summing them makes the error of the day's total grow with
the number of windows; the binary mechanism (Chan, Shi and Song 2011; Dwork et al. 2010) noises
dyadic partial sums instead, so every prefix sum uses at most L = ⌈log2 T⌉ + 1 noisy nodes and its
error grows polylogarithmically in T. One window's count (sensitivity 1 under the person-window unit,
contributions clipped to one per person) touches L nodes, so each node gets exact discrete Laplace
noise of scale L/ε from OpenDP, and the whole day's stream of prefix sums is ε-DP. Written here because
OpenDP (0.16) has no continual-release counter; the noise itself is OpenDP's.
"""
from __future__ import annotations

import math

import numpy as np

from privacy_vision.core.privacy import IntegerNoise, smallest_margin


class BinaryTreeCounter:
    def __init__(self, horizon: int, epsilon: float) -> None:
        if horizon < 1:
            raise ValueError("horizon (windows per day) must be ≥ 1")
        self.horizon = horizon
        self.levels = math.ceil(math.log2(horizon)) + 1 if horizon > 1 else 1
        self.epsilon = epsilon
        self._noise = IntegerNoise("discrete_laplace", epsilon / self.levels)
        self._exact = [0] * self.levels  # exact partial sums α_i of the open dyadic blocks
        self._noisy = [0] * self.levels  # their noisy versions, drawn once when a block closes
        self.steps = 0

    def add(self, count: int) -> int:
        """Feed the next window's count (clipped to ≥ 0); returns the noisy running total so far."""
        if self.steps >= self.horizon:
            raise ValueError(f"the counter's horizon of {self.horizon} windows is used up; start the next day's counter")
        self.steps += 1
        t = self.steps
        lowest = (t & -t).bit_length() - 1  # the level whose block closes at t
        self._exact[lowest] = sum(self._exact[:lowest]) + max(0, int(count))
        for level in range(lowest):
            self._exact[level] = 0
            self._noisy[level] = 0
        self._noisy[lowest] = self._noise.count(self._exact[lowest])
        return sum(self._noisy[level] for level in range(self.levels) if (t >> level) & 1)

    def margin_for(self, delta: float) -> int:
        """Smallest t ≥ 0 such that, over all prefixes of the day, P[any prefix's noise ≥ t] ≤ delta.

        A prefix's noise is a sum of at most L node noises (a sum of more i.i.d. symmetric unimodal terms
        has the heavier tail, so L terms bound it); a union bound over the horizon covers every step.
        """
        support, probabilities = self._noise.distribution
        total = probabilities
        for _ in range(self.levels - 1):
            total = np.convolve(total, probabilities)
        reach = len(total) // 2
        return smallest_margin(np.arange(-reach, reach + 1), total, delta / self.horizon)
