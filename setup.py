"""Packaging beyond pyproject.toml: the recipes under configs/ ship as package data
`rglcd/configs` (a folder mapped into a package, which pyproject's package discovery cannot
express). Everything else about the package is in pyproject.toml."""

from setuptools import find_packages, setup

PACKAGES = ["rglcd*", "trainer*", "reward_service*", "orchestration*"]

setup(
    packages=[*find_packages(include=PACKAGES), "rglcd.configs"],
    package_dir={"rglcd.configs": "configs"},
)
