"""Package discovery (everything else is in pyproject.toml).

Every ``negsynth_hf`` subpackage is found, so a new one ships without editing a list; the card templates are one
more package, ``negsynth_hf.templates``, whose files live in ``model_cards/`` (pyproject's ``package-dir``), which
``packages.find`` alone cannot add.
"""

from setuptools import find_namespace_packages, setup

# namespace packages too: negsynth_hf/synthesis/schemas/ is a data folder (the stage JSON Schemas) without __init__
packages = find_namespace_packages(include=["negsynth_hf", "negsynth_hf.*"], exclude=["*.__pycache__"])
setup(packages=[*packages, "negsynth_hf.templates"])
