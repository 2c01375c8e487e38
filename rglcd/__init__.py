"""Shared library of the RG-LCD project: config loading, codecs, and the toy world.

`trainer/` and `reward_service/` both depend on this package; it depends on neither.
"""
