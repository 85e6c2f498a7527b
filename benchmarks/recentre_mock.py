"""Recentring accuracy on mock FITS cutouts, against the truth they were made with.

Usage::

    python benchmarks/recentre_mock.py --n 200 --size 96

Renders ``--n`` mock Legacy-Surveys-like grz cutouts (:mod:`gzmorph.mock.fits`, seed
0), measures each with :func:`gzmorph.data.recentre.measure` on the sum of its bands and
prints one JSON line: the fraction with the centre within 1 px and the size (R90) within
10% of the truth, percentiles of both errors, and the size methods used.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter

import numpy as np

from gzmorph.data.recentre import measure
from gzmorph.mock.dataset import galaxy_rng
from gzmorph.mock.fits import MOCK_SURVEYS, render_cutout
from gzmorph.mock.params import sample_params


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--survey", default="legacy", choices=sorted(MOCK_SURVEYS))
    args = p.parse_args()
    centre, size, methods = [], [], Counter()
    for i in range(args.n):
        params = sample_params(galaxy_rng(0, "train", i, "params"))
        planes, truth = render_cutout(params, galaxy_rng(0, "train", i, "render"), args.size,
                                      MOCK_SURVEYS[args.survey])
        placement = measure(planes.sum(axis=0))
        methods[placement.method] += 1
        centre.append(np.hypot(placement.x - truth["x_true"], placement.y - truth["y_true"]))
        size.append(placement.r90 / truth["r90_true"] - 1)
    centre, size = np.array(centre), np.array(size)
    print(json.dumps({"n": args.n, "size": args.size, "survey": args.survey, "methods": dict(methods),
                      "centre_within_1px": float(np.mean(centre < 1)),
                      "size_within_10pc": float(np.mean(np.abs(size) < 0.1)),
                      "centre_err_px_p50_p95_max": np.round(np.percentile(centre, [50, 95, 100]), 2).tolist(),
                      "size_err_p5_p50_p95": np.round(np.percentile(size, [5, 50, 95]), 3).tolist()}))


if __name__ == "__main__":
    main()
