"""The checkout, for the developer tools that write into it (the benchmarks' table and the
studies' figures under docs/, the toy world's artifacts): `make env` installs the package
editable, so the modules' files are the checkout's own. The product's commands use none of
it: recipes are package data (rglcd/recipes.py), generated data goes to the user's cache
(rglcd/cache.py) or a run's output folder.
"""

from rglcd.paths import PACKAGES_ROOT

REPO_ROOT = PACKAGES_ROOT
