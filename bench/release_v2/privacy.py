"""Differential privacy mechanisms (OpenDP) and the persistent daily privacy-budget ledger."""

from __future__ import annotations

import functools
import math
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import opendp.prelude as dp

dp.enable_features("contrib")

MECHANISMS = ("discrete_laplace", "discrete_gaussian")
LEDGER_TABLE = "track_day_charges"


class IntegerNoise:
    """Exact integer noise for counts and histograms from OpenDP's samplers.

    discrete_laplace: pure ε-DP for an L1 sensitivity of 1 at scale 1/ε.
    discrete_gaussian: ρ-zCDP for an L2 sensitivity of 1 at scale 1/sqrt(2ρ), reported as (ε, δ) via
    the standard conversion ε = ρ + 2·sqrt(ρ·ln(1/δ)).
    """

    def __init__(self, mechanism: str, epsilon: float, delta: float = 0.0) -> None:
        if mechanism not in MECHANISMS:
            raise ValueError(f"mechanism must be one of {MECHANISMS}, got {mechanism!r}")
        if not epsilon > 0 or not math.isfinite(epsilon):
            raise ValueError(f"epsilon must be a finite number > 0, got {epsilon}")
        self.mechanism = mechanism
        self.epsilon = epsilon
        if mechanism == "discrete_laplace":
            if delta != 0:
                raise ValueError("the discrete Laplace mechanism is pure DP: set delta to 0")
            self.delta = 0.0
            self.scale = 1.0 / epsilon
            self._scalar = dp.m.make_laplace(dp.atom_domain(T=int), dp.absolute_distance(T=int), scale=self.scale)
            self._vector = dp.m.make_laplace(
                dp.vector_domain(dp.atom_domain(T=int)), dp.l1_distance(T=int), scale=self.scale
            )
        else:
            if not 0 < delta < 1:
                raise ValueError("the discrete Gaussian mechanism needs 0 < delta < 1")
            self.delta = delta
            self.rho = zcdp_rho_for(epsilon, delta)
            self.scale = 1.0 / math.sqrt(2.0 * self.rho)
            self._scalar = dp.m.make_gaussian(dp.atom_domain(T=int), dp.absolute_distance(T=int), scale=self.scale)
            self._vector = dp.m.make_gaussian(
                dp.vector_domain(dp.atom_domain(T=int)), dp.l2_distance(T=int), scale=self.scale
            )

    def count(self, value: int) -> int:
        return int(self._scalar(int(value)))

    def histogram(self, values: Sequence[int]) -> list[int]:
        return [int(v) for v in self._vector([int(v) for v in values])]

    @functools.cached_property
    def distribution(self) -> tuple[np.ndarray, np.ndarray]:
        """Support and probabilities of the noise (both samplers: p(z) ∝ exp(-|z|/s) or exp(-z²/2s²))."""
        reach = int(math.ceil(60 * self.scale)) + 60
        support = np.arange(-reach, reach + 1)
        log_weights = (
            -np.abs(support) / self.scale
            if self.mechanism == "discrete_laplace"
            else -((support / self.scale) ** 2) / 2
        )
        weights = np.exp(log_weights - log_weights.max())
        return support, weights / weights.sum()

    @functools.cached_property
    def variance(self) -> float:
        support, probabilities = self.distribution
        return float(np.sum(probabilities * support.astype(float) ** 2))

    @property
    def vector_measurement(self) -> dp.Measurement:
        """The OpenDP measurement that draws this noise on a vector (its privacy map is the guarantee)."""
        return self._vector


def zcdp_rho_for(epsilon: float, delta: float) -> float:
    """Largest ρ whose zCDP→(ε, δ) conversion ε = ρ + 2·sqrt(ρ·ln(1/δ)) stays within epsilon."""
    log_term = math.log(1.0 / delta)
    root = -math.sqrt(log_term) + math.sqrt(log_term + epsilon)
    return root * root


@dataclass(frozen=True)
class BudgetDecision:
    """The ledger's answer to a charge: granted or not, and the day's spend against the cap."""

    granted: bool
    spent_today: float
    cap: float


class PrivacyLedger:
    """ε per track-day charged per UTC day, persisted in SQLite so a restart cannot reset the cap.

    A configuration (everything that sets the noise and the contribution bound) is charged its full ε
    per track-day once per day, when it first releases; every cell it releases that day is covered by
    that charge. A change of configuration mid-day charges again (basic composition, an upper bound).
    """

    def __init__(self, path: str | Path, daily_epsilon_cap: float) -> None:
        if not daily_epsilon_cap > 0:
            raise ValueError("daily_epsilon_cap must be > 0")
        self.daily_epsilon_cap = daily_epsilon_cap
        self._lock = threading.Lock()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            f"CREATE TABLE IF NOT EXISTS {LEDGER_TABLE} (day TEXT NOT NULL, configuration TEXT NOT NULL,"
            " epsilon REAL NOT NULL, recorded_at REAL NOT NULL, PRIMARY KEY (day, configuration))"
        )

    def spent(self, day: str) -> float:
        row = self._db.execute(f"SELECT COALESCE(SUM(epsilon), 0) FROM {LEDGER_TABLE} WHERE day = ?", (day,)).fetchone()
        return float(row[0])

    def charges(self, day: str) -> int:
        return int(self._db.execute(f"SELECT COUNT(*) FROM {LEDGER_TABLE} WHERE day = ?", (day,)).fetchone()[0])

    def try_charge(self, day: str, configuration: str, epsilon: float, now_s: float) -> BudgetDecision:
        """Charge a configuration's ε per track-day for the day, once; refused (spending nothing) when it
        would pass the cap. A configuration already charged today is granted at no further cost."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                spent = self.spent(day)
                known = self._db.execute(
                    f"SELECT 1 FROM {LEDGER_TABLE} WHERE day = ? AND configuration = ?", (day, configuration)
                ).fetchone()
                if known:
                    self._db.execute("ROLLBACK")
                    return BudgetDecision(True, spent, self.daily_epsilon_cap)
                if spent + epsilon > self.daily_epsilon_cap * (1 + 1e-9):  # OpenDP rounds its maps up by a few ulps
                    self._db.execute("ROLLBACK")
                    return BudgetDecision(False, spent, self.daily_epsilon_cap)
                self._db.execute(
                    f"INSERT INTO {LEDGER_TABLE} VALUES (?, ?, ?, ?)", (day, configuration, epsilon, now_s)
                )
                self._db.execute("COMMIT")
                return BudgetDecision(True, spent + epsilon, self.daily_epsilon_cap)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def close(self) -> None:
        self._db.close()
