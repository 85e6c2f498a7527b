"""Galaxy Zoo 2 labels simulated the way Galaxy Zoo produced them: by a crowd.

For each question, :func:`answer_probabilities` turns a galaxy's true parameters into
the probability that a careful volunteer picks each answer.  Answers get harder (the
distribution flattens towards the "nothing special" answer or towards uniform) when
the galaxy is small compared with the PSF, faint, or seen at high inclination; the
same quantities shape the rendered image, so the labels are learnable from pixels.
:func:`crowd_labels` then lets 40-50 volunteers of varying reliability walk the
tree and records the (consistency-weighted) fraction of *all* volunteers giving each
answer: the Kaggle "cumulative" probabilities, which obey the tree's sum rules by
construction.
"""

from __future__ import annotations

import math

import numpy as np

from gzmorph.mock.params import ODD_FEATURES, GalaxyParams
from gzmorph.tree import GZ2, Tree

__all__ = ["visibility", "answer_probabilities", "crowd_labels"]

# Confusion of the odd features (rows: true feature in ODD_FEATURES order; columns:
# the Q8 answers ring, lens/arc, disturbed, irregular, other, merger, dust lane).
_Q8 = {
    "none": (0.10, 0.10, 0.20, 0.15, 0.30, 0.10, 0.05),
    "ring": (0.75, 0.08, 0.03, 0.02, 0.08, 0.01, 0.03),
    "lens": (0.10, 0.65, 0.05, 0.03, 0.12, 0.03, 0.02),
    "disturbed": (0.02, 0.03, 0.55, 0.15, 0.08, 0.15, 0.02),
    "irregular": (0.02, 0.02, 0.20, 0.60, 0.08, 0.06, 0.02),
    "other": (0.03, 0.05, 0.05, 0.05, 0.75, 0.05, 0.02),
    "merger": (0.01, 0.02, 0.15, 0.05, 0.04, 0.72, 0.01),
    "dust_lane": (0.02, 0.02, 0.06, 0.04, 0.16, 0.02, 0.68),
}
assert tuple(_Q8) == ODD_FEATURES
_Q9 = {"rounded": (0.8, 0.1, 0.1), "boxy": (0.2, 0.7, 0.1), "none": (0.15, 0.05, 0.8)}


def _sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _soft_bins(x: float, centres: tuple[float, ...], width: float) -> np.ndarray:
    """Answer probabilities for a continuous quantity read against ordered categories."""
    logits = -0.5 * ((x - np.asarray(centres)) / width) ** 2
    e = np.exp(logits - logits.max())
    return e / e.sum()


def _mix(p: np.ndarray | tuple, q: np.ndarray | tuple, w: float) -> np.ndarray:
    """``w * p + (1 - w) * q``: a clear answer blurred towards a default one."""
    return w * np.asarray(p, dtype=np.float64) + (1 - w) * np.asarray(q, dtype=np.float64)


def visibility(p: GalaxyParams) -> float:
    """How well structure can be made out, in [0, 1]: resolution (size / PSF) times brightness."""
    res = p.r_eff / p.psf_fwhm
    sb = p.surface_brightness / p.sky_noise
    return _sig((res - 1.6) / 0.45) * _sig((math.log(max(sb, 1e-6)) - math.log(10.0)) / 0.5)


def _q1(p: GalaxyParams, v: float) -> np.ndarray:
    """Smooth / features or disk / star or artifact."""
    res = p.r_eff / p.psf_fwhm
    star = 0.005 + 0.2 * _sig((0.45 - res) / 0.1)  # compact blobs look like stars
    if p.kind == "smooth":
        feat = 0.05 + 0.45 * v * max(p.disturbance, 0.8 * p.ring, 0.4 * (p.odd == "lens"))
    elif p.kind == "disk":
        structure = max(p.arm_strength * p.face_on * (p.n_arms > 0), p.bar * p.face_on, p.ring,
                        0.9 * (1 - p.bulge_frac), p.disturbance)
        edge = _sig((p.inclination - 72) / 4)
        feat = 0.1 + 0.85 * max(structure * (0.3 + 0.7 * v), edge * (0.5 + 0.5 * v))
    elif p.kind == "irregular":
        feat = 0.5 + 0.35 * v
    elif p.kind == "merger":
        feat = 0.4 + 0.25 * v
    else:  # star or artifact: the point source / defect is what volunteers see
        return np.array([0.1, 0.05, 0.85]) if p.kind == "star" else np.array([0.18, 0.07, 0.75])
    feat = min(feat, 0.97 - star)
    return np.array([1 - feat - star, feat, star])


def _q2(p: GalaxyParams, v: float) -> np.ndarray:
    """Could this be a disk viewed edge-on?"""
    if p.disk_h > 0 and p.kind != "irregular":
        yes = 0.02 + 0.94 * _sig((p.inclination - 74) / 2.5)
    else:
        yes = 0.04 + 0.4 * _sig((0.35 - p.axis_ratio) / 0.06)
    return np.array([yes, 1 - yes])


def _yes(x: float, floor: float = 0.05) -> np.ndarray:
    y = floor + (0.95 - floor) * x
    return np.array([y, 1 - y])


def _q5(p: GalaxyParams, v: float) -> np.ndarray:
    """Bulge prominence: B/T read against no / just noticeable / obvious / dominant."""
    return _mix(_soft_bins(p.bulge_frac, (0.0, 0.12, 0.32, 0.6), 0.09), (0.15, 0.4, 0.3, 0.15), 0.3 + 0.7 * v)


def _q6(p: GalaxyParams, v: float) -> np.ndarray:
    """Is there anything odd?"""
    strength = {"none": 0.0, "ring": p.ring, "lens": 0.8, "disturbed": p.disturbance, "irregular": 0.9,
                "other": 0.75, "merger": 0.95, "dust_lane": 0.6 * p.dust}[p.odd]
    if p.kind in ("star", "artifact"):
        strength = max(strength, 0.12)
    return _yes(strength * (0.4 + 0.6 * v), floor=0.05)


def _q7(p: GalaxyParams, v: float) -> np.ndarray:
    """How rounded: the apparent axis ratio read against round / in between / cigar."""
    return _mix(_soft_bins(p.axis_ratio, (0.95, 0.6, 0.25), 0.13), (0.4, 0.45, 0.15), 0.5 + 0.5 * v)


def _q8(p: GalaxyParams, v: float) -> np.ndarray:
    return _mix(_Q8[p.odd], _Q8["none"], 0.4 + 0.6 * v)


def _q9(p: GalaxyParams, v: float) -> np.ndarray:
    return _mix(_Q9[p.bulge_shape if p.kind == "disk" else "rounded"], (0.5, 0.2, 0.3), 0.3 + 0.7 * v)


def _arms_seen(p: GalaxyParams, v: float) -> float:
    return p.arm_strength * p.face_on * v if p.n_arms > 0 else 0.0


def _q10(p: GalaxyParams, v: float) -> np.ndarray:
    """Winding: the pitch angle read against tight / medium / loose."""
    if p.n_arms == 0:
        return np.array([0.3, 0.4, 0.3])
    return _mix(_soft_bins(p.pitch, (10.0, 19.5, 33.0), 4.5), (0.3, 0.4, 0.3), 0.2 + 0.8 * _arms_seen(p, v))


def _q11(p: GalaxyParams, v: float) -> np.ndarray:
    """Arm count 1, 2, 3, 4, more than four, can't tell."""
    if p.n_arms == 0:
        return np.array([0.1, 0.3, 0.05, 0.03, 0.02, 0.5])
    count = np.zeros(6)
    i = min(p.n_arms, 5) - 1
    count[i] = 0.76
    for j in (i - 1, i + 1):
        if 0 <= j <= 4:
            count[j] = 0.12
    count /= count.sum()
    cant = 0.05 + 0.6 * (1 - _arms_seen(p, v))
    return (1 - cant) * count + cant * np.eye(6)[5]


_QUESTIONS = {
    "Q1": _q1, "Q2": _q2,
    "Q3": lambda p, v: _yes(p.bar * p.face_on * v, floor=0.04),
    "Q4": lambda p, v: _yes(_arms_seen(p, v) if p.n_arms else 0.25 * p.ring * v + 0.1 * (p.kind == "irregular"),
                            floor=0.06),
    "Q5": _q5, "Q6": _q6, "Q7": _q7, "Q8": _q8, "Q9": _q9, "Q10": _q10, "Q11": _q11,
}


def answer_probabilities(params: GalaxyParams, tree: Tree = GZ2) -> list[np.ndarray]:
    """Probability that a careful volunteer gives each answer, question by question.

    Parameters
    ----------
    params : GalaxyParams
    tree : Tree
        Must be the GZ2 tree (or one with the same question names and answer counts).

    Returns
    -------
    list of numpy.ndarray
        One distribution per question in tree order, each summing to one.
    """
    v = visibility(params)
    out = []
    for q in tree.questions:
        if q.name not in _QUESTIONS:
            raise ValueError(f"the mock label model knows GZ2 questions only, not {q.name!r} of tree {tree.name!r}")
        pq = np.clip(np.asarray(_QUESTIONS[q.name](params, v), dtype=np.float64), 1e-9, None)
        if pq.shape != (len(q.answers),):
            raise ValueError(f"{q.name}: the mock model gives {pq.shape[0]} answers, the tree has {len(q.answers)}")
        out.append(pq / pq.sum())
    return out


def crowd_labels(params: GalaxyParams, rng: np.random.Generator, n_volunteers: int = 45,
                 tree: Tree = GZ2, with_counts: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Simulate volunteers classifying one galaxy; return the cumulative answer fractions.

    Every volunteer answers every question they reach (Q1 and Q6 are reached by all);
    a volunteer of reliability ``rho`` follows the galaxy's answer distribution with
    probability ``rho`` and answers at random otherwise.  Each volunteer carries a
    consistency weight, as in GZ2's user weighting.

    Parameters
    ----------
    params : GalaxyParams
    rng : numpy.random.Generator
    n_volunteers : int
    tree : Tree
    with_counts : bool
        Also return the (unweighted) number of volunteers who gave each answer.

    Returns
    -------
    numpy.ndarray
        ``float64 (tree.n_answers,)``: weighted fraction of all volunteers giving each
        answer, so every question sums to the value of its parent answer.
    counts : numpy.ndarray
        ``int64 (tree.n_answers,)`` votes per answer (only ``with_counts``).
    """
    if n_volunteers < 1:
        raise ValueError(f"n_volunteers must be at least 1, got {n_volunteers}")
    probs = answer_probabilities(params, tree)
    rho = rng.beta(24.0, 1.5, n_volunteers)
    weight = rng.uniform(0.5, 1.0, n_volunteers)
    n_q = tree.n_questions
    answers = np.empty((n_volunteers, n_q), dtype=np.int64)
    for qi, pq in enumerate(probs):
        pv = rho[:, None] * pq[None, :] + (1 - rho[:, None]) / pq.size  # (V, k) per-volunteer distribution
        cdf = np.cumsum(pv, axis=1)[:, :-1]
        answers[:, qi] = (rng.random(n_volunteers)[:, None] >= cdf).sum(axis=1)
    question_of, parent = tree.question_of, tree.parent_answer
    starts = [sl.start for sl in tree.slices]
    reached = np.ones((n_volunteers, n_q), dtype=bool)
    for qi in range(n_q):
        if parent[qi] >= 0:  # parents come first, so reached[:, pq] is final
            pq = int(question_of[parent[qi]])
            reached[:, qi] = reached[:, pq] & (answers[:, pq] == parent[qi] - starts[pq])
    out = np.zeros(tree.n_answers)
    counts = np.zeros(tree.n_answers, dtype=np.int64)
    for qi, sl in enumerate(tree.slices):
        chose = (answers[:, qi][:, None] == np.arange(sl.stop - sl.start)) & reached[:, qi][:, None]  # (V, k)
        out[sl] = weight @ chose / weight.sum()
        counts[sl] = chose.sum(axis=0)
    out = np.minimum(out, 1.0)  # a unanimous answer may round to 1 + 1 ulp
    return (out, counts) if with_counts else out
