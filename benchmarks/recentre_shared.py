"""How much recentring moves and rescales the real GZ2 images (already centred, already scaled).

Usage::

    python benchmarks/recentre_shared.py --images ../shared/data/gz2-kaggle-5k-141px/images_training_rev1 --n 1000

Decodes the first ``--n`` JPEGs (sorted by GalaxyID) at ``--size`` px, as prediction
does, measures each with :func:`gzmorph.data.recentre.measure_rgb` and prints one JSON
line: the fraction where a galaxy was found, the percentiles of the shift (in pixels of
the 424-px original) and of the zoom (``side / (8.48 R90)``; 1 means the image already
follows the GZ2 convention of 0.02 petroR90 arcsec per pixel), the size method used and
the measurement time per image.  Nothing derived from the images is written.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

import numpy as np

from gzmorph.data.decode import decode
from gzmorph.data.recentre import measure_rgb


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", required=True)
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--size", type=int, default=141)
    args = p.parse_args()
    files = sorted(Path(args.images).glob("*.jpg"), key=lambda f: int(f.stem))[: args.n]
    shifts, zooms, r90s, methods, seconds = [], [], [], Counter(), 0.0
    for f in files:
        image = decode(f, args.size)
        t0 = time.perf_counter()
        placement = measure_rgb(image)
        seconds += time.perf_counter() - t0
        methods[placement.method] += 1
        if placement.found:
            g = placement.geometry()
            shifts.append(float(np.hypot(g[0], g[1])) * 424)
            zooms.append(float(g[2]))
            r90s.append(placement.r90)
    q = [5, 25, 50, 75, 95]
    print(json.dumps({
        "n": len(files), "size": args.size, "found": round(len(shifts) / len(files), 4), "methods": dict(methods),
        "shift_px424_percentiles": dict(zip(map(str, q), np.round(np.percentile(shifts, q), 2).tolist())),
        "zoom_percentiles": dict(zip(map(str, q), np.round(np.percentile(zooms, q), 3).tolist())),
        "zoom_clipped": int(sum(z in (0.25, 4.0) for z in zooms)),
        "median_r90_px424": round(float(np.median(r90s)) * 424 / args.size, 1),
        "ms_per_image": round(1000 * seconds / len(files), 2)}))


if __name__ == "__main__":
    main()
