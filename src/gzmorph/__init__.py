"""gzmorph: Galaxy Zoo 2 morphology from galaxy images.

The pipeline, one subpackage per stage: :mod:`gzmorph.tree` (the decision tree),
:mod:`gzmorph.data` (catalogs, decoding, caches, and :mod:`gzmorph.data.source`, the one
place that knows where pixels come from), :mod:`gzmorph.nn` (augmentation, viewpoints,
the network), :mod:`gzmorph.training`, :mod:`gzmorph.inference`, :mod:`gzmorph.evaluation`,
:mod:`gzmorph.mock` and :mod:`gzmorph.cli`.
"""

__version__ = "0.1.0"
