"""Survey-robust augmentation: other PSFs, depths, resolutions, band responses and stretches.

A network trained on one survey's images meets other surveys' galaxies with another
seeing, depth, pixel scale, band set and colour stretch.  These operations perturb
the training crops (after the warp of :func:`gzmorph.nn.augment.render_crops`) in
the same ways, on whole batches on the training device, with one draw of parameters
per example shared by its two crops.  Each has a strength in
:class:`~gzmorph.nn.augment.AugmentConfig`; 0 switches it off, and with all of them
off :func:`apply_survey` returns its input untouched (the paper presets are unchanged).

Training sees stretched RGB (JPEGs, or FITS cutouts already turned into composites by
:mod:`gzmorph.data.composite`), not linear flux, so the flux-space operations go
through an invertible approximation of the stretch: the crops are read as a Lupton
et al. (2004) composite, ``c_k = x_k F(I) / I`` with ``I`` the mean of the bands ``x_k``
and ``F(I) = asinh(I / beta) / asinh(1 / beta)`` (white at ``I = 1``), with the
softening ``beta = REFERENCE_BETA`` of the SDSS/GZ2 composites.  :func:`to_linear`
inverts it exactly (``I = F^-1(mean c)``, ``x_k = c_k I / mean c``), so with neutral
parameters the round trip is the identity up to float rounding; saturated cores
(clipped at 1) come back as their clipped values.  A fraction ``survey_prob`` of the
examples is perturbed (the others get neutral parameters and pass through as rendered);
in that linear space, per perturbed example:

1. ``color_jitter``: each band's flux times ``exp(N(0, color_jitter))`` (other bands,
   other zero points);
2. ``psf_blur``: a Gaussian blur of FWHM ``U(0, psf_blur)`` crop pixels (worse seeing);
3. ``degrade``: area down-sampling by ``1 + U(0, degrade)`` and bilinear up-sampling back
   (a coarser pixel scale, or a lower-resolution cutout), quantised to whole pixel sizes;
4. ``stretch_jitter``: the composite is redone with softening ``beta * exp(U(-s, s))``
   and flux gain ``exp(U(-s, s))`` (another survey's stretch and flux units);

then, in display units, ``noise``: Gaussian sky noise of standard deviation
``U(0, noise)`` per pixel (near the sky the asinh is linear, so this is sky noise of a
shallower survey; bright parts are compressed by the stretch in real images, which is
not modelled).  Results are clipped to [0, 1] as rendered crops are.

All parameters are drawn on the CPU from one generator (every one always drawn, so
switching one off leaves the others' draws unchanged); the noise comes from a device
generator seeded by that draw, so a step is reproducible from its seed on any device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F

from gzmorph.nn.augment import SURVEY_STRENGTHS, AugmentConfig

__all__ = ["REFERENCE_BETA", "SurveyDraws", "survey_active", "sample_survey", "apply_survey", "augment_survey",
           "to_linear", "to_display", "gaussian_blur", "degrade"]

#: Softening of the asinh stretch of SDSS/GZ2 composites as a fraction of the white level:
#: the mock JPEGs (:mod:`gzmorph.mock.canvas`: linear below 10 sky-noise units, white
#: at ~350) and the GZ2 images, whose sky noise is a few 1/255 and whose cores saturate.
REFERENCE_BETA = 0.03
_EPS = 1e-6


@dataclass
class SurveyDraws:
    """One draw of the survey perturbation per example (CPU tensors of length ``B``).

    Attributes
    ----------
    band_scale : Tensor (B, 3)
        Linear flux factor of each channel.
    blur_fwhm : Tensor (B,)
        Gaussian FWHM of the extra blur, crop pixels (0: none).
    degrade : Tensor (B,)
        Down-sampling factor (1: none).
    beta : Tensor (B,)
        Softening of the re-stretch (``REFERENCE_BETA``: unchanged).
    gain : Tensor (B,)
        Linear flux gain before the re-stretch (1: unchanged).
    noise_sd : Tensor (B,)
        Standard deviation of the added noise, display units.
    noise_seed : int
        Seed of the device generator of the noise field.
    """

    band_scale: torch.Tensor
    blur_fwhm: torch.Tensor
    degrade: torch.Tensor
    beta: torch.Tensor
    gain: torch.Tensor
    noise_sd: torch.Tensor
    noise_seed: int = 0

    def __len__(self) -> int:
        return self.blur_fwhm.shape[0]

    @classmethod
    def neutral(cls, n: int) -> "SurveyDraws":
        """Parameters that change nothing (tests set one field at a time on these)."""
        return cls(band_scale=torch.ones(n, 3), blur_fwhm=torch.zeros(n), degrade=torch.ones(n),
                   beta=torch.full((n,), REFERENCE_BETA), gain=torch.ones(n), noise_sd=torch.zeros(n))

    def changes_flux(self) -> bool:
        """Whether any flux-space operation differs from the identity (else the stretch is not inverted)."""
        return bool((self.band_scale != 1).any() or (self.blur_fwhm > 0).any() or (self.degrade > 1).any()
                    or (self.beta != REFERENCE_BETA).any() or (self.gain != 1).any())


def survey_active(cfg: AugmentConfig) -> bool:
    """Whether ``cfg`` switches on any survey-robust augmentation."""
    return cfg.survey_prob > 0 and any(getattr(cfg, name) > 0 for name in SURVEY_STRENGTHS)


def sample_survey(n: int, cfg: AugmentConfig, generator: torch.Generator | None = None) -> SurveyDraws:
    """Draw the survey perturbation of ``n`` examples on the CPU (reproducible from ``generator``)."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    g = generator
    u = torch.rand(n, 6, generator=g, dtype=torch.float64)  # one column per perturbation
    band = torch.randn(n, 3, generator=g, dtype=torch.float64)
    seed = int(torch.randint(0, 2**62, (1,), generator=g))
    s = cfg.stretch_jitter
    # The last column picks the examples that are perturbed; the others get neutral parameters.
    on = (u[:, 5] < cfg.survey_prob).double()  # (n,) 1 or 0
    return SurveyDraws(
        band_scale=torch.exp(band * cfg.color_jitter * on[:, None]).float(),
        blur_fwhm=(u[:, 0] * cfg.psf_blur * on).float(),
        degrade=(1 + u[:, 1] * cfg.degrade * on).float(),
        beta=(REFERENCE_BETA * torch.exp((2 * u[:, 2] - 1) * s * on)).float(),
        gain=torch.exp((2 * u[:, 3] - 1) * s * on).float(),
        noise_sd=(u[:, 4] * cfg.noise * on).float(),
        noise_seed=seed,
    )


def _band_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean of the 3 bands of ``(..., 3, H, W)`` as ``(..., 1, H, W)`` (slices: faster than a strided mean)."""
    return (x[..., 0:1, :, :] + x[..., 1:2, :, :] + x[..., 2:3, :, :]) / 3.0


def to_linear(crops: torch.Tensor, beta: float = REFERENCE_BETA) -> torch.Tensor:
    """Invert the composite stretch: display ``(..., 3, H, W)`` in [0, 1] -> linear band flux.

    Exact inverse of :func:`to_display` at gain 1 and the same ``beta`` (for pixels
    below the white level).
    """
    a = math.asinh(1.0 / beta)
    m = _band_mean(crops).clamp_min_(_EPS)  # (..., 1, H, W); I / m -> beta * a as m -> 0
    return crops * (torch.sinh(m * a).mul_(beta).div_(m))


def to_display(flux: torch.Tensor, beta: torch.Tensor | float = REFERENCE_BETA,
               gain: torch.Tensor | float = 1.0) -> torch.Tensor:
    """Lupton composite of linear band flux ``(B, ..., 3, H, W)`` (>= 0); ``beta`` and ``gain`` per example.

    A pixel whose brightest channel exceeds 1 is scaled down, not clipped (colours are
    kept), as in :meth:`gzmorph.mock.canvas.Canvas.stretch`.
    """
    b = flux.shape[0]
    view = (b,) + (1,) * (flux.dim() - 1)  # per-example scalars broadcast over the rest
    beta = torch.as_tensor(beta, dtype=flux.dtype, device=flux.device).expand(b).reshape(view)
    gain = torch.as_tensor(gain, dtype=flux.dtype, device=flux.device).expand(b).reshape(view)
    x = flux * gain
    i = _band_mean(x).clamp_min_(_EPS)  # F(I) / I -> 1 / (beta * norm) as I -> 0
    out = x.mul_(torch.asinh(i / beta).div_(i * torch.asinh(1.0 / beta)))
    top = torch.maximum(torch.maximum(out[..., 0:1, :, :], out[..., 1:2, :, :]), out[..., 2:3, :, :])
    return out.div_(top.clamp_min_(1.0))


def _blur_matrices(fwhm: torch.Tensor, n: int) -> torch.Tensor:
    """``(B, n, n)`` float64 Gaussian blur operators along one axis, edges extended (replicate)."""
    sigma = fwhm.double() / (2 * math.sqrt(2 * math.log(2)))
    radius = max(1, math.ceil(4 * float(sigma.max())))
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t[None, :] / sigma.clamp_min(1e-3)[:, None]) ** 2)
    k = torch.where(sigma[:, None] > 0, k, (t[None, :] == 0).double())  # no blur: a delta
    k = k / k.sum(1, keepdim=True)  # (B, K)
    # Output pixel i takes weight k[t] from input pixel clamp(i + t): replicate edges, so a flat image stays flat.
    cols = (torch.arange(n)[:, None] + t.long()[None, :]).clamp_(0, n - 1)  # (n, K)
    m = torch.zeros(len(fwhm), n, n, dtype=torch.float64)
    m.scatter_add_(2, cols.expand(len(fwhm), n, -1), k[:, None, :].expand(-1, n, -1).contiguous())
    return m


@lru_cache(maxsize=64)
def _down_up(n: int, size: int) -> torch.Tensor:
    """``(n, n)`` float64 matrix of area down-sampling from ``n`` to ``size`` then linear up-sampling back.

    Built by applying :func:`torch.nn.functional.interpolate` to the identity, so it is
    exactly the operator of ``interpolate(mode="area")`` followed by
    ``interpolate(mode="linear", align_corners=False)`` along one axis.
    """
    eye = torch.eye(n, dtype=torch.float64)[None]  # (1, n, n): channel j is the basis vector e_j
    down = F.interpolate(eye, size=size, mode="area")[0]  # (n, size): row j = D e_j, i.e. D^T
    up = F.interpolate(torch.eye(size, dtype=torch.float64)[None], size=n, mode="linear",
                       align_corners=False)[0]  # (size, n): U^T
    return (down @ up).T.contiguous()  # (U D), (n, n)


def _degrade_matrices(factor: torch.Tensor, n: int) -> torch.Tensor:
    """``(B, n, n)`` down-up sampling operators; the down-sampled side is ``round(n / factor)`` (>= 2)."""
    sizes = [max(2, round(n / float(f))) for f in factor]
    eye = torch.eye(n, dtype=torch.float64)
    return torch.stack([eye if s >= n else _down_up(n, s) for s in sizes])


def _separable(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Apply the per-example ``(B, H, H)`` operator ``m`` along both axes of ``(B, ..., H, H)``."""
    b, h = x.shape[0], x.shape[-1]
    if x.shape[-2] != h:
        raise ValueError(f"survey augmentation needs square crops, got {x.shape[-2]} x {h}")
    m = m.to(x.device, x.dtype)[:, None]  # (B, 1, H, H): broadcast over the planes
    flat = x.reshape(b, -1, h, h)  # (B, ..., H, H) -> (B, planes, H, H)
    return (m @ flat @ m.transpose(-1, -2)).reshape(x.shape)  # rows, then columns


def gaussian_blur(x: torch.Tensor, fwhm: torch.Tensor) -> torch.Tensor:
    """Blur ``(B, ..., H, H)`` with a Gaussian of FWHM ``fwhm[b]`` pixels per example (0: none).

    Edges are extended (replicate), so a flat image stays flat.
    """
    if not bool((fwhm > 0).any()):
        return x
    return _separable(x, _blur_matrices(fwhm, x.shape[-1]))


def degrade(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Area down-sample ``(B, ..., H, H)`` by ``factor[b]`` and linearly up-sample back (1: none).

    The down-sampled side is ``round(H / factor)`` (whole pixels, at least 2): exactly
    ``interpolate(mode="area")`` then ``interpolate(mode="bilinear", align_corners=False)``,
    as one separable operator per example (two batched matrix products for the batch).
    """
    if not bool((factor > 1).any()):
        return x
    return _separable(x, _degrade_matrices(factor, x.shape[-1]))


def apply_survey(crops: torch.Tensor, draws: SurveyDraws) -> torch.Tensor:
    """Apply one draw per example to crops ``(B, 2, 3, n, n)`` (or ``(B, 3, n, n)``) in [0, 1]."""
    if len(draws) != crops.shape[0]:
        raise ValueError(f"{len(draws)} survey draws for {crops.shape[0]} crops")
    out = crops
    if draws.changes_flux():
        dev = crops.device
        view = (crops.shape[0],) + (1,) * (crops.dim() - 4) + (3, 1, 1)  # per-example, per-band scale
        flux = to_linear(crops) * draws.band_scale.to(dev, crops.dtype).reshape(view)
        n = crops.shape[-1]
        # Blur, then down-up sampling: one separable operator per example, D @ G.
        flux = _separable(flux, _degrade_matrices(draws.degrade, n) @ _blur_matrices(draws.blur_fwhm, n))
        out = to_display(flux, draws.beta.to(dev), draws.gain.to(dev))
    if bool((draws.noise_sd > 0).any()):
        gen = torch.Generator(device=crops.device).manual_seed(draws.noise_seed)
        sd = draws.noise_sd.to(crops.device, crops.dtype).reshape((-1,) + (1,) * (crops.dim() - 1))
        out = out + sd * torch.randn(crops.shape, generator=gen, device=crops.device, dtype=crops.dtype)
    return out if out is crops else out.clamp_(0.0, 1.0)


def augment_survey(crops: torch.Tensor, cfg: AugmentConfig, seed: int) -> torch.Tensor:
    """Training entry point: draw from ``seed`` and apply; ``crops`` itself when ``cfg`` has all strengths 0."""
    if not survey_active(cfg):
        return crops
    return apply_survey(crops, sample_survey(crops.shape[0], cfg, torch.Generator().manual_seed(seed)))
