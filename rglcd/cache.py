"""Where generated files that are not a run's output live: a per-user cache directory.

`RGLCD_CACHE_DIR` if set, else `$XDG_CACHE_HOME/rglcd`, else `~/.cache/rglcd`. Never inside
the installed package or a checkout: site-packages may be read-only and is shared by users.
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "RGLCD_CACHE_DIR"


def cache_dir() -> Path:
    explicit = os.environ.get(CACHE_ENV)
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(base).expanduser() / "rglcd"
