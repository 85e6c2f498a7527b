"""gzmorph: Galaxy Zoo 2 morphology from galaxy images.

The pipeline, one module per step: :mod:`gzmorph.tree` (the decision tree),
:mod:`gzmorph.data.catalog` (catalogs), :mod:`gzmorph.data.images` / :mod:`gzmorph.data.cache`
(decoding), :mod:`gzmorph.nn.augment`, :mod:`gzmorph.nn.viewpoints`, :mod:`gzmorph.nn.model`,
:mod:`gzmorph.training.train`, :mod:`gzmorph.inference.predict`, :mod:`gzmorph.evaluation.evaluate`,
:mod:`gzmorph.evaluation.report`, :mod:`gzmorph.mock` and :mod:`gzmorph.cli`.
"""

__version__ = "0.1.0"
