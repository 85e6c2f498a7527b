"""The expert loop: review doubtful galaxies in a browser, store the answers, export them as labels.

Modules: :mod:`~gzmorph.review.walk` (walking the tree), :mod:`~gzmorph.review.db`
(the SQLite store), :mod:`~gzmorph.review.queue` (which galaxies, in which order),
:mod:`~gzmorph.review.export` (vote fractions as a training catalog),
:mod:`~gzmorph.review.server` (settings and serving), :mod:`~gzmorph.review.security`
(token gate, CSRF) and :mod:`~gzmorph.review.app` (the pages).  The web parts need the
``review`` extra (starlette, jinja2, python-multipart, uvicorn); the store and the
export need only the core dependencies.
"""

from gzmorph.review.db import ReviewStore
from gzmorph.review.export import export_labels, vote_fractions
from gzmorph.review.walk import CANT_TELL, AnswerError

__all__ = ["ReviewStore", "export_labels", "vote_fractions", "CANT_TELL", "AnswerError", "ReviewConfig", "serve"]


def __getattr__(name: str):
    # The server pulls in starlette (the `review` extra) only when asked for.
    if name == "ReviewConfig":
        from gzmorph.review import server

        return server.ReviewConfig
    if name == "serve":
        from gzmorph.review import app

        return app.serve
    raise AttributeError(name)
