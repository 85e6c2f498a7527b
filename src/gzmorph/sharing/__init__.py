"""Sharing trained models: pickle-free packages, the Hugging Face Hub, ONNX.

* :mod:`gzmorph.sharing.package`: writes the model package (``model.safetensors``,
  ``config.json``, model card ``README.md``) of a run; the format and its reader are
  :mod:`gzmorph.models.package`.
* :mod:`gzmorph.sharing.card`: the model card.
* :mod:`gzmorph.sharing.hub`: uploads to the Hub (references and downloads:
  :mod:`gzmorph.models.hub`).
* :mod:`gzmorph.sharing.onnx_model`: ONNX export (running one: :mod:`gzmorph.models.onnx`).

These need the ``share`` extra (``pip install 'gzmorph[share]'``);
:mod:`gzmorph.models.extra` says so.
"""
