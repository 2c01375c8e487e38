"""Packaging beyond pyproject.toml: which folders ship, and their data files.

The recipes under configs/ ship as package data `rglcd/configs` (a folder mapped into a
package, which pyproject's package discovery cannot express). Data folders (the recipes, the
toy world's artifacts) are listed folder by folder as packages of their own, so setuptools
ships every file of them without warning that they look importable. Everything else about the
package is in pyproject.toml.
"""

from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent
CODE = ["rglcd*", "trainer*", "reward_service*", "orchestration*"]


def data_packages(package: str, folder: Path, pattern: str) -> dict[str, list[str]]:
    """The package of `folder` and one per subfolder -> the file pattern each ships (none for a
    folder that is absent, as in the Docker image's dependency layer)."""
    if not folder.is_dir():
        return {}
    names = [package] + [f"{package}.{'.'.join(d.relative_to(folder).parts)}"
                         for d in sorted(folder.rglob("*")) if d.is_dir()]
    return {name: [pattern] for name in names}


DATA = {
    **data_packages("rglcd.configs", ROOT / "configs", "*.yaml"),
    **data_packages("rglcd.toy.artifacts", ROOT / "rglcd" / "toy" / "artifacts", "*"),
    **data_packages("rglcd.arch_configs", ROOT / "rglcd" / "arch_configs", "*.json"),
    "reward_service.scorers": ["imagereward-requirements.txt"],
}

setup(
    packages=sorted({*find_packages(include=CODE), *DATA}),
    package_dir={"rglcd.configs": "configs"},
    package_data=DATA,
)
