"""The checkout the commands run from: their default recipes, outputs and docs live under it.

`make env` installs the package editable, so the modules' files are the checkout's own.
"""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
