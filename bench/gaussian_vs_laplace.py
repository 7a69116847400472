"""Would Gaussian noise under zCDP beat the discrete Laplace at the same stated guarantee? Prints the noise standard
deviation of both for the events' footfall (one lineage counts in up to m zones and the site: L1 = m + 1,
L2 = √(m + 1)) at the configured ε per stitched-track-day, the Gaussian's ε(δ) from OpenDP's zCDP → approximate-DP
map. Presence needs no row: one person's hour can lie in one bin of one cell, where L2 = L1, and there the Gaussian
is always the wider of the two.

    .venv/bin/python bench/gaussian_vs_laplace.py [--epsilon 0.5] [--delta 1e-6]
"""

from __future__ import annotations

import argparse
import math

import opendp.prelude as dp

dp.enable_features("contrib")
SPACE = dp.vector_domain(dp.atom_domain(T=float, nan=False)), dp.l2_distance(T=float)


def gaussian_epsilon(scale: float, l2: float, delta: float) -> float:
    return dp.c.make_zCDP_to_approxDP(dp.m.make_gaussian(*SPACE, scale=scale)).map(l2).epsilon(delta)


def gaussian_scale(epsilon: float, l2: float, delta: float) -> float:
    """The smallest σ (to 0.1%) whose (ε, δ) is within the target, by bisection on OpenDP's privacy map."""
    low, high = 1e-3, 1e6
    while high / low > 1.001:
        middle = math.sqrt(low * high)
        low, high = (middle, high) if gaussian_epsilon(middle, l2, delta) > epsilon else (low, middle)
    return high


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epsilon", type=float, default=0.5, help="ε per stitched-track-day (the default's)")
    parser.add_argument("--delta", type=float, default=1e-6)
    args = parser.parse_args()
    print(
        f"| m (zones per lineage-day) | L1 | L2 | discrete Laplace sd at ε {args.epsilon} | Gaussian sd at (ε {args.epsilon}, δ {args.delta:g}) |"
    )
    print("|---|---|---|---|---|")
    for zones in (1, 3, 5, 8, 10, 20):
        l1, l2 = zones + 1, math.sqrt(zones + 1)
        alpha = math.exp(-args.epsilon / l1)  # discrete Laplace of scale L1 / ε: variance 2α / (1 - α)²
        laplace_sd = math.sqrt(2 * alpha) / (1 - alpha)
        print(f"| {zones} | {l1} | {l2:.2f} | {laplace_sd:.1f} | {gaussian_scale(args.epsilon, l2, args.delta):.1f} |")


if __name__ == "__main__":
    main()
