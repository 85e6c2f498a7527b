"""gzmorph: Galaxy Zoo 2 morphology from galaxy images.

The pipeline, one module per step: :mod:`gzmorph.tree` (the decision tree),
:mod:`gzmorph.data` (catalogs), :mod:`gzmorph.images` / :mod:`gzmorph.cache`
(decoding), :mod:`gzmorph.augment`, :mod:`gzmorph.viewpoints`, :mod:`gzmorph.model`,
:mod:`gzmorph.train`, :mod:`gzmorph.predict`, :mod:`gzmorph.evaluate`,
:mod:`gzmorph.report`, :mod:`gzmorph.mock` and :mod:`gzmorph.cli`.
"""

__version__ = "0.1.0"
