"""Where this project's packages are: the folder holding rglcd/, trainer/, reward_service/ and
orchestration/ (a checkout's root, or site-packages when installed from the wheel).

Processes this project starts with an interpreter of their own (Ray workers of a local
cluster, ImageReward's isolated environment) get it on PYTHONPATH, so they import the same
code as the process that started them.
"""

from __future__ import annotations

from pathlib import Path

PACKAGES_ROOT = Path(__file__).resolve().parents[1]
