"""One cutouts job: a sky catalogue in, a folder of cutouts and a catalogue for prediction out.

:func:`fetch_cutouts` reads the catalogue (:mod:`gzmorph.data.skytable`), turns rows
with bad positions into error rows, takes what the cache already holds
(:mod:`~gzmorph.cutouts.cache`), fetches the rest (:mod:`~gzmorph.cutouts.fetch`) and
writes the folder (:mod:`~gzmorph.cutouts.folder`).  Every input row ends as a cutout
or an error row; a killed job continues with ``resume=True``.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from gzmorph import __version__
from gzmorph.cutouts.cache import CutoutCache, cutout_key, default_cache_dir
from gzmorph.cutouts.fetch import FetchOptions, FetchRequest, FetchResult, fetch_all
from gzmorph.cutouts.folder import CUTOUT_COLUMNS, FORMAT, CutoutFolder
from gzmorph.cutouts.services import Service, get_service
from gzmorph.data.skytable import SkyPositions, healpix_index, sky_positions
from gzmorph.data.tablefile import read_table_file
from gzmorph.errors import CatalogError

__all__ = ["CutoutConfig", "CutoutSummary", "fetch_cutouts"]


@dataclass(frozen=True)
class CutoutConfig:
    """Settings of a cutouts job.

    Parameters
    ----------
    service : str
        Cutout service (legacy-fits, legacy-jpeg, sdss, hips2fits, hips2fits-fits, or one of --services FILE).
    size : int
        Cutout side, pixels.
    pixscale : float
        Pixel scale, arcsec/px (default: the service's own).
    bands : str
        Bands, e.g. "grz" (default: the service's; fixed for colour JPEG services).
    id_column : str
        Id column of the catalogue (names the files; case-insensitive).
    ra_column : str
        Right ascension column, degrees ICRS (or the unit the file gives).
    dec_column : str
        Declination column, degrees ICRS.
    concurrency : int
        Requests in flight at once.
    rate : float
        Most requests started per second per host (0: no limit; be polite to public services).
    attempts : int
        Tries per cutout (timeouts, 429, 5xx and broken bodies are retried with backoff).
    timeout : float
        Seconds to wait for a connection or a response.
    backoff : float
        First retry waits up to this many seconds; doubles with each try (random jitter).
    cache_dir : str
        Cache of fetched cutouts (default: $GZMORPH_CACHE_DIR or ~/.cache/gzmorph/cutouts).
    healpix_order : int
        Add a column healpix: the nested HEALPix index of each position at this order (nside 2**order).
    retry_errors : bool
        With --resume, ask again for the rows that ended as errors.
    progress : bool
        Show a progress bar.
    """

    service: str = "legacy-fits"
    size: int = 256
    pixscale: float | None = None
    bands: str | None = None
    id_column: str = "id"
    ra_column: str = "ra"
    dec_column: str = "dec"
    concurrency: int = 8
    rate: float = 5.0
    attempts: int = 5
    timeout: float = 60.0
    backoff: float = 1.0
    cache_dir: str | None = None
    healpix_order: int | None = None
    retry_errors: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        if not 8 <= self.size <= 10_000:
            raise ValueError(f"size must be in [8, 10000] pixels, got {self.size}")
        if self.pixscale is not None and not 0 < self.pixscale <= 3600:
            raise ValueError(f"pixscale must be in (0, 3600] arcsec/px, got {self.pixscale}")
        if self.bands is not None and not (self.bands.isalpha() and len(set(self.bands)) == len(self.bands)):
            raise ValueError(f"bands must be distinct band letters like 'grz', got {self.bands!r}")
        for name in ("concurrency", "attempts"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.healpix_order is not None and not 0 <= self.healpix_order <= 29:
            raise ValueError(f"healpix_order must be in [0, 29], got {self.healpix_order}")
        if self.rate < 0 or self.timeout <= 0 or self.backoff < 0:
            raise ValueError("rate and backoff must be >= 0 and timeout > 0")


@dataclass
class CutoutSummary:
    """What a job did: counts (``n_rows == n_ok + n_errors``) and time."""

    out: Path
    n_rows: int
    n_ok: int
    n_errors: int
    n_resumed: int
    n_cached: int
    n_fetched: int
    seconds: float

    @property
    def images_per_second(self) -> float:
        return self.n_fetched / self.seconds if self.seconds > 0 else 0.0

    def message(self) -> str:
        return (f"{self.n_rows} rows: {self.n_ok} cutouts, {self.n_errors} error rows -> {self.out} "
                f"({self.n_fetched} fetched, {self.n_cached} from the cache, {self.n_resumed} done before; "
                f"{self.seconds:.1f} s)")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _resolve(config: CutoutConfig, service: Service) -> tuple[float, str]:
    if config.size > service.max_size:
        raise CatalogError(f"service {service.name!r} gives cutouts of at most {service.max_size} px, "
                           f"{config.size} asked")
    if config.bands is not None and service.fixed_bands and config.bands != service.bands:
        raise CatalogError(f"service {service.name!r} gives {service.bands} only (a colour image), "
                           f"bands {config.bands!r} asked")
    return config.pixscale or service.pixscale, config.bands or service.bands


def _manifest(catalog: Path, pos: SkyPositions, config: CutoutConfig, service: Service, pixscale: float,
              bands: str) -> dict:
    return {"format": FORMAT, "version": 1, "gzmorph": __version__, "input": str(catalog.resolve()),
            "input_sha256": _sha256(catalog), "n_rows": len(pos.ids), "service": service.name,
            "base": service.base, "params": dict(service.params), "url": service.url, "cutout_format": service.format,
            "size": config.size, "pixscale": pixscale, "bands": bands, "id_column": pos.id_column,
            "ra_column": pos.ra_column, "dec_column": pos.dec_column,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def fetch_cutouts(catalog: str | Path, out: str | Path, config: CutoutConfig = CutoutConfig(), *,
                  services: Mapping[str, Service] | None = None, service_url: str | None = None,
                  service_params: Mapping[str, str] | None = None, resume: bool = False) -> CutoutSummary:
    """Fetch a cutout for every row of a sky catalogue into the folder ``out``.

    Parameters
    ----------
    catalog : str or Path
        CSV, Parquet, FITS binary table, ECSV or VOTable with id, RA and Dec columns.
    out : str or Path
        New (or empty) folder; with ``resume``, the folder of an interrupted job.
    config : CutoutConfig
    services : mapping, optional
        Name -> :class:`Service` (default :data:`~gzmorph.cutouts.services.SERVICES`).
    service_url : str, optional
        Another server for the service (a mirror, a local emulator).
    service_params : mapping, optional
        Template parameters of the service (``layer``, ``hips``).
    resume : bool
        Continue the job of ``out`` (its settings must be the same).

    Returns
    -------
    CutoutSummary
    """
    from gzmorph.runtime import refuse_overwrite

    start = time.perf_counter()
    catalog = Path(catalog).expanduser()
    service = get_service(config.service, services, base=service_url, params=service_params)
    pixscale, bands = _resolve(config, service)
    table = read_table_file(catalog, id_column=config.id_column)
    added = [*CUTOUT_COLUMNS, *(["healpix"] if config.healpix_order is not None else [])]
    clash = [c for c in added if c in table.frame.columns]
    if clash:
        raise CatalogError(f"{catalog}: has column(s) {clash}, which the cutouts catalogue adds; rename them")
    pos = sky_positions(table, config.id_column, config.ra_column, config.dec_column)
    refuse_overwrite([catalog], folders=[out])
    folder = CutoutFolder.open(out, _manifest(catalog, pos, config, service, pixscale, bands), resume)
    cache = CutoutCache(config.cache_dir or default_cache_dir())
    try:
        counts = _run(folder, cache, pos, config, service, pixscale, bands)
        cutout = {"service": service.name, "pixscale": pixscale, "bands": bands, "size": config.size,
                  "format": service.format}
        units, texts = dict(table.units), dict(table.descriptions)
        per_row = {}
        if config.healpix_order is not None:
            per_row["healpix"] = healpix_index(pos.ra, pos.dec, config.healpix_order)
            texts["healpix"] = f"nested HEALPix index of (ra, dec), order {config.healpix_order}, ICRS"
        n_ok, n_err = folder.assemble(table.frame, pos.ids, pos.ra, pos.dec, cutout, units, texts, per_row)
    finally:
        folder.close()
        cache.close()
    return CutoutSummary(folder.root, len(pos.ids), n_ok, n_err, counts["resumed"], counts["cached"],
                         counts["fetched"], time.perf_counter() - start)


def _run(folder: CutoutFolder, cache: CutoutCache, pos: SkyPositions, config: CutoutConfig, service: Service,
         pixscale: float, bands: str) -> dict[str, int]:
    """Journal every row not done yet: bad positions, cache hits, then the fetches."""
    from tqdm.auto import tqdm

    done = folder.done(config.retry_errors)
    todo = [r for r in range(len(pos.ids)) if r not in done]
    counts = {"resumed": len(pos.ids) - len(todo), "cached": 0, "fetched": 0}
    keys, requests = {}, []
    bar = tqdm(total=len(todo), desc="cutouts", unit="img", disable=not config.progress)
    for r in todo:
        if pos.problems[r] is not None:
            folder.record_error(r, pos.problems[r], 0)
            bar.update()
            continue
        keys[r] = cutout_key(service.name, service.base, pos.ra[r], pos.dec[r], config.size, pixscale, bands,
                             service.params)
        hit = cache.get(keys[r])
        if hit is not None:
            folder.record_ok(r, pos.ids[r], hit.path, service.suffix, hit.key, 0, hit.wcs_pixscale)
            counts["cached"] += 1
            bar.update()
            continue
        requests.append(FetchRequest(r, service.url_for(pos.ra[r], pos.dec[r], config.size, pixscale, bands),
                                     service.host(), service.format, config.size, pixscale, service.wcs))

    def on_result(res: FetchResult) -> None:
        r = res.request.index
        if res.error is not None:
            folder.record_error(r, res.error, res.attempts)
            bar.set_postfix_str(f"last error: row {r}: {res.error[:40]}", refresh=False)
        else:
            hit = cache.put(keys[r], res.body, service=service.name, base=service.base, ra=pos.ra[r],
                            dec=pos.dec[r], size=config.size, pixscale=pixscale, bands=bands,
                            format=service.format, suffix=service.suffix, params=service.params,
                            wcs_pixscale=res.info.wcs_pixscale)
            folder.record_ok(r, pos.ids[r], hit.path, service.suffix, hit.key, res.attempts, hit.wcs_pixscale)
            counts["fetched"] += 1
        bar.update()

    opts = FetchOptions(config.concurrency, config.rate, config.attempts, config.timeout, config.backoff,
                        user_agent=f"gzmorph/{__version__}")
    try:
        if requests:
            fetch_all(requests, opts, on_result)
    finally:
        bar.close()
    return counts
