"""A fitted calibration, applied to predicted answer fractions.

What it does to one prediction (fitted by :func:`gzmorph.evaluation.calibrate.fit_calibration`
on a calibration split carved from the training data):

1. **Fractions.** Per question, the model's split of the question (its answers
   renormalised) is sharpened or softened by a temperature ``T``: ``c' ∝ c^(1/T)``; the
   fractions are then rebuilt down the tree (a question's answers sum to its calibrated
   parent answer), so the tree's sums still hold and the most likely answer never changes.
2. **Probability of being right** (``Qn_p_correct``). The chance that the model's most
   likely answer is the crowd's, as an isotonic (monotone) function of its calibrated
   fraction. This, not the fraction, is what the triage thresholds cut on.
3. **Intervals** (``Class1.1_lo``, ``Class1.1_hi``). A central interval for the crowd
   value of each answer, vote noise included (:func:`vote_interval`): the crowd value is
   modelled as ``k / N`` with ``k`` beta-binomial (made continuous, for weighted fractions), ``N`` the typical number of volunteers, mean the calibrated
   fraction and a concentration ``kappa`` per answer fitted so that the intervals cover
   the calibration split's crowd values at their nominal rate. The interval is for the
   crowd value itself (what a new crowd of ``N`` would say), not for the model's estimate
   of the underlying split: it includes the vote noise.

Stored as ``calibration.json`` in a run directory (and a model package).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gzmorph.errors import ConfigError, RunError
from gzmorph.models.package import PACKAGE_FILES
from gzmorph.tree import Tree

__all__ = ["Calibration", "conditional", "tempered", "CALIBRATION_FILE", "betabinom_interval", "dirichlet_interval", "vote_interval", "calibration_for", "CALIBRATION_MODES", "load_calibration", "FORMAT"]

CALIBRATION_FILE = PACKAGE_FILES["calibration"]  # the same name in a run directory and a package
FORMAT = "gzmorph-calibration"
_P_EPS = 1e-6


def conditional(values: np.ndarray, sl: slice) -> np.ndarray:
    """A question's answers renormalised ``(N, k)``; uniform where they sum to 0."""
    part = np.clip(values[:, sl], 0.0, None)
    total = part.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, part / np.where(total > 0, total, 1.0), 1.0 / part.shape[1])


def tempered(cond: np.ndarray, temperature: float) -> np.ndarray:
    """``c^(1/T)`` renormalised, computed in log space (zeros stay zero)."""
    with np.errstate(divide="ignore"):
        logits = np.log(np.clip(cond, 0.0, None)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    out = np.exp(logits)
    return out / out.sum(axis=1, keepdims=True)


def betabinom_interval(p: np.ndarray, kappa: float | np.ndarray, n: int, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Central ``level`` interval of ``k / n`` for ``k ~ BetaBinomial(n, kappa p, kappa (1 - p))``.

    ``p`` of any shape; NaN ``p`` gives NaN bounds. The bounds are mid-p quantiles: an
    edge value ``k`` is inside when at least half of its probability is needed
    (``CDF(k) - pmf(k) / 2`` between ``(1 - level) / 2`` and ``(1 + level) / 2``). Plain
    quantiles would take every edge value whole and, with ~40 votes, cover some 88%
    instead of 80%; mid-p bounds cover the nominal rate on average.
    """
    from scipy.special import gammaln  # here: scipy's import is a second of every prediction's start-up

    p = np.asarray(p, dtype=np.float64)
    ok = np.isfinite(p)
    q = np.clip(np.where(ok, p, 0.5), _P_EPS, 1 - _P_EPS)
    a, b = (np.asarray(kappa) * q)[..., None], (np.asarray(kappa) * (1 - q))[..., None]
    k = np.arange(n + 1, dtype=np.float64)  # (n + 1,)
    log_pmf = (gammaln(n + 1) - gammaln(k + 1) - gammaln(n - k + 1)
               + gammaln(k + a) + gammaln(n - k + b) - gammaln(n + a + b)
               - gammaln(a) - gammaln(b) + gammaln(a + b))  # (..., n + 1)
    pmf = np.exp(log_pmf - log_pmf.max(axis=-1, keepdims=True))
    pmf /= pmf.sum(axis=-1, keepdims=True)
    mid = np.cumsum(pmf, axis=-1) - pmf / 2  # (..., n + 1), increasing in k
    lo = (mid < (1 - level) / 2).sum(axis=-1)
    hi = np.maximum((mid <= (1 + level) / 2).sum(axis=-1) - 1, lo)
    return np.where(ok, lo / n, np.nan), np.where(ok, hi / n, np.nan)


def dirichlet_interval(alpha: np.ndarray, votes: np.ndarray | int, tree: Tree, level: float
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Intervals of a Dirichlet head: the Dirichlet-multinomial predictive of the crowd's fractions.

    ``alpha`` ``(N, n_answers)`` are the network's concentrations (:mod:`gzmorph.nn.head`),
    ``votes`` the volunteers per galaxy (``(N,)`` or one number). For answer ``j`` of a
    question the count is ``BetaBinomial(n, alpha_j, A - alpha_j)`` with ``A`` the
    question's total concentration. Root questions only (everyone answers them); the
    others are NaN, since their number of voters is itself uncertain.
    """
    alpha = np.asarray(alpha, dtype=np.float64)
    votes = np.broadcast_to(np.asarray(votes, dtype=np.int64), (len(alpha),))
    lo, hi = np.full(alpha.shape, np.nan), np.full(alpha.shape, np.nan)
    for q, sl in zip(tree.questions, tree.slices):
        if q.parent is not None:
            continue
        total = alpha[:, sl].sum(axis=1, keepdims=True)  # (N, 1)
        for n in np.unique(votes[votes > 0]):
            rows = votes == n
            lo[rows, sl], hi[rows, sl] = betabinom_interval(alpha[rows, sl] / total[rows], total[rows], int(n), level)
    return lo, hi


def vote_interval(p: np.ndarray, kappa: float | np.ndarray, n: int, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Central ``level`` interval of a crowd fraction with vote noise, for weighted fractions too.

    Real crowd fractions are rarely whole votes over ``n`` (GZ2 weights its volunteers),
    so the beta-binomial's grid of ``k / n`` would miss them. The interval is that of a
    Beta with the beta-binomial's mean ``p`` and variance
    ``p (1 - p) / n * (n + kappa) / (1 + kappa)`` (the same vote noise, made continuous),
    with bounds within half a vote of 0 or 1 snapped there (a crowd that gave an answer
    no vote says exactly 0).
    """
    from scipy.stats import beta  # here: scipy.stats takes about a second to import

    p = np.asarray(p, dtype=np.float64)
    ok = np.isfinite(p)
    q = np.clip(np.where(ok, p, 0.5), _P_EPS, 1 - _P_EPS)
    kappa = np.asarray(kappa, dtype=np.float64)
    conc = np.maximum((1 + kappa) * n / (n + kappa) - 1, 1e-3)  # Beta concentration with the same variance
    lo = beta.ppf((1 - level) / 2, q * conc, (1 - q) * conc)
    hi = beta.ppf((1 + level) / 2, q * conc, (1 - q) * conc)
    half = 0.5 / n
    lo = np.where(lo < half, 0.0, lo)
    hi = np.where(hi > 1 - half, 1.0, hi)
    return np.where(ok, lo, np.nan), np.where(ok, hi, np.nan)


@dataclass
class Calibration:
    """A fitted calibration (see the module docstring).

    Parameters
    ----------
    tree : str
        Name of the tree it was fitted for.
    temperature : dict
        Question -> temperature (1: unchanged).
    p_correct : dict
        Question -> ``[x, y]`` knots of the isotonic map from the calibrated top fraction
        to the probability that the most likely answer is the crowd's.
    concentration : dict
        Answer column -> beta-binomial concentration ``kappa`` of its intervals.
    votes : int
        Volunteers per galaxy ``N`` of the vote-noise term.
    level : float
        Default central level of the intervals.
    thresholds : dict
        Question -> ``Qn_p_correct`` threshold for triage (above 1: all to experts).
    target_accuracy : float
    skipped : dict
        Question -> why it was not fitted (it keeps temperature 1 and its top fraction as
        ``p_correct``).
    fitted_on : dict
        Facts about the calibration split (source, rows, reached images per question).
    floor : dict
        Answer column -> the least centre of its intervals: the calibration split's median
        crowd value where the model predicts less than half a vote (a network can say
        exactly 0 for an answer the crowd gives a few votes). Fractions are not changed.
    """

    tree: str
    temperature: dict[str, float]
    p_correct: dict[str, list[list[float]]]
    concentration: dict[str, float]
    votes: int
    level: float = 0.8
    thresholds: dict[str, float] = field(default_factory=dict)
    target_accuracy: float = 0.99
    skipped: dict[str, str] = field(default_factory=dict)
    fitted_on: dict[str, Any] = field(default_factory=dict)
    floor: dict[str, float] = field(default_factory=dict)

    # ------------------------------------------------------------------ applying
    def fractions(self, values: np.ndarray, tree: Tree) -> np.ndarray:
        """Calibrated ``(N, n_answers)`` fractions: tempered splits rebuilt down the tree."""
        values = np.asarray(values, dtype=np.float64)
        out = np.full_like(values, np.nan)
        for q, sl in zip(tree.questions, tree.slices):
            cond = tempered(conditional(values, sl), self.temperature.get(q.name, 1.0))
            reach = np.ones(len(values)) if q.parent is None else out[:, tree.columns.index(q.parent)]
            out[:, sl] = cond * reach[:, None]
        return np.where(np.isnan(values), np.nan, out)  # untrained answers stay NaN

    def probability_correct(self, calibrated: np.ndarray, tree: Tree) -> dict[str, np.ndarray]:
        """Question -> ``(N,)`` probability that the most likely answer is the crowd's."""
        out = {}
        for q, sl in zip(tree.questions, tree.slices):
            top = conditional(calibrated, sl).max(axis=1)
            knots = self.p_correct.get(q.name)
            prob = top if knots is None else np.interp(top, knots[0], knots[1])
            out[q.name] = np.where(np.isnan(calibrated[:, sl]).any(axis=1), np.nan, prob)
        return out

    def intervals(self, calibrated: np.ndarray, tree: Tree, level: float | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
        """``lo, hi`` ``(N, n_answers)``: central intervals of the crowd values (NaN where untrained)."""
        level = self.level if level is None else level
        lo = np.full(calibrated.shape, np.nan)
        hi = np.full(calibrated.shape, np.nan)
        for j, col in enumerate(tree.columns):
            kappa = self.concentration.get(col)
            if kappa is not None:
                centre = np.maximum(calibrated[:, j], self.floor.get(col, 0.0))  # NaN stays NaN
                lo[:, j], hi[:, j] = vote_interval(centre, kappa, self.votes, level)
        return lo, hi

    # ------------------------------------------------------------------ files
    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": 1, "tree": self.tree, "temperature": self.temperature,
                "p_correct": self.p_correct, "concentration": self.concentration, "votes": self.votes,
                "level": self.level, "thresholds": self.thresholds, "target_accuracy": self.target_accuracy,
                "skipped": self.skipped, "fitted_on": self.fitted_on, "floor": self.floor}

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "calibration") -> "Calibration":
        if d.get("format") != FORMAT:
            raise RunError(f"{source}: not a gzmorph calibration (format {d.get('format')!r})")
        keys = ("tree", "temperature", "p_correct", "concentration", "votes", "level", "thresholds",
                "target_accuracy", "skipped", "fitted_on", "floor")
        return cls(**{k: d[k] for k in keys if k in d})

    def triage_file(self) -> dict[str, Any]:
        """The thresholds in the ``triage_thresholds.json`` format (on ``Qn_p_correct``)."""
        return {"tree": self.tree, "target_accuracy": self.target_accuracy, "thresholds": self.thresholds,
                "confidence": "p_correct"}

    def thresholds_spec(self, given: str | Path | dict | None) -> dict[str, Any]:
        """The triage thresholds of a calibrated job: this calibration's, or ``given``
        when it was fitted on ``p_correct``; thresholds on the confidence ``a``
        (``gzmorph evaluate``) are refused rather than misapplied."""
        if given is None:
            return self.triage_file()
        spec = given
        if not isinstance(spec, dict):
            try:
                spec = json.loads(Path(spec).read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise ConfigError(f"{given}: cannot read triage thresholds: {exc}") from None
        if not isinstance(spec, dict) or spec.get("confidence") != "p_correct":
            raise ConfigError(f"{given if not isinstance(given, dict) else 'triage thresholds'}: thresholds on "
                              "the confidence a, but a calibrated model cuts on Qn_p_correct; leave "
                              "--triage-thresholds out (the calibration has its own) or predict with "
                              "--calibration off")
        return spec

    def save(self, folder: str | Path) -> Path:
        from gzmorph.runtime import write_json

        path = Path(folder) / CALIBRATION_FILE
        write_json(self.to_dict(), path)
        return path


def load_calibration(path: str | Path, tree: Tree | None = None) -> Calibration:
    """Read ``calibration.json`` (a file, or a run directory / model package holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / CALIBRATION_FILE
    if not path.is_file():
        raise RunError(f"{path.parent}: no calibration ({CALIBRATION_FILE}); fit one with `gzmorph calibrate "
                       f"--model {path.parent} --predictions CAL_PREDICTIONS --labels CAL_LABELS`")
    try:
        cal = Calibration.from_dict(json.loads(path.read_text()), str(path))
    except (json.JSONDecodeError, TypeError, KeyError) as exc:
        raise RunError(f"{path}: unreadable calibration ({exc})") from None
    if tree is not None and cal.tree != tree.name:
        raise RunError(f"{path}: calibration for tree {cal.tree!r}, the model predicts tree {tree.name!r}")
    if not (cal.votes >= 1 and 0 < cal.level < 1 and all(math.isfinite(t) and t > 0 for t in cal.temperature.values())):
        raise RunError(f"{path}: invalid calibration values (votes {cal.votes}, level {cal.level})")
    return cal


CALIBRATION_MODES = ("auto", "on", "off")


def calibration_for(run_dirs: list[str | Path], mode: str, tree: Tree) -> Calibration | None:
    """The calibration a prediction job applies.

    ``mode`` ``"off"``: none; ``"auto"``: the model's ``calibration.json`` when it has
    one; ``"on"``: it must have one (:class:`~gzmorph.errors.RunError` otherwise). A
    calibration belongs to one model: an ensemble of several is predicted uncalibrated
    (``"on"`` refuses it).
    """
    if mode not in CALIBRATION_MODES:
        raise RunError(f"calibration must be one of {CALIBRATION_MODES}, not {mode!r}")
    if mode == "off":
        return None
    if len(run_dirs) != 1:
        if mode == "on":
            raise RunError(f"--calibration on: a calibration belongs to one model, {len(run_dirs)} were given")
        return None
    folder = Path(run_dirs[0])
    folder = folder.parent if folder.is_file() else folder  # an .onnx file: its package folder
    if not (folder / CALIBRATION_FILE).is_file():
        if mode == "on":
            raise RunError(f"{folder}: no {CALIBRATION_FILE}, but --calibration on needs one; fit it with "
                           f"`gzmorph calibrate --model {folder} --predictions CAL_PREDICTIONS --labels CAL_LABELS`")
        return None
    return load_calibration(folder, tree)
