"""Preprocessing and augmentation as one affine warp per crop, on whole batches.

Dieleman, Willett & Dambre (2015) crop the central 207 of 424 pixels, downscale 3x
to 69 x 69 and perturb every training example afresh each time it is drawn: a
rotation uniform in [0, 360) degrees, a shift uniform in +-4 (original) pixels in x
and y, a log-uniform scale in [1/1.3, 1.3], a horizontal flip with probability 0.5
and a brightness change along the first principal component of the pixels' RGB
colours.  Here crop, rescale and perturbation are composed into one affine map per
crop and applied with :func:`torch.nn.functional.grid_sample` (bilinear) on the
batch's device, so the same code runs on a GPU or a CPU, for any source image size
(every length is a fraction of the image side).

Geometry, in the normalised coordinates of ``affine_grid`` (the image spans
[-1, 1]; ``u`` is an output position, ``x`` the sampled input position)::

    crop 0:  x = 2 * shift + (crop_fraction / scale) * R(angle) @ Flip @ u
    crop 1:  the same map applied to R(second_crop_angle) @ u

``R(90)`` reproduces ``torch.rot90(crop, 1, dims=(-2, -1))`` exactly (the 69-pixel
output grid is symmetric about the centre), ``scale > 1`` enlarges the galaxy, and
``Flip`` mirrors left-right before the rotation.  Crop 1 is crop 0 turned by 45
degrees in the output frame, as in the paper's code.

Brightness: ``crops += alpha * eigenvalue * eigenvector`` with ``alpha ~ N(0,
brightness_std)``, the same shift for both crops of an example, then clipped to
[0, 1].  Eigenvalue and eigenvector come from :func:`color_pca` on pixel values in
[0, 1]; this is Krizhevsky et al.'s (2012) ``alpha * lambda * p`` restricted to the
first component and is the scaling of the paper's code, whose hard-coded weights
(``[-0.0148, -0.0125, -0.0104]``, norm 0.022) match ``eigenvalue * eigenvector`` of
the Kaggle images (norm 0.018 over 200 whole 424-px training images).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np
import torch
import torch.nn.functional as F

from gzmorph.config import Config

__all__ = [
    "AugmentConfig",
    "Transforms",
    "color_pca",
    "sample_transforms",
    "fixed_transforms",
    "tta_transforms",
    "render_crops",
    "place",
    "TTA_SETS",
    "SURVEY_STRENGTHS",
]


#: The survey-robust augmentation strengths of :class:`AugmentConfig` and their largest
#: accepted values (beyond them an image is no longer a galaxy image: a 12-px PSF on a
#: 48-px crop, noise above the white level, 5x down-sampling, e^1 colour scales).
SURVEY_STRENGTHS = {"psf_blur": 12.0, "noise": 0.5, "degrade": 4.0, "color_jitter": 1.0, "stretch_jitter": 2.0}


@dataclass
class AugmentConfig(Config):
    """Crop geometry and the random perturbation of training examples.

    Parameters
    ----------
    crop_fraction : float
        Side of the (unperturbed) crop as a fraction of the image side (207/424).
    out_size : int
        Side of each rendered crop in pixels (69).
    rotate : bool
        Draw the rotation uniformly in [0, 360) degrees (else 0).
    shift : float
        Maximum shift in x and y, as a fraction of the image side (4/424).
    scale_max : float
        Scales are log-uniform in ``[1/scale_max, scale_max]`` (1.3); 1 disables.
    flip : bool
        Horizontal flip with probability 0.5.
    brightness_std : float
        Standard deviation of the factor ``alpha`` of the colour-PCA brightness shift.
    second_crop_angle : float
        Extra rotation (degrees) of crop 1 relative to crop 0.
    antialias : bool
        Box-downscale a source whose pixels are much smaller than the crop's pixels
        (e.g. 424-px originals) before sampling, so predictions on original images
        match training on the 141-px cache; sources at the working size are sampled
        directly.
    recentre : bool
        Centre every crop on the galaxy found by source extraction and rescale it to
        the GZ2 convention (:mod:`gzmorph.data.recentre`, the paper's section 7.3);
        composed into the same warp by :func:`place`.  A run trained with it records
        it, and prediction with that run measures and applies it automatically.
    psf_blur : float
        Survey-robust augmentation (:mod:`gzmorph.nn.survey_augment`, applied to the
        training crops after the warp; 0, the default, is off): largest extra Gaussian PSF
        FWHM in crop pixels.
    noise : float
        Survey-robust: largest added sky-noise standard deviation in display units ([0, 1]
        pixel values); 0: off.
    degrade : float
        Survey-robust: largest extra down-up sampling factor minus 1 (1: down to half the
        resolution); 0: off.
    color_jitter : float
        Survey-robust: standard deviation of the log flux scale of each band; 0: off.
    stretch_jitter : float
        Survey-robust: half width of the log range of the asinh softening and of the flux
        gain of the re-stretch; 0: off.
    survey_prob : float
        Fraction of the training examples that get the survey-robust perturbation (1: every
        one); the others reach the network as rendered, so the training survey's own images
        are still learnt exactly.
    """

    crop_fraction: float = 207 / 424
    out_size: int = 69
    rotate: bool = True
    shift: float = 4 / 424
    scale_max: float = 1.3
    flip: bool = True
    brightness_std: float = 0.5
    second_crop_angle: float = 45.0
    antialias: bool = True
    recentre: bool = False
    psf_blur: float = 0.0
    noise: float = 0.0
    degrade: float = 0.0
    color_jitter: float = 0.0
    stretch_jitter: float = 0.0
    survey_prob: float = 1.0

    def __post_init__(self) -> None:
        if not (isinstance(self.survey_prob, (int, float)) and 0 <= self.survey_prob <= 1):
            raise ValueError(f"survey_prob must be in [0, 1] (a fraction of the examples), got {self.survey_prob!r}")
        for name, top in SURVEY_STRENGTHS.items():
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and 0 <= value <= top):
                raise ValueError(f"{name} must be in [0, {top}] (0: off), got {value!r}")
        if not 0 < self.crop_fraction <= 1:
            raise ValueError(f"crop_fraction must be in (0, 1], got {self.crop_fraction}")
        if int(self.out_size) != self.out_size or self.out_size < 1:
            raise ValueError(f"out_size must be a positive integer, got {self.out_size}")
        self.out_size = int(self.out_size)
        if not 0 <= self.shift < 0.5:
            raise ValueError(f"shift must be in [0, 0.5) (a fraction of the image side), got {self.shift}")
        if not (math.isfinite(self.scale_max) and self.scale_max >= 1):
            raise ValueError(f"scale_max must be >= 1, got {self.scale_max}")
        if not (math.isfinite(self.brightness_std) and self.brightness_std >= 0):
            raise ValueError(f"brightness_std must be >= 0, got {self.brightness_std}")
        if not math.isfinite(self.second_crop_angle):
            raise ValueError(f"second_crop_angle must be finite, got {self.second_crop_angle}")


@dataclass
class Transforms:
    """One affine perturbation per example (all tensors have length ``B``).

    Attributes
    ----------
    angle : Tensor (B,)
        Rotation in degrees.
    shift : Tensor (B, 2)
        Shift in x and y as a fraction of the image side.
    scale : Tensor (B,)
        Scale factor (> 1 enlarges the galaxy).
    flip : Tensor (B,) bool
        Horizontal flip.
    brightness : Tensor (B,)
        Factor ``alpha`` of the colour-PCA brightness shift.
    """

    angle: torch.Tensor
    shift: torch.Tensor
    scale: torch.Tensor
    flip: torch.Tensor
    brightness: torch.Tensor

    def __post_init__(self) -> None:
        n = self.angle.shape[0]
        for name in ("scale", "flip", "brightness"):
            if getattr(self, name).shape != (n,):
                raise ValueError(f"Transforms.{name} must have shape ({n},), got {tuple(getattr(self, name).shape)}")
        if self.shift.shape != (n, 2):
            raise ValueError(f"Transforms.shift must have shape ({n}, 2), got {tuple(self.shift.shape)}")

    def __len__(self) -> int:
        return self.angle.shape[0]

    def __getitem__(self, idx) -> "Transforms":
        """Transforms of a subset: a slice, an index tensor/list or one position (kept 1-d)."""
        if isinstance(idx, int):
            idx = [idx]
        return Transforms(*(getattr(self, f.name)[idx] for f in fields(self)))

    def to(self, device: torch.device | str) -> "Transforms":
        """Copy to ``device``; host-to-GPU copies do not block (safe: the source is not reused)."""
        non_blocking = torch.device(device).type == "cuda"
        return Transforms(*(getattr(self, f.name).to(device, non_blocking=non_blocking) for f in fields(self)))


def _image_sample(images: np.ndarray, max_pixels: int, rng: np.random.Generator) -> np.ndarray:
    """Up to ``max_pixels`` random RGB pixels from ``(N, H, W, 3)``, reading few whole images.

    Whole images are read (sorted indices) because random pixel access into a
    memory-mapped cache of a large catalog would touch one page per pixel.
    """
    n, h, w, _ = images.shape
    # Four times more images than strictly needed, so the pixels come from many galaxies.
    n_img = min(n, max(1, 4 * math.ceil(max_pixels / (h * w))))
    idx = np.sort(rng.choice(n, size=n_img, replace=False))
    pixels = np.asarray(images[idx]).reshape(-1, 3)  # (n_img * H * W, 3)
    if len(pixels) > max_pixels:
        pixels = pixels[rng.choice(len(pixels), size=max_pixels, replace=False)]
    return pixels


def color_pca(images: np.ndarray | torch.Tensor, max_pixels: int = 1_000_000, seed: int = 0) -> dict:
    """First principal component of the RGB colours of training pixels.

    Parameters
    ----------
    images : uint8 array or tensor, shape (N, H, W, 3)
        Training images (a memory-mapped array is fine: only a sample is read).
    max_pixels : int
        Number of pixels sampled for the covariance.
    seed : int
        Seed of the pixel sample.

    Returns
    -------
    dict
        ``{"eigenvector": [r, g, b], "eigenvalue": float}`` of the covariance of pixel
        values in [0, 1]; the eigenvector has unit norm and a positive sum (brighter),
        so the result is deterministic.  Store it with the run: :func:`render_crops`
        shifts crops by ``alpha * eigenvalue * eigenvector``.
    """
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu().numpy()
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"color_pca needs uint8 images of shape (N, H, W, 3), got {images.dtype} {images.shape}")
    if len(images) == 0 or max_pixels < 2:
        raise ValueError("color_pca needs at least one image and max_pixels >= 2")
    pixels = _image_sample(images, max_pixels, np.random.default_rng(seed)).astype(np.float64) / 255.0
    eigval, eigvec = np.linalg.eigh(np.cov(pixels, rowvar=False))  # ascending eigenvalues
    vec = eigvec[:, -1]
    vec = vec if vec.sum() >= 0 else -vec
    return {"eigenvector": [float(v) for v in vec], "eigenvalue": float(max(eigval[-1], 0.0))}


def sample_transforms(n: int, cfg: AugmentConfig, generator: torch.Generator | None = None) -> Transforms:
    """Draw ``n`` random perturbations on the CPU (reproducible from ``generator``).

    Every parameter is drawn even when disabled in ``cfg`` (and then neutralised), so
    switching one perturbation off does not change the draws of the others.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    g = generator
    angle = torch.rand(n, generator=g, dtype=torch.float64) * 360.0
    shift = (torch.rand(n, 2, generator=g, dtype=torch.float64) * 2 - 1) * cfg.shift
    log_s = math.log(cfg.scale_max)
    scale = torch.exp((torch.rand(n, generator=g, dtype=torch.float64) * 2 - 1) * log_s)
    flip = torch.rand(n, generator=g) < 0.5
    brightness = torch.randn(n, generator=g, dtype=torch.float64) * cfg.brightness_std
    if not cfg.rotate:
        angle.zero_()
    if not cfg.flip:
        flip.zero_()
    return Transforms(angle=angle.float(), shift=shift.float(), scale=scale.float(), flip=flip,
                      brightness=brightness.float())


def fixed_transforms(n: int, angle: float = 0.0, scale: float = 1.0, flip: bool = False) -> Transforms:
    """The same deterministic transform for ``n`` examples (validation, prediction, TTA)."""
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale}")
    return Transforms(
        angle=torch.full((n,), float(angle)),
        shift=torch.zeros(n, 2),
        scale=torch.full((n,), float(scale)),
        flip=torch.full((n,), bool(flip)),
        brightness=torch.zeros(n),
    )


def place(t: Transforms, geometry: torch.Tensor | np.ndarray | None) -> Transforms:
    """Compose each image's recentring geometry into its transform (no extra resampling).

    Parameters
    ----------
    t : Transforms
        The perturbation (training) or fixed transform (validation, TTA) of each image,
        in the frame of a GZ2-convention image centred on the galaxy.
    geometry : (B, 4) array or tensor, or None
        ``[dx, dy, zoom, found]`` of :mod:`gzmorph.data.recentre`: the galaxy's offset
        from the image centre (fraction of the side) and the zoom that brings the
        image to the GZ2 convention; ``None`` returns ``t`` unchanged.

    Returns
    -------
    Transforms
        ``shift = offset + shift / zoom`` and ``scale = scale * zoom``: with the map
        ``x = 2 shift + (crop_fraction / scale) R F u`` of :func:`render_crops`, the
        crop is the perturbed crop of the virtual recentred, rescaled image (whose side
        is ``1 / zoom`` of the source's), sampled from the source in one warp.
    """
    if geometry is None:
        return t
    g = torch.as_tensor(np.asarray(geometry) if not isinstance(geometry, torch.Tensor) else geometry)
    g = g.to(device=t.scale.device, dtype=torch.float32)
    if g.shape != (len(t), 4):
        raise ValueError(f"geometry must have shape ({len(t)}, 4), got {tuple(g.shape)}")
    zoom = g[:, 2]
    return Transforms(angle=t.angle, shift=g[:, :2] + t.shift / zoom[:, None], scale=t.scale * zoom,
                      flip=t.flip, brightness=t.brightness)


#: Test-time augmentation sets, as ``(angle, scale, flip)`` tuples.
TTA_SETS: dict[str, list[tuple[float, float, bool]]] = {
    "none": [(0.0, 1.0, False)],
    "paper": [(float(a), s, f) for a in range(0, 360, 36) for s in (1 / 1.2, 1.0, 1.2) for f in (False, True)],
    "rot": [(float(a), 1.0, False) for a in (0, 9, 18, 27, 36)],
}


def tta_transforms(name: str) -> list[tuple[float, float, bool]]:
    """Test-time augmentation set ``name`` of the paper's network, as a list of ``(angle, scale, flip)``.

    Prediction uses each run's set matched to its symmetry period
    (:func:`gzmorph.nn.tta.run_tta`); for the paper's network it is this one.

    ``"none"``
        The identity.
    ``"paper"``
        The paper's 60: rotations 0, 36, ..., 324 degrees x scales 1/1.2, 1, 1.2 x
        flip or not.
    ``"rot"``
        Rotations 0, 9, 18, 27 and 36 degrees at scale 1, no flip (5 passes, 12x
        cheaper than ``"paper"``).  The 16 viewpoints already contain every 90-degree
        rotation and the flips of both crops, and crop 1 adds 45 degrees, so a
        rotation by ``a`` yields the same *set* of viewpoints as ``a mod 45``, and a
        flip the same set as no flip (flip is applied in the output frame).  The
        paper's 10 angles fall on exactly these 5 offsets mod 45, so at scale 1 these
        are the distinct viewpoint sets of the paper's 20; what the other 15 add is
        the viewpoints' order (it matters to a concatenating network, not to
        ``pooled``) and interpolation noise.
    """
    if name not in TTA_SETS:
        raise ValueError(f"unknown TTA set {name!r}; choose one of {sorted(TTA_SETS)}")
    return list(TTA_SETS[name])


def _as_float_nchw(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``(B, H, W, 3)`` or float ``(B, 3, H, W)`` in [0, 1] -> float32 ``(B, 3, H, W)``."""
    if images.dim() != 4:
        raise ValueError(f"images must be a 4-d batch, got shape {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        if images.shape[-1] != 3:
            raise ValueError(f"uint8 images must be (B, H, W, 3), got shape {tuple(images.shape)}")
        # permute is a view; the float copy keeps the NHWC strides, which grid_sample accepts.
        x = images.permute(0, 3, 1, 2).float().div_(255.0)  # (B, 3, H, W)
    elif images.is_floating_point():
        if images.shape[1] != 3:
            raise ValueError(f"float images must be (B, 3, H, W), got shape {tuple(images.shape)}")
        x = images.float()
    else:
        raise ValueError(f"images must be uint8 (B, H, W, 3) or float (B, 3, H, W), got {images.dtype}")
    if x.shape[-1] != x.shape[-2]:
        raise ValueError(f"images must be square, got {x.shape[-2]} x {x.shape[-1]} pixels")
    return x


def _affine(t: Transforms, cfg: AugmentConfig, device: torch.device) -> torch.Tensor:
    """``(2B, 2, 3)`` affine matrices of crop 0 (first B rows) and crop 1 (last B).

    Only tensors of ``t`` and Python scalars are combined: creating a constant tensor
    here would be a blocking host-to-device copy on CUDA every batch.
    """
    a = torch.deg2rad(t.angle.double())
    k = cfg.crop_fraction / t.scale.double()
    mirror = torch.where(t.flip, -1.0, 1.0).double()
    # k * R(angle) @ diag(mirror, 1), column by column: (B, 2) each.
    col0 = torch.stack([torch.cos(a), torch.sin(a)], -1) * (k * mirror)[:, None]
    col1 = torch.stack([-torch.sin(a), torch.cos(a)], -1) * k[:, None]
    c2, s2 = math.cos(math.radians(cfg.second_crop_angle)), math.sin(math.radians(cfg.second_crop_angle))
    # Crop 1: the crop-0 matrix times R(second_crop_angle), i.e. turned in the output frame.
    col0_1, col1_1 = col0 * c2 + col1 * s2, col1 * c2 - col0 * s2
    offset = 2.0 * t.shift.double()  # (B, 2): fraction of side -> [-1, 1] units
    theta = torch.stack([torch.stack([col0, col1, offset], -1),
                         torch.stack([col0_1, col1_1, offset], -1)])  # (2, B, 2, 3)
    return theta.reshape(-1, 2, 3).to(device=device, dtype=torch.float32)  # (2B, 2, 3)


def _prefilter(x: torch.Tensor, cfg: AugmentConfig) -> torch.Tensor:
    """Box-downscale sources much finer than the crop's pixel grid (see ``antialias``)."""
    side = x.shape[-1]
    working = round(cfg.out_size / cfg.crop_fraction)  # source side sampled at 1 px per output px
    if not cfg.antialias or side <= 1.5 * working:
        return x
    return F.interpolate(x, size=(working, working), mode="area")


def render_crops(images: torch.Tensor, t: Transforms, cfg: AugmentConfig, pca: dict | None = None,
                 crops: int = 2) -> torch.Tensor:
    """Render the two crops of every image of a batch on the batch's device.

    Parameters
    ----------
    images : Tensor
        uint8 ``(B, H, W, 3)`` or float ``(B, 3, H, W)`` in [0, 1]; square, any size,
        any device.
    t : Transforms
        One transform per image (moved to the images' device here).
    cfg : AugmentConfig
        Crop geometry (``crop_fraction``, ``out_size``, ``second_crop_angle``).
    pca : dict or None
        Output of :func:`color_pca`; ``None`` or empty disables the brightness shift.
    crops : {2, 1}
        Render both crops, or crop 0 only (for a network that reads only crop 0:
        prediction does not render what it throws away).

    Returns
    -------
    Tensor, float32, shape (B, crops, 3, out_size, out_size)
        Crop 0 with transform ``t``, crop 1 the same turned a further
        ``second_crop_angle`` degrees; pixels in [0, 1].  Outside the image reads 0
        (dark sky).
    """
    x = _as_float_nchw(images)
    if len(t) != x.shape[0]:
        raise ValueError(f"{len(t)} transforms for {x.shape[0]} images")
    b, n = x.shape[0], cfg.out_size
    x = _prefilter(x, cfg)
    if crops not in (1, 2):
        raise ValueError(f"crops must be 1 or 2, got {crops}")
    c = crops
    theta = _affine(t, cfg, x.device)[: c * b]  # crop 0's rows come first
    grid = F.affine_grid(theta, [c * b, 3, n, n], align_corners=False)  # (cB, n, n, 2)
    # Both crops in one call without copying the images: stack each image's grids
    # vertically, (c, B, n, n, 2) -> (B, c*n, n, 2).
    grid = grid.view(c, b, n, n, 2).transpose(0, 1).reshape(b, c * n, n, 2)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)  # (B, 3, cn, n)
    crops = out.view(b, 3, c, n, n).transpose(1, 2).contiguous()  # (B, c, 3, n, n)
    if pca:
        lam = float(pca["eigenvalue"])
        alpha = t.brightness.to(crops.device, torch.float32)
        # Python scalars, not a (3,) tensor: no blocking host-to-device copy per batch.
        delta = torch.stack([alpha * (lam * float(v)) for v in pca["eigenvector"]], -1)  # (B, 3)
        crops = (crops + delta[:, None, :, None, None]).clamp_(0.0, 1.0)
    return crops
