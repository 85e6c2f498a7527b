"""Cutout services as data: a URL template, a pixel scale, bands and a format.

Adding a service is a few lines: an entry of :data:`SERVICES`, or of a YAML/JSON file
given to ``gzmorph cutouts --services FILE`` (a mapping of names to the fields of
:class:`Service`).  The template is filled with ``base``, ``ra`` and ``dec`` (degrees,
7 decimals), ``size`` (pixels), ``pixscale`` (arcsec/px), ``fov`` (degrees), ``bands``
and the service's ``params`` (``layer``, ``hips``...).  ``base`` is separate so that a
mirror, or the local emulator of the tests (:mod:`gzmorph.mock.cutout_server`), can
stand in for the public server (``--service-url``).
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlsplit

from gzmorph.errors import ConfigError

__all__ = ["Service", "SERVICES", "get_service", "load_services", "FORMATS"]

#: Formats a service can answer, and the file suffix of each.
FORMATS = {"fits": ".fits", "jpeg": ".jpg"}
_FIELDS = {"ra", "dec", "size", "pixscale", "fov", "bands", "base"}


@dataclass(frozen=True)
class Service:
    """One cutout service.

    Parameters
    ----------
    name : str
    url : str
        Template of the request URL (``{base}``, ``{ra}``, ``{dec}``, ``{size}``,
        ``{pixscale}``, ``{fov}``, ``{bands}`` and the keys of ``params``).
    base : str
        Scheme and host (and path prefix) of the server.
    pixscale : float
        Default pixel scale, arcsec per pixel.
    bands : str
        Default bands, blue to red, one letter each (``"grz"``).
    format : {"fits", "jpeg"}
        What the service answers.
    max_size : int
        Largest cutout side the service gives, pixels.
    params : mapping
        Further template values (``layer``, ``hips``), overridable per job.
    fixed_bands : bool
        The bands are fixed by the service (a colour JPEG): ``bands`` cannot be changed.
    wcs : bool
        FITS answers carry a WCS, whose pixel scale is checked against the request.
    description : str
    """

    name: str
    url: str
    base: str
    pixscale: float
    bands: str
    format: str
    max_size: int = 512
    params: Mapping[str, str] = field(default_factory=dict)
    fixed_bands: bool = False
    wcs: bool = True
    description: str = ""

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"service {self.name!r}: format must be one of {sorted(FORMATS)}, got {self.format!r}")
        if not self.pixscale > 0:
            raise ValueError(f"service {self.name!r}: pixscale must be > 0 arcsec/px, got {self.pixscale}")
        if not self.bands or not self.bands.isalpha():
            raise ValueError(f"service {self.name!r}: bands must be letters (e.g. 'grz'), got {self.bands!r}")
        names = {f[1] for f in string.Formatter().parse(self.url) if f[1]}
        if not {"ra", "dec", "base"} <= names:
            raise ValueError(f"service {self.name!r}: the url template needs {{base}}, {{ra}} and {{dec}}")
        unknown = names - _FIELDS - set(self.params)
        if unknown:
            raise ValueError(f"service {self.name!r}: the url template names {sorted(unknown)}, which are neither "
                             f"{sorted(_FIELDS)} nor params")
        if urlsplit(self.base).scheme not in ("http", "https"):
            raise ValueError(f"service {self.name!r}: base must be an http(s) URL, got {self.base!r}")
        object.__setattr__(self, "params", dict(self.params))

    @property
    def suffix(self) -> str:
        """File suffix of the cutouts (``.fits``, ``.jpg``)."""
        return FORMATS[self.format]

    def url_for(self, ra: float, dec: float, size: int, pixscale: float, bands: str) -> str:
        """The request URL of one cutout."""
        return self.url.format(base=self.base.rstrip("/"), ra=f"{ra:.7f}", dec=f"{dec:.7f}", size=size,
                               pixscale=f"{pixscale:g}", fov=f"{size * pixscale / 3600.0:.8g}", bands=bands,
                               **self.params)

    def host(self) -> str:
        """The server's host and port (rate limits are per host)."""
        return urlsplit(self.base).netloc

    def with_options(self, base: str | None = None, params: Mapping[str, str] | None = None) -> "Service":
        """This service on another server (``base``) or with other ``params``."""
        unknown = set(params or {}) - set(self.params)
        if unknown:
            raise ConfigError(f"service {self.name!r} has no parameter(s) {sorted(unknown)} "
                              f"(it has: {', '.join(sorted(self.params)) or 'none'})")
        try:
            return replace(self, base=base or self.base, params={**self.params, **(params or {})})
        except ValueError as exc:
            raise ConfigError(str(exc)) from None


_LEGACY = "https://www.legacysurvey.org"
_SDSS = "https://skyserver.sdss.org"
_CDS = "https://alasky.cds.unistra.fr"

SERVICES: dict[str, Service] = {s.name: s for s in (
    Service("legacy-fits", "{base}/viewer/fits-cutout?ra={ra}&dec={dec}&size={size}&layer={layer}"
            "&pixscale={pixscale}&bands={bands}", _LEGACY, 0.262, "grz", "fits", max_size=3000,
            params={"layer": "ls-dr10"}, description="DESI Legacy Imaging Surveys, FITS cube in nanomaggies"),
    Service("legacy-jpeg", "{base}/viewer/jpeg-cutout?ra={ra}&dec={dec}&size={size}&layer={layer}"
            "&pixscale={pixscale}", _LEGACY, 0.262, "grz", "jpeg", max_size=3000, params={"layer": "ls-dr10"},
            fixed_bands=True, description="DESI Legacy Imaging Surveys, grz colour JPEG"),
    Service("sdss", "{base}/dr18/SkyServerWS/ImgCutout/getjpeg?ra={ra}&dec={dec}&scale={pixscale}"
            "&width={size}&height={size}", _SDSS, 0.396, "gri", "jpeg", max_size=2048, fixed_bands=True,
            description="SDSS SkyServer image cutout, gri colour JPEG (the GZ2 images' source)"),
    Service("hips2fits", "{base}/hips-image-services/hips2fits?hips={hips}&ra={ra}&dec={dec}&width={size}"
            "&height={size}&fov={fov}&projection=TAN&coordsys=icrs&format=jpg", _CDS, 0.262, "grz", "jpeg",
            max_size=5000, params={"hips": "CDS/P/DESI-Legacy-Surveys/DR10/color"}, fixed_bands=True,
            description="any colour HiPS through CDS hips2fits (--service-param hips=ID)"),
    Service("hips2fits-fits", "{base}/hips-image-services/hips2fits?hips={hips}&ra={ra}&dec={dec}"
            "&width={size}&height={size}&fov={fov}&projection=TAN&coordsys=icrs&format=fits", _CDS, 0.262, "r",
            "fits", max_size=5000, params={"hips": "CDS/P/DESI-Legacy-Surveys/DR10/r"}, fixed_bands=True,
            description="one band of any HiPS as FITS through CDS hips2fits (--service-param hips=ID)"),
)}


def _read_mapping(path: Path) -> dict[str, Any]:
    """The YAML/JSON mapping of a services file (names kept as written: ``legacy-dr9``)."""
    import json

    import yaml

    try:
        text = path.read_text()
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read the services file ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of service names to fields")
    return {str(k): v for k, v in data.items()}


def load_services(path: str | Path) -> dict[str, Service]:
    """The built-in services plus those of a YAML/JSON file (same names replace built-ins).

    The file maps names to :class:`Service` fields; an entry may give ``like: NAME`` to
    start from a built-in service and change only some fields.
    """
    entries = _read_mapping(Path(path))
    found = dict(SERVICES)
    for name, spec in entries.items():
        if not isinstance(spec, dict):
            raise ConfigError(f"{path}: service {name!r} must be a mapping of fields, got {type(spec).__name__}")
        spec = dict(spec)
        like = spec.pop("like", None)
        try:
            if like is not None:
                if like not in found:
                    raise ConfigError(f"{path}: service {name!r} is like {like!r}, which is not a service")
                found[name] = replace(found[like], name=name, **spec)
            else:
                found[name] = Service(name=name, **spec)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{path}: service {name!r}: {exc}") from None
    return found


def get_service(name: str, services: Mapping[str, Service] | None = None, *, base: str | None = None,
                params: Mapping[str, Any] | None = None) -> Service:
    """The service called ``name``, on ``base`` if given, with ``params`` changed."""
    services = SERVICES if services is None else services
    if name not in services:
        raise ConfigError(f"no cutout service {name!r}; choose one of {', '.join(sorted(services))}")
    return services[name].with_options(base, {k: str(v) for k, v in (params or {}).items()})
