"""Shared builders of the review tests: a mock review setup and a logged-in HTTP client."""

from __future__ import annotations

import re
from pathlib import Path

from gzmorph.review.sample import write_sample

CSRF = re.compile(r'name="csrf" value="([0-9a-f]+)"')


def sample(root: Path) -> tuple[Path, Path]:
    """Six flagged mock galaxies (64 px) and their predictions under ``root``."""
    return write_sample(root, n=6, seed=1, size=64)


def csrf_of(html: str) -> str:
    match = CSRF.search(html)
    assert match, "no CSRF token in the page"
    return match.group(1)
