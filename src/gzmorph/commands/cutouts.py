"""``gzmorph cutouts``: fetch an image per row of an RA/Dec catalogue from a public cutout service."""

from __future__ import annotations

import argparse

HELP = "fetch cutouts for an RA/Dec catalogue from a survey service (Legacy Surveys, SDSS, HiPS)"
DESCRIPTION = (
    "Read CATALOG (CSV, Parquet, FITS binary table, ECSV or VOTable with id, RA and Dec columns) and fetch "
    "one cutout per row from a public service into the folder OUT: OUT/images/<id>.fits (or .jpg), "
    "OUT/catalog.parquet (your columns in input order, the image path, and the service, pixel scale and "
    "bands of each cutout; `gzmorph predict --catalog OUT` reads it) and OUT/errors.csv (the rows that "
    "could not be fetched, with the reason). Requests run concurrently with a per-host rate limit, and "
    "are retried with backoff on timeouts, 429 and 5xx answers, and broken bodies. Fetched cutouts are cached "
    "on disk by (service, position, size, pixel scale, bands), so a second job asks only for new ones. "
    "A killed job restarted with --resume continues where it stopped."
)

FIELDS = ("service", "size", "pixscale", "bands", "id_column", "ra_column", "dec_column", "concurrency",
          "rate", "attempts", "timeout", "backoff", "cache_dir", "healpix_order", "retry_errors")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from gzmorph.cutouts.job import CutoutConfig
    from gzmorph.options import add_config_options

    p.add_argument("catalog", nargs="?", metavar="CATALOG", help="catalogue with id, RA and Dec columns")
    p.add_argument("--out", metavar="DIR", help="new or empty folder for the cutouts")
    add_config_options(p, CutoutConfig, fields=FIELDS)
    p.add_argument("--service-url", metavar="URL",
                   help="server of the service instead of the public one (a mirror, or a local emulator)")
    p.add_argument("--service-param", action="append", default=[], metavar="KEY=VALUE",
                   help="a template parameter of the service, e.g. layer=ls-dr9 or hips=CDS/P/SDSS9/color "
                        "(repeatable)")
    p.add_argument("--services", metavar="FILE", help="YAML/JSON file of more services (name: {url, base, "
                   "pixscale, bands, format, ...}, or like: NAME to change a built-in one)")
    p.add_argument("--list-services", action="store_true", help="list the services and exit")
    p.add_argument("--resume", action="store_true", help="continue the interrupted job of --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _params(items: list[str]) -> dict[str, str]:
    from gzmorph.errors import ConfigError

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--service-param {item!r}: expected KEY=VALUE")
        out[key.strip()] = value.strip()
    return out


def run(args: argparse.Namespace) -> int:
    from gzmorph.config import build
    from gzmorph.cutouts.job import CutoutConfig, fetch_cutouts
    from gzmorph.cutouts.services import SERVICES, load_services
    from gzmorph.options import config_values

    services = load_services(args.services) if args.services else SERVICES
    if args.list_services:
        for s in services.values():
            print(f"{s.name:16s} {s.format:5s} {s.bands:4s} {s.pixscale:g}\"/px  {s.description}")
        return 0
    if not (args.catalog and args.out):
        from gzmorph.errors import ConfigError

        raise ConfigError("give a CATALOG and --out DIR")
    cfg = build(CutoutConfig, {**config_values(args, CutoutConfig, fields=FIELDS), "progress": not args.no_progress})
    summary = fetch_cutouts(args.catalog, args.out, cfg, services=services, service_url=args.service_url,
                            service_params=_params(args.service_param), resume=args.resume)
    print(summary.message())
    if summary.n_fetched:
        print(f"{summary.images_per_second:.1f} images/s")
    if summary.n_errors:
        print(f"error rows: {summary.out / 'errors.csv'}")
    return 0 if summary.n_ok else 1
