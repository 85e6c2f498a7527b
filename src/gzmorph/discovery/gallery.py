"""An HTML gallery of thumbnails (one self-contained page), for similar galaxies and anomalies."""

from __future__ import annotations

import base64
import io
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import pandas as pd
from jinja2 import Environment, FileSystemLoader, select_autoescape
from PIL import Image

from gzmorph.data.decode import ImageError, decode
from gzmorph.runtime import atomic_write

__all__ = ["thumbnail", "write_gallery", "THUMB_SIZE"]

THUMB_SIZE = 96
TEMPLATES = Path(__file__).resolve().parent / "templates"


@lru_cache(maxsize=1)
def _environment() -> Environment:
    return Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]),
                       trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)


def thumbnail(path: str | Path, size: int = THUMB_SIZE) -> str | None:
    """A JPEG data URI of the image at ``path``, or None when it cannot be read (shown as missing)."""
    try:
        pixels = decode(path, size)
    except (ImageError, OSError, ValueError):
        return None
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def write_gallery(out: str | Path, title: str, sections: Sequence[tuple[str, pd.DataFrame]], id_column: str,
                  value: str, note: str = "") -> Path:
    """Write a page with one row of thumbnails per section.

    Parameters
    ----------
    sections : sequence of (heading, table)
        Each table has ``id_column``, ``path`` and the number column ``value`` (a
        distance or an anomaly score), shown under every thumbnail in table order.
    """
    rendered = []
    for heading, table in sections:
        cards: list[dict[str, Any]] = [{"id": str(row[id_column]), "value": float(row[value]),
                                        "src": thumbnail(row["path"]) if isinstance(row["path"], str) else None}
                                       for _, row in table.iterrows()]
        rendered.append({"heading": heading, "cards": cards})
    html = _environment().get_template("gallery.html").render(title=title, sections=rendered, value=value,
                                                               note=note)
    out = Path(out)
    atomic_write(out, lambda tmp: tmp.write_text(html, encoding="utf-8"))
    return out
