"""Trained models: what one is, how it is stored, and how any reference to one is loaded.

The layer below :mod:`gzmorph.training` (which writes runs) and :mod:`gzmorph.sharing`
(which exports and publishes them); both, and prediction, read models through it.

* :mod:`~gzmorph.models.trainconfig`: :class:`TrainConfig`, the configuration a run stores.
* :mod:`~gzmorph.models.rundir`: the run-directory format (``config.json``, checkpoints,
  ``skipped.csv``) and :class:`TrainedModel`.
* :mod:`~gzmorph.models.metrics_log`: the run's ``metrics.jsonl``, written and read in one place.
* :mod:`~gzmorph.models.package`: the model package format and its reader.
* :mod:`~gzmorph.models.onnx`: running an exported ``.onnx`` file (onnxruntime).
* :mod:`~gzmorph.models.hub`: ``hf:ORG/NAME[@REVISION]`` references and downloads.
* :mod:`~gzmorph.models.resolve`: :func:`resolve_model`, the one resolution of a ``--model`` value.
* :mod:`~gzmorph.models.extra`: the ``share`` extra's packages, imported on use.
"""
