"""Ensembles of trained runs: weighted mean, test-time averaging, fitted weights.

:class:`Ensemble` turns a batch of uint8 images into tree-consistent probabilities:
for every ``(angle, scale, flip)`` of the run's test-time set (:func:`gzmorph.nn.tta.run_tta`,
matched to each network's symmetry period) the crops
are rendered with fixed transforms and each run's outputs are averaged, then the runs
are combined with non-negative weights summing to one (uniform by default, or fitted
on labelled data by :func:`gzmorph.inference.predict.fit_weights` with
:func:`fit_simplex_weights`).  Averages of tree-consistent vectors with such weights
are again tree-consistent.

Image sizes: each run may have been trained at its own ``image_size``.  The caller
decodes at :attr:`Ensemble.image_size` (the largest); a run that expects another
size gets the batch resized on the device (bilinear with antialiasing), while a run
at the decode size sees exactly the pixels it was trained on.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from gzmorph.errors import ConfigError
from gzmorph.inference.precision import uses_bf16
from gzmorph.inference.timing import Stopwatch
from gzmorph.nn import augment as aug
from gzmorph.nn.fused import crops_used, fuse_for_prediction
from gzmorph.nn.model import to_channels_last
from gzmorph.nn.tta import run_tta
from gzmorph.models.resolve import resolve_model
from gzmorph.models.rundir import TrainedModel
from gzmorph.runtime import Runtime
from gzmorph.tree import Tree

__all__ = ["ModelSpec", "Ensemble", "fit_simplex_weights", "load_weights", "is_weights_file", "WEIGHTS_KIND"]

ModelSpec = str | Path | TrainedModel


class Ensemble:
    """Trained runs combined as a weighted mean, with test-time averaging.

    Parameters
    ----------
    runs : sequence of TrainedModel
        Loaded on ``runtime.device``; all must predict the same tree.  A run's network
        may be an onnxruntime one (:class:`gzmorph.models.onnx.OnnxNet`).
    runtime : Runtime
    tta : {"none", "rot", "paper"}
    weights : sequence of float, optional
        Non-negative, one per run; normalised to sum to one.  Default uniform.
    compile : bool
        ``torch.compile`` each network (about 10 s per run; on 2 CPU cores it doubled
        the paper network's forward rate, see BENCHMARKS.md).  Batches are padded to
        the first batch's size so the compiled graph is reused, never recompiled.
    recentre : bool or None
        Apply each image's recentring geometry to every run (True), to none (False),
        or to the runs trained with it (None: ``augment.recentre`` of each run).
    rescale : bool
        Every image comes with the geometry of its pixel scale
        (:mod:`gzmorph.data.pixscale`), applied to every run; the runs must then share
        one recorded field (:attr:`field`) and one recentring choice.
    precision : {"auto", "fast", "fp32", "bf16"} or None
        The rule of :mod:`gzmorph.inference.precision`, decided per run (``bf16``);
        None: ``runtime.autocast`` for every run.

    A ``p4m`` network predicts through its fused form (:mod:`gzmorph.nn.fused`, same
    outputs, a fraction of the work), and a network that reads one crop gets only that
    one rendered.  ``stopwatch`` accumulates the seconds of the crop warp and of the
    networks (:mod:`gzmorph.inference.timing`).
    """

    def __init__(self, runs: Sequence[TrainedModel], runtime: Runtime, tta: str = "none",
                 weights: Sequence[float] | None = None, compile: bool = False,
                 recentre: bool | None = None, rescale: bool = False, precision: str | None = None) -> None:
        if not runs:
            raise ConfigError("no model given")
        self.runs = list(runs)
        self.tree: Tree = self.runs[0].tree
        for run in self.runs[1:]:
            if run.tree.columns != self.tree.columns:
                raise ConfigError(f"run {run.run_dir} predicts tree {run.tree.name!r}, "
                                 f"run {self.runs[0].run_dir} tree {self.tree.name!r}: cannot average them")
        w = np.full(len(self.runs), 1.0) if weights is None else np.asarray(weights, dtype=np.float64)
        if w.shape != (len(self.runs),) or not np.all(np.isfinite(w)) or (w < 0).any() or w.sum() <= 0:
            raise ConfigError(f"weights must be {len(self.runs)} non-negative numbers with a positive sum, "
                             f"got {weights}")
        self.weights = w / w.sum()
        self.runtime = runtime
        self.tta = tta
        # Each run's own set, matched to its symmetry period (gzmorph.nn.tta): p4m turns
        # within 90 degrees, the paper's network within 45.
        self.run_transforms = [run_tta(tta, run) for run in self.runs]
        self.image_size = max(run.image_size for run in self.runs)
        if runtime.channels_last:
            for run in self.runs:
                to_channels_last(run.model)
        self.precision = precision
        self.bf16 = [runtime.autocast if precision is None else uses_bf16(run, precision, runtime)
                     for run in self.runs]
        self._compile = compile
        self.refresh()
        self.stopwatch = Stopwatch()
        self.recentred = [bool(run.augment.recentre) if recentre is None else recentre for run in self.runs]
        self.rescale = rescale
        if rescale:
            self._check_rescale()
        self._compiled = compile
        self._batch = 0  # padded batch size of the compiled graphs

    def _check_rescale(self) -> None:
        fields = sorted({round(run.config.field, 6) for run in self.runs})
        if len(fields) > 1:
            raise ConfigError("the runs were trained at different fields (" + ", ".join(f'{f:g}"' for f in fields)
                              + "): one pixel-scale warp cannot serve them all; predict them separately")
        if len(set(self.recentred)) > 1:
            raise ConfigError("with a pixel scale the runs must all recentre or none (give --recentre or "
                              "--no-recentre)")

    @property
    def field(self) -> float:
        """The field (arcsec) the runs were trained at (the first run's: with ``rescale`` they all share it)."""
        return float(self.runs[0].config.field)

    def refresh(self) -> None:
        """(Re)build the networks prediction calls from the runs' current weights.

        A ``p4m`` network gets its fused form, which copies the weights and batch-norm
        statistics: call this after changing them (``--adapt-bn`` does).
        """
        fused = [fuse_for_prediction(run.model, torch.bfloat16 if bf16 else torch.float32)
                 for run, bf16 in zip(self.runs, self.bf16)]
        base = [f if f is not None else run.model for f, run in zip(fused, self.runs)]
        self._autocast = [bf16 and f is None for bf16, f in zip(self.bf16, fused)]  # a fused net has its dtype
        self._crops = [crops_used(net) for net in base]
        # An onnxruntime network (gzmorph.models.onnx.OnnxNet) has nothing for torch to compile.
        self._nets = [torch.compile(net) if self._compile and not getattr(net, "is_onnx", False) else net
                      for net in base]

    @property
    def transforms(self) -> list[tuple[float, float, bool]]:
        """The first run's test-time transforms (each run's are :attr:`run_transforms`)."""
        return self.run_transforms[0]

    @property
    def recentre(self) -> bool:
        """True when some run uses the recentring geometry (it must be measured)."""
        return any(self.recentred)

    @classmethod
    def load(cls, models: ModelSpec | Sequence[ModelSpec], runtime: Runtime, tta: str = "none",
             weights: Sequence[float] | str | Path | None = None, which: str = "best",
             compile: bool = False, recentre: bool | None = None, rescale: bool = False,
             precision: str | None = None) -> "Ensemble":
        """Load models (or take loaded runs); ``weights`` may be a weights JSON file.

        A model is a run directory, a model package, an ``.onnx`` file or
        ``hf:ORG/NAME[@REVISION]`` (:func:`gzmorph.models.resolve.resolve_model`).
        """
        specs = [models] if isinstance(models, (str, Path, TrainedModel)) else list(models)
        runs = [resolve_model(m, which=which, device=runtime.device) for m in specs]
        for run in runs:
            run.model.to(runtime.device).eval()
        if isinstance(weights, (str, Path)):
            weights = load_weights(weights, [run.run_dir for run in runs])
        return cls(runs, runtime, tta, weights, compile, recentre, rescale, precision)

    @property
    def trained(self) -> np.ndarray:
        """``(n_answers,)`` bool: answers some run was trained on (the union over the runs)."""
        mask = np.zeros(self.tree.n_answers, dtype=bool)
        for run in self.runs:
            cols = self.tree.columns if run.label_columns is None else set(run.label_columns)
            mask |= np.isin(self.tree.columns, list(cols))
        return mask

    @property
    def untrained_columns(self) -> list[str]:
        """Answer columns no run of the ensemble ever saw a label for."""
        return [c for c, ok in zip(self.tree.columns, self.trained) if not ok]

    @property
    def names(self) -> list[str]:
        """Resolved run directories, identifying the runs in manifests and weight files."""
        return [str(Path(run.run_dir).resolve()) for run in self.runs]

    def _forward(self, k: int, images: torch.Tensor, geometry: np.ndarray | None = None,
                 features: bool = False) -> torch.Tensor:
        # images: uint8 (B, S, S, 3) or float (B, 3, s, s) in [0, 1], on the device
        run, net = self.runs[k], self._nets[k]
        if features:
            if not callable(getattr(run.model, "pooled_features", None)):
                raise ConfigError(f"{run.run_dir}: this network has no feature layer to embed "
                                  "(an ONNX file?); give a run directory or a model package")
            net = run.model.pooled_features
        geometry = geometry if self.recentred[k] or self.rescale else None
        n = images.shape[0]
        if self._compiled:
            self._batch = max(self._batch, n)
        if images.dtype == torch.uint8:  # once for all transforms, not once per transform
            images = images.permute(0, 3, 1, 2).float().div_(255.0)  # (B, S, S, 3) -> (B, 3, S, S)
        ncrops = crops_used(run.model) if features else self._crops[k]
        # Embeddings keep the runtime's precision (comparable across machines); predictions the run's rule.
        autocast = self.runtime.autocast if features else self._autocast[k]
        total: torch.Tensor | float = 0.0
        for angle, scale, flip in self.run_transforms[k]:
            with self.stopwatch("warp"):
                t = aug.place(aug.fixed_transforms(n, angle=angle, scale=scale, flip=flip), geometry)
                crops = aug.render_crops(images, t.to(images.device), run.augment, run.pca, crops=ncrops)
            if self._compiled and n < self._batch and not features:  # (B, ...) -> (batch, ...): one graph shape
                crops = torch.cat([crops, crops.new_zeros((self._batch - n, *crops.shape[1:]))])
            with self.stopwatch("forward"), torch.autocast(device_type=self.runtime.device.type,
                                                           dtype=torch.bfloat16, enabled=autocast):
                total += net(crops)[:n].float()
        return total / len(self.run_transforms[k])

    @torch.inference_mode()
    def predict_runs(self, images: np.ndarray, geometry: np.ndarray | None = None,
                     features: bool = False) -> np.ndarray:
        """Per-run TTA-averaged probabilities, ``(n_runs, B, n_answers)`` float32.

        ``features=True``: the networks' pooled features before the head instead
        (``pooled_features`` of :class:`~gzmorph.nn.model.GalaxyNet` and
        :class:`~gzmorph.nn.symmetric.SymmetricNet`), ``(n_runs, B, F)``; all runs must
        then have the same feature width.

        ``images`` are uint8 ``(B, S, S, 3)``; runs trained at another size than
        ``S`` get the batch resized on the device.  ``geometry`` ``(B, 4)``
        (:mod:`gzmorph.data.recentre`) is applied to the runs that recentre.
        """
        if geometry is None and (self.recentre or self.rescale):
            raise ValueError("this ensemble recentres or rescales: give the geometry of the images")
        x = torch.from_numpy(np.ascontiguousarray(images)).to(self.runtime.device, non_blocking=True)
        resized: dict[int, torch.Tensor] = {}
        out = []
        for k, run in enumerate(self.runs):
            source = x
            if run.image_size != x.shape[1]:
                if run.image_size not in resized:
                    chw = x.permute(0, 3, 1, 2).float() / 255.0  # (B, 3, S, S)
                    resized[run.image_size] = F.interpolate(chw, size=(run.image_size,) * 2, mode="bilinear",
                                                            antialias=True, align_corners=False).clamp_(0, 1)
                source = resized[run.image_size]
            out.append(self._forward(k, source, geometry, features))
        return torch.stack(out).cpu().numpy()

    @property
    def answer_weights(self) -> np.ndarray:
        """``(n_runs, n_answers)``: each answer's weights over the runs trained on it (summing to 1).

        An answer some run never saw a label for is averaged over the others only (its
        output there is an untrained guess); an answer no run trained on keeps the
        plain weights, and is then treated as for a single run (NaN in Parquet).
        """
        trained = np.stack([np.isin(self.tree.columns, self.tree.columns if run.label_columns is None
                                    else list(run.label_columns)) for run in self.runs])  # (R, A)
        w = self.weights[:, None] * trained
        total = w.sum(axis=0)
        return np.where(total > 0, w / np.where(total > 0, total, 1.0), self.weights[:, None])

    def combine(self, per_run: np.ndarray) -> np.ndarray:
        """The ensemble's ``(B, n_answers)`` float32 from per-run outputs ``(n_runs, B, n_answers)``."""
        return np.einsum("ra,rba->ba", self.answer_weights, per_run).astype(np.float32)

    def __call__(self, images: np.ndarray, geometry: np.ndarray | None = None) -> np.ndarray:
        """Ensemble probabilities ``(B, n_answers)`` float32 of uint8 images ``(B, S, S, 3)`` (unchecked)."""
        return self.combine(self.predict_runs(images, geometry))  # (R, B, A) -> (B, A)

    def predict_checked(self, images: np.ndarray, geometry: np.ndarray | None = None
                        ) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities ``(B, n_answers)`` and, per image, why they are not a result (``""``: they are).

        The one check of model outputs, for local and Ray prediction alike: a run
        whose output for an image is not finite, leaves [0, 1] or breaks the tree's
        sums (:meth:`Tree.output_problems`) makes that image an error row, never a
        result (and so never a "confident" answer).
        """
        per_run = self.predict_runs(images, geometry)  # (R, B, A)
        reasons = np.full(per_run.shape[1], "", dtype=object)
        for k in range(len(self.runs) - 1, -1, -1):  # the first run's reason is kept
            why = self.tree.output_problems(per_run[k])
            bad = why != ""
            prefix = f"{self.runs[k].run_dir}: " if len(self.runs) > 1 else ""
            reasons[bad] = [prefix + w for w in why[bad]]
        return self.combine(per_run), reasons


# ------------------------------------------------------------------ weights
def _project_simplex(v: np.ndarray) -> np.ndarray:
    # Euclidean projection onto {w >= 0, sum w = 1} (sort-based, Duchi et al. 2008).
    u = np.sort(v)[::-1]
    css = np.cumsum(u) - 1.0
    k = np.flatnonzero(u - css / np.arange(1, len(v) + 1) > 0)[-1]
    return np.maximum(v - css[k] / (k + 1), 0.0)


def fit_simplex_weights(per_run: np.ndarray, labels: np.ndarray, iterations: int = 20000) -> np.ndarray:
    """Weights on the simplex minimising the MSE of the weighted mean on the labelled entries.

    Parameters
    ----------
    per_run : array, shape (R, N, A)
        Each run's predictions.
    labels : array, shape (N, A)
        NaN where no label: those entries are left out.

    Returns
    -------
    array, shape (R,)
        Non-negative weights summing to one (accelerated projected gradient on the
        ``R x R`` normal equations, so the cost does not grow with N after setup).
    """
    per_run = np.asarray(per_run, dtype=np.float64)
    mask = ~np.isnan(labels)
    if not mask.any():
        raise ValueError("no labelled entries to fit ensemble weights on")
    x = per_run[:, mask].T  # (M, R): each labelled entry, one column per run
    y = np.asarray(labels, dtype=np.float64)[mask]
    gram, rhs = x.T @ x / len(y), x.T @ y / len(y)
    lipschitz = max(float(np.linalg.eigvalsh(gram).max()), 1e-12)
    w = z = np.full(len(gram), 1.0 / len(gram))
    t = 1.0
    for _ in range(iterations):
        w_next = _project_simplex(z - (gram @ z - rhs) / lipschitz)
        t_next = (1 + np.sqrt(1 + 4 * t * t)) / 2
        z = w_next + (t - 1) / t_next * (w_next - w)
        if np.abs(w_next - w).max() < 1e-13:
            w = w_next
            break
        w, t = w_next, t_next
    return w


#: The mark of a weights file written by ``fit_weights`` (the only kind ``--weights-out`` replaces).
WEIGHTS_KIND = "ensemble-weights"


def is_weights_file(path: str | Path) -> bool:
    """Whether ``path`` is an ensemble weights file gzmorph wrote (JSON carrying :data:`WEIGHTS_KIND`)."""
    try:
        return json.loads(Path(path).read_text()).get("gzmorph") == WEIGHTS_KIND
    except (OSError, ValueError, AttributeError):
        return False


def load_weights(path: str | Path, run_dirs: Sequence[str | Path]) -> list[float]:
    """Weights for ``run_dirs`` (in that order) from a file written by :func:`fit_weights`."""
    try:
        record = json.loads(Path(path).read_text())
        stored = dict(zip(record["runs"], record["weights"], strict=True))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: not an ensemble weights file ({exc})") from exc
    names = [str(Path(r).resolve()) for r in run_dirs]
    if sorted(names) != sorted(stored):
        raise ConfigError(f"{path}: weights were fitted for runs {sorted(stored)}, "
                         f"but the models given are {names}")
    return [float(stored[name]) for name in names]
