"""The same mock galaxies as seen by other surveys: pixel scale, PSF, depth, bands and stretch.

:func:`~gzmorph.mock.render.render_galaxy` draws SDSS-like GZ2 images.  A
:class:`SurveyView` renders the *same scene* (the same galaxy, field stars and
defects: the same parameters and random draws) as a colour JPEG cutout of another
survey, for measuring how far a model carries across surveys
(``benchmarks/cross_survey.py``):

* **pixel scale**: the mock field is :data:`FIELD_ARCSEC` wide; the SDSS-like image of
  ``size`` pixels has ``FIELD_ARCSEC / size`` arcsec per pixel, a view has its
  survey's ``pixscale``, and a cutout of ``side`` pixels covers the central
  ``side * pixscale`` arcsec (a fixed pixel count, as cutout services give: a
  galaxy looks larger at a finer scale);
* **PSF**: the galaxy's seeing times ``psf_factor``;
* **depth**: the sky noise (per unit area) times ``noise_factor``; finer pixels get
  more noise per pixel, as the canvas does;
* **bands**: ``red_band_k > 0`` replaces the red channel (i) by a redder band (z)
  extrapolated per pixel from the i/r colour, ``z = i (i / r)**k``;
* **stretch**: the asinh composite's linear range ``beta`` and gain ``soft``, and the sky
  pedestal left by the survey's background subtraction.

The numbers of :data:`SURVEY_VIEWS` differ from the SDSS-like look in the directions the
real surveys do (DECaLS/Legacy: 0.262"/px, similar seeing, deeper, g r z; HSC:
0.168"/px, about half the seeing, much deeper); the depths, colours and stretches are
illustrative, not fitted to real cutouts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gzmorph.data.pixscale import GZ2_FIELD
from gzmorph.mock.canvas import Canvas
from gzmorph.mock.params import GalaxyParams
from gzmorph.mock.render import add_defects, draw_scene

__all__ = ["SurveyView", "SURVEY_VIEWS", "FIELD_ARCSEC", "SDSS_PIXSCALE", "render_view"]

#: SDSS's pixel scale, arcsec per pixel.
SDSS_PIXSCALE = 0.396
#: Width of the mock field in arcsec: the field a run records by default (the GZ2 images'
#: median scale at 424 px, :data:`gzmorph.data.pixscale.GZ2_FIELD`, 38.2"), so a run trained
#: on the SDSS-like mock images needs no pixel scale of its own; a 96-px SDSS-like image
#: is then at 0.3975"/px, SDSS's scale.
FIELD_ARCSEC = GZ2_FIELD


@dataclass(frozen=True)
class SurveyView:
    """How a survey sees the mock field (see the module docstring)."""

    pixscale: float
    psf_factor: float = 1.0
    noise_factor: float = 1.0
    red_band_k: float = 0.0
    beta: float = 10.0
    soft: float = 0.235
    pedestal: tuple[float, float, float] | None = None  # None: the SDSS-like random reddish pedestal

    def __post_init__(self) -> None:
        for name in ("pixscale", "psf_factor", "noise_factor", "beta", "soft"):
            if not getattr(self, name) > 0:
                raise ValueError(f"SurveyView.{name} must be positive, got {getattr(self, name)}")

    def canvas_side(self) -> int:
        """Pixels across the whole mock field at this survey's scale."""
        return int(round(FIELD_ARCSEC / self.pixscale))


SURVEY_VIEWS: dict[str, SurveyView] = {
    "sdss": SurveyView(pixscale=SDSS_PIXSCALE),
    "legacy": SurveyView(pixscale=0.262, psf_factor=1.0, noise_factor=0.35, red_band_k=0.7, beta=6.0, soft=0.30,
                         pedestal=(0.0, 0.0, 0.0)),
    "hsc": SurveyView(pixscale=0.168, psf_factor=0.55, noise_factor=0.2, beta=4.0, soft=0.26,
                      pedestal=(0.01, 0.01, 0.01)),
}


def _redder(bands: np.ndarray, k: float) -> None:
    """Replace plane 2 (i) by ``i (i / r)**k`` in place: a redder band from the local i/r colour."""
    r, i = bands[1], bands[2]
    ratio = np.clip(i / np.maximum(r, 1e-3), 0.25, 4.0)  # faint/negative pixels: bounded colours
    bands[2] = i * ratio ** np.float32(k)


def render_view(params: GalaxyParams, rng: np.random.Generator, view: SurveyView, side: int) -> np.ndarray:
    """The galaxy of ``params`` (and its field) as a ``side``-pixel cutout of survey ``view``.

    Parameters
    ----------
    params : GalaxyParams
        The galaxy (the same as for its SDSS-like image).
    rng : numpy.random.Generator
        Its render stream (:func:`gzmorph.mock.dataset.galaxy_rng` ``"render"``): the same
        stream gives the same field sources and structure as its SDSS-like image.
    view : SurveyView
    side : int
        Cutout side in pixels, centred on the field, at most the whole field.

    Returns
    -------
    numpy.ndarray
        ``uint8 (side, side, 3)`` RGB.
    """
    full = view.canvas_side()
    if not 16 <= side <= full:
        raise ValueError(f"a cutout of {side} px does not fit the mock field ({full} px at {view.pixscale}\"/px)")
    p = params
    cv = Canvas(full)
    draw_scene(cv, p, rng)
    cv.blur(p.psf_fwhm * view.psf_factor)
    if view.red_band_k:
        _redder(cv.bands, view.red_band_k)
    img = cv.observe(rng, p.sky_noise * view.noise_factor)
    pedestal = add_defects(img, p, rng, cv.scale)
    if view.pedestal is not None:
        pedestal = np.asarray(view.pedestal, dtype=np.float32)
    lo = (full - side) // 2
    img = np.ascontiguousarray(img[:, lo : lo + side, lo : lo + side])
    return Canvas.stretch(img, pedestal, beta=view.beta, soft=view.soft)
