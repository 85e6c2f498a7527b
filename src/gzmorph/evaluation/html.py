"""HTML pages from the Jinja2 templates in ``templates/`` (autoescaped)."""

from __future__ import annotations

import base64
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

__all__ = ["render", "png_data_uri", "table_html"]

TEMPLATES = Path(__file__).resolve().parent / "templates"


@lru_cache(maxsize=1)
def _environment() -> Environment:
    return Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]),
                       trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)


def render(template: str, **context: Any) -> str:
    """Render ``templates/<template>`` with ``context``; values are escaped unless :class:`Markup`."""
    return _environment().get_template(template).render(**context)


def png_data_uri(png: bytes) -> str:
    """A PNG embedded in the page (the report stays one self-contained file)."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def table_html(df: pd.DataFrame) -> Markup:
    """A DataFrame as an HTML table (pandas escapes the cells)."""
    return Markup(df.to_html(index=False, border=0, na_rep="–", float_format=lambda v: f"{v:.3f}"))
