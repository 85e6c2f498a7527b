"""Sharing trained models: pickle-free packages, the Hugging Face Hub, ONNX.

* :mod:`gzmorph.sharing.package`: the model package (``model.safetensors``,
  ``config.json``, model card ``README.md``), written from a run and read back as a
  :class:`~gzmorph.training.rundir.TrainedModel`.
* :mod:`gzmorph.sharing.card`: the model card.
* :mod:`gzmorph.sharing.hub`: ``hf:ORG/NAME[@REVISION]`` references and uploads.
* :mod:`gzmorph.sharing.onnx_model`: ONNX export and the onnxruntime-backed network.
* :mod:`gzmorph.sharing.resolve`: the one function that turns any ``--model`` value
  into a loaded model.

Everything but :mod:`~gzmorph.sharing.resolve` needs the ``share`` extra
(``pip install 'gzmorph[share]'``); :mod:`~gzmorph.sharing.extra` says so.
"""
