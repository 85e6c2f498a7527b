"""``gzmorph review``'s configuration and server: what is reviewed, where, and who may connect.

:class:`ReviewConfig` holds the settings; :func:`open_session` opens the catalog, the
predictions and the database once; :func:`serve` runs the web application with
uvicorn.  The server binds to 127.0.0.1 unless told otherwise, and any other address
needs a shared secret (``--token`` or the ``GZMORPH_REVIEW_TOKEN`` environment
variable) that every request must carry.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from gzmorph.config import Config
from gzmorph.errors import CatalogError, ConfigError
from gzmorph.data.catalog import Catalog, open_catalog
from gzmorph.outputs import refuse_overwrite
from gzmorph.review.acquisition import AcquisitionConfig, acquisition_scores
from gzmorph.review.db import ReviewStore
from gzmorph.review.queue import load_predictions, model_version
from gzmorph.tree import Tree, get_tree

__all__ = ["ReviewConfig", "ReviewSession", "open_session", "open_review_catalog", "BackgroundServer",
           "TOKEN_ENV", "served_hosts"]

TOKEN_ENV = "GZMORPH_REVIEW_TOKEN"


@dataclass
class ReviewConfig(Config):
    """Settings of a review server.

    Parameters
    ----------
    predictions : path
        Prediction file (Parquet from ``gzmorph predict``, or CSV).
    catalog : path
        Where the images are: a folder of images, a Kaggle directory (``split``) or a
        CSV/Parquet catalog.  Images are served only by id through this catalog.
    db : path
        Review database (created when missing).
    host, port : str, int
        Address to bind; anything but a loopback address needs ``token``.
    allowed_hosts : tuple of str
        Host names, besides the bound one (and ``localhost`` / the loopback addresses),
        that requests may name in ``Host`` and ``Origin`` (a reverse proxy's name...).
        Any other is refused: a page served under another name (DNS rebinding) cannot
        talk to the server.
    token : str, optional
        Shared secret every request must carry; defaults to ``$GZMORPH_REVIEW_TOKEN``.
    show_model : bool
        Show the model's probabilities by default (reviewers can toggle it; showing
        them biases the answers, so it is off unless asked for).
    tree : str
        ``"gz2"`` or a tree JSON file.
    id_column : str
        Id column of the predictions and the catalog.
    split : str
        Split of a Kaggle directory (``"test"``: the unlabelled images).
    acquisition : AcquisitionConfig
        The policy ordering the queue (:mod:`gzmorph.review.acquisition`); default today's rule.
    """

    predictions: str | Path
    catalog: str | Path
    db: str | Path
    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None
    show_model: bool = False
    tree: str = "gz2"
    id_column: str = "GalaxyID"
    split: str = "test"
    acquisition: AcquisitionConfig = field(default_factory=AcquisitionConfig)
    allowed_hosts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.allowed_hosts = tuple(h.strip().lower() for h in self.allowed_hosts if h.strip())
        if self.token is None:
            self.token = os.environ.get(TOKEN_ENV) or None
        if not 0 < self.port < 65536:
            raise ConfigError(f"port must be in 1..65535, got {self.port}")
        if not is_loopback(self.host) and not self.token:
            raise ConfigError(f"--host {self.host} lets other machines connect: give a shared secret with "
                             f"--token or ${TOKEN_ENV} (every request must carry it)")
        if self.token is not None and len(self.token) < 16:
            raise ConfigError("the token must be at least 16 characters (e.g. `python -c 'import secrets; "
                             "print(secrets.token_urlsafe())'`)")


def served_hosts(cfg: ReviewConfig) -> set[str]:
    """The host names requests may carry: the bound one, loopback names and the configured ones.

    A wildcard bind (``0.0.0.0``, ``::``) adds this machine's own names; reaching it
    under any other name needs ``allowed_hosts``.
    """
    hosts = {"localhost", "127.0.0.1", "::1", cfg.host.lower(), *cfg.allowed_hosts}
    if cfg.host in ("0.0.0.0", "::", ""):
        hosts |= {socket.gethostname().lower(), socket.getfqdn().lower()}
    return hosts


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def open_review_catalog(spec: str | Path, tree: Tree, id_column: str = "GalaxyID", split: str = "test") -> Catalog:
    """The catalog whose images are reviewed (paths required)."""
    catalog = open_catalog(spec, tree=tree, split=split, id_column=id_column)
    if all(p is None for p in catalog.paths):
        raise CatalogError(f"{spec}: the catalog has no image paths; give a folder of images or a catalog "
                         "with a 'path' column")
    return catalog


@dataclass
class ReviewSession:
    """Everything the web application serves from, opened once."""

    config: ReviewConfig
    tree: Tree
    store: ReviewStore
    predictions: pd.DataFrame
    images: dict[str, Path]  # galaxy id (text) -> image file, the only files ever served
    model_version: str
    scores: pd.DataFrame | None = None  # the acquisition policy's priority and reason; None: today's rule


def open_session(cfg: ReviewConfig) -> ReviewSession:
    """Open the tree, catalog, predictions and database of a review."""
    # The shared output guard: the database is never an input nor inside an input folder.
    refuse_overwrite([cfg.predictions, cfg.catalog], files=[cfg.db], option="--db")
    tree = get_tree(cfg.tree)
    catalog = open_review_catalog(cfg.catalog, tree, cfg.id_column, cfg.split)
    images = {str(i): Path(p) for i, p in zip(catalog.ids.tolist(), catalog.paths) if p is not None}
    preds = load_predictions(cfg.predictions, tree, cfg.id_column)
    unknown = preds.index[~preds.index.isin(list(images))]
    if len(unknown) == len(preds):
        raise CatalogError(f"none of the {len(preds)} predicted ids is in the catalog {cfg.catalog} "
                         f"(e.g. {unknown[0]!r}); give the catalog the predictions were made on")
    if len(unknown):
        print(f"warning: {len(unknown)} predicted galaxies have no image in {cfg.catalog} and are left "
              f"out (e.g. {', '.join(unknown[:5])})")
    preds = preds[preds.index.isin(list(images))]
    store = ReviewStore(cfg.db, tree, meta={"catalog": str(Path(cfg.catalog).resolve()), "split": cfg.split,
                                            "id_column": cfg.id_column,
                                            "predictions": str(Path(cfg.predictions).resolve())})
    scores = acquisition_scores(preds, tree, cfg.acquisition, cfg.id_column)
    return ReviewSession(cfg, tree, store, preds, images, model_version(cfg.predictions), scores)


class BackgroundServer:
    """A review server on a free loopback port in a thread (tests, screenshots).

    Use as a context manager; ``url`` is the server's address.
    """

    def __init__(self, app) -> None:
        import uvicorn

        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self._server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True)

    def __enter__(self) -> "BackgroundServer":
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:  # bounded: a server that cannot start fails loudly
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the review server did not start within 20 s")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()
