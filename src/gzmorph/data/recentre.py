"""Recentring and rescaling by source extraction (the paper's section 7.3) with ``sep``.

Dieleman et al. crop a fixed centre of every image, which fails when the galaxy is off
centre or much larger or smaller than usual; a few models of their ensemble were
trained on images recentred and rescaled with SExtractor.  Here ``sep`` (the SExtractor
algorithms as a library) measures, once per image, where the galaxy is and how big it
is, and the crop geometry uses those numbers in the same affine warp as the
augmentation (:func:`gzmorph.nn.augment.place`): no second resampling.

The rule, on a linear detection image (the sum of the sky-subtracted bands of a FITS
cutout, or of the RGB channels of a JPEG):

1. background: one ``sep.Background`` cell over the whole image (its sigma-clipped
   mode and rms: a cutout is too small for a mesh that would not eat a large galaxy);
2. sources: ``sep.extract`` at 1.5 sigma, 5 pixels minimum, deblended;
3. the galaxy is the source with the largest flux whose centroid lies within
   :data:`NEAR_FRACTION` (a quarter) of the side from the image centre; none there:
   not found;
4. centre: its flux-weighted centroid; the pixels of the other sources (segmentation
   map) are set to 0 for the photometry;
5. size: the Petrosian R90 (SDSS definition: Petrosian ratio 0.2 over the annulus
   0.8-1.25 r, Petrosian flux within 2 Petrosian radii, R90 the radius holding 90% of
   it), or ``sep.flux_radius`` at 90% when the Petrosian radius is undefined (the ratio
   never falls to 0.2 inside the image);
6. scale: GZ2's cutouts are 0.02 petroR90 arcsec per pixel on 424 pixels, so their side
   is 8.48 R90 (:data:`GZ2_SIDE_IN_R90`); an image of side ``S`` with R90 = ``r``
   pixels is brought to that convention by the zoom ``S / (8.48 r)``, clipped to
   :data:`ZOOM_RANGE`.

Colour composites (JPEG/PNG) are measured on the sum of their channels, which the asinh
stretch has made non-linear: it lifts the outskirts, so R90 comes out larger than on
linear data (about 1.6 times on the GZ2 images).  Their zoom therefore uses
:data:`COMPOSITE_SIDE_IN_R90` = 5.24, calibrated so that the median zoom of the real GZ2
images (1,000 of the shared Kaggle images, BENCHMARKS.md) is 1; FITS cutouts, measured
on linear data, use 8.48.

Not found (no source near the centre, or no measurable size): the plain centre crop
(offset 0, zoom 1), flagged ``found = 0`` (the ``recentred`` column of predictions).

How this differs from the paper's recentring.  The paper (section 7.3) says only that
SExtractor estimated the position and size of the central object, and that the image was
recentred and rescaled.  Its public code (``kaggle-galaxies``:
``extract_pysex_params_gen2.py``, ``realtime_augmentation.py``) does, on each 424-px
JPEG, and this module does instead:

=================  ==============================================  ==========================================
step               the paper's code                                here
=================  ==============================================  ==========================================
channel measured   the green channel of the JPEG                   the sum of the three channels (JPEG), or
                                                                   of the sky-subtracted linear bands (FITS)
detection          SExtractor, ``DETECT_THRESH`` 2 (its other      ``sep`` at 1.5 sigma over one global
                   settings at their defaults)                     background cell, 5 pixels, deblended
object chosen      largest ``pi * A * B`` (isophotal ellipse       largest flux among the sources within a
                   area) x ``exp(-d^2 / 5000)``, ``d`` the         quarter of the side (106 px at 424) of
                   distance in px from the centre: a size          the centre; none there: not found
                   ranking with a Gaussian centrality prior
centre             ``X_IMAGE``, ``Y_IMAGE`` (barycentre)           sep's barycentre (the same quantity)
size measure       ``PETRO_RADIUS * A_IMAGE``: SExtractor's        circular SDSS Petrosian R90 (radius of
                   elliptical Petrosian aperture along the         90% of the Petrosian flux), else the 90%
                   major axis, in px                               flux radius
zoom               ``160 / (PETRO_RADIUS * A_IMAGE)``: that        ``side / (5.24 R90)`` (JPEG; 8.48 for
                   aperture brought to 160 px of 424               FITS): the median GZ2 image gets zoom 1
clip range         ``[1/1.5, 1.5]``; no size: 1                    ``[0.25, 4]`` (:data:`ZOOM_RANGE`); no
                                                                   size: 1, flagged not found
=================  ==============================================  ==========================================

So the ``paper-recentred`` preset is the paper's idea with this module's rule, not a
replica of its numbers: the wider clip range and the flux-based choice are for survey
cutouts, whose galaxies can be far smaller or larger than GZ2's and off centre.

Geometry arrays are float32 ``(4,)``: ``[dx, dy, zoom, found]``, ``dx``/``dy`` the
galaxy's offset from the image centre as a fraction of the side (x right, y down).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["Placement", "measure", "measure_rgb", "GZ2_SIDE_IN_R90", "COMPOSITE_SIDE_IN_R90", "NEAR_FRACTION",
           "ZOOM_RANGE", "NO_GEOMETRY", "petrosian_r90"]

#: Side of a GZ2 cutout in units of petroR90: 424 px x 0.02 petroR90 per px.
GZ2_SIDE_IN_R90 = 424 * 0.02
#: The same for R90 measured on asinh colour composites (JPEG/PNG): 8.48 x 0.618, the median
#: zoom measured with 8.48 on 1,000 real GZ2 images (benchmarks/recentre_shared.py).
COMPOSITE_SIDE_IN_R90 = 5.24
#: The galaxy is looked for within this fraction of the side from the image centre.
NEAR_FRACTION = 0.25
#: Zooms outside this range are clipped (a bad size must not blow up or shrink the crop).
ZOOM_RANGE = (0.25, 4.0)
#: The geometry of the plain centre crop, flagged not found.
NO_GEOMETRY = np.array([0.0, 0.0, 1.0, 0.0], dtype=np.float32)
_ETA = 0.2


@dataclass(frozen=True)
class Placement:
    """Where the galaxy of a cutout is and how big.

    Attributes
    ----------
    x, y : float
        Centroid in pixels (0-based pixel centres); the image centre when not found.
    r90 : float
        Petrosian R90 (or flux radius at 90%) in pixels; NaN when not found.
    method : str
        ``"petrosian"``, ``"flux_radius"`` or ``"none"``.
    side : int
        Side of the (square) image measured.
    side_in_r90 : float
        The convention: the side of a GZ2 image in units of R90 as measured here.
    """

    x: float
    y: float
    r90: float
    method: str
    side: int
    side_in_r90: float = GZ2_SIDE_IN_R90

    @property
    def found(self) -> bool:
        return self.method != "none"

    @property
    def zoom(self) -> float:
        if not self.found:
            return 1.0
        lo, hi = ZOOM_RANGE
        return float(min(max(self.side / (self.side_in_r90 * self.r90), lo), hi))

    def geometry(self) -> np.ndarray:
        """``[dx, dy, zoom, found]`` float32 (see the module docstring)."""
        if not self.found:
            return NO_GEOMETRY.copy()
        c = (self.side - 1) / 2.0
        return np.array([(self.x - c) / self.side, (self.y - c) / self.side, self.zoom, 1.0], dtype=np.float32)


def _radii(rmax: float) -> np.ndarray:
    return np.geomspace(1.0, max(rmax, 2.0), 48)


def petrosian_r90(data: np.ndarray, x: float, y: float, rmax: float) -> float:
    """SDSS-style Petrosian R90 (pixels) of the source at ``(x, y)``; NaN when undefined.

    ``data`` is background-subtracted float32 with other sources removed.
    """
    import sep

    r = _radii(rmax / 1.25)
    xs, ys = np.full(len(r), x), np.full(len(r), y)
    flux, _, _ = sep.sum_circle(data, xs, ys, r, subpix=0)
    ann, _, _ = sep.sum_circann(data, xs, ys, 0.8 * r, 1.25 * r, subpix=0)
    mean_inside = flux / (math.pi * r**2)
    ann_sb = ann / (math.pi * (1.25**2 - 0.8**2) * r**2)
    with np.errstate(divide="ignore", invalid="ignore"):
        eta = np.where(mean_inside > 0, ann_sb / mean_inside, np.nan)
    below = np.flatnonzero((eta < _ETA) & (r > 1.5))
    if not len(below):
        return math.nan
    k = int(below[0])
    # Interpolate eta = 0.2 in log radius between the last point above and the first below.
    r_p = r[k] if k == 0 or not np.isfinite(eta[k - 1]) else float(np.exp(np.interp(
        _ETA, [eta[k], eta[k - 1]], [np.log(r[k]), np.log(r[k - 1])])))
    if 2 * r_p > rmax:
        return math.nan
    r_in = _radii(2 * r_p)
    growth, _, _ = sep.sum_circle(data, np.full(len(r_in), x), np.full(len(r_in), y), r_in, subpix=0)
    total = growth[-1]
    if not total > 0:
        return math.nan
    growth = np.maximum.accumulate(growth)  # noise can make the curve of growth dip
    j = int(np.searchsorted(growth, 0.9 * total))
    if j == 0:
        return float(r_in[0])
    return float(np.exp(np.interp(0.9 * total, [growth[j - 1], growth[j]], [np.log(r_in[j - 1]), np.log(r_in[j])])))


def measure(image: np.ndarray, side_in_r90: float = GZ2_SIDE_IN_R90) -> Placement:
    """Find the galaxy of a square linear image and measure its centre and R90 (the module's rule).

    Parameters
    ----------
    image : ndarray, shape (S, S)
        Linear intensity (sky-subtracted or not: the background is estimated here).
    side_in_r90 : float
        The convention the zoom brings the image to (see :data:`COMPOSITE_SIDE_IN_R90`).

    Returns
    -------
    Placement
    """
    import sep

    data = np.ascontiguousarray(image, dtype=np.float32)
    side = data.shape[0]
    centre = (side - 1) / 2.0
    none = Placement(centre, centre, math.nan, "none", side, side_in_r90)
    try:
        bkg = sep.Background(data, bw=side, bh=data.shape[1], fw=1, fh=1)
        data = data - np.float32(bkg.globalback)
        rms = float(bkg.globalrms)
        if not rms > 0:
            return none
        # The pixel stack is allocated on every call: sized to the image, not sep's 300,000 default
        # (which cost more than the extraction itself on small cutouts).
        sep.set_extract_pixstack(max(data.size, 1024))
        objects, seg = sep.extract(data, 1.5, err=rms, minarea=5, deblend_cont=0.005, segmentation_map=True)
    except Exception:  # noqa: BLE001 - sep raises plain Exceptions (e.g. too many objects): fall back
        return none
    if len(objects) == 0:
        return none
    dist = np.hypot(objects["x"] - centre, objects["y"] - centre)
    near = np.flatnonzero(dist <= NEAR_FRACTION * side)
    if not len(near):
        return none
    k = int(near[np.argmax(objects["flux"][near])])
    x, y = float(objects["x"][k]), float(objects["y"][k])
    clean = np.where((seg == 0) | (seg == k + 1), data, np.float32(0.0))
    rmax = min(x, y, side - 1 - x, side - 1 - y, side / 2.0)
    rmax = max(rmax, 0.35 * side)  # apertures may leave the image a little: outside reads 0
    r90 = petrosian_r90(clean, x, y, rmax)
    if math.isfinite(r90) and r90 > 0:
        return Placement(x, y, r90, "petrosian", side, side_in_r90)
    try:  # sep.flux_radius refuses subpix=0 (exact apertures): sub-sampled 5 x 5
        r90, _ = sep.flux_radius(clean, np.array([x]), np.array([y]), np.array([rmax]), 0.9, subpix=5)
    except Exception:  # noqa: BLE001 - sep raises plain Exceptions: fall back to the centre crop
        return none
    r90 = float(np.asarray(r90).ravel()[0])
    if math.isfinite(r90) and r90 > 0:
        return Placement(x, y, r90, "flux_radius", side, side_in_r90)
    return none


def measure_rgb(image: np.ndarray) -> Placement:
    """:func:`measure` on a uint8 ``(S, S, 3)`` colour composite (the sum of its channels)."""
    return measure(np.asarray(image, dtype=np.float32).sum(axis=-1), COMPOSITE_SIDE_IN_R90)
