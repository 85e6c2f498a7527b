"""Synthetic Galaxy Zoo 2: SDSS-like galaxy images with crowd-simulated labels.

The Kaggle images cannot be redistributed, so the demo and the test suite run on a
mock dataset in the same layout.  Galaxies are drawn from a parametric model
(:mod:`~gzmorph.mock.params`), rendered as gri colour composites
(:mod:`~gzmorph.mock.render`) and labelled by simulated volunteers walking the
decision tree (:mod:`~gzmorph.mock.labels`); :func:`generate` writes it all to disk
(:mod:`~gzmorph.mock.dataset`).

Examples
--------
>>> from gzmorph.mock import generate
>>> generate("mock-gz2", n=2000, n_test=200, seed=0)  # doctest: +SKIP
"""

from gzmorph.mock.dataset import generate, galaxy_rng
from gzmorph.mock.labels import answer_probabilities, crowd_labels, visibility
from gzmorph.mock.params import GalaxyParams, sample_params
from gzmorph.mock.render import render_galaxy

__all__ = ["generate", "render_galaxy", "sample_params", "crowd_labels", "GalaxyParams", "answer_probabilities",
           "visibility", "galaxy_rng"]
