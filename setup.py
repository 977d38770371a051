"""Package discovery (everything else is in pyproject.toml).

Every ``negsynth_hf`` subpackage is found, so a new one ships without editing a list; the card templates are one
more package, ``negsynth_hf.templates``, a link to ``model_cards/`` (where the repository keeps them).
"""

from setuptools import find_namespace_packages, setup

# namespace packages too: negsynth_hf/synthesis/schemas/ is a data folder (the stage JSON Schemas) without __init__
packages = find_namespace_packages(include=["negsynth_hf", "negsynth_hf.*"], exclude=["*.__pycache__"])
setup(packages=sorted({*packages, "negsynth_hf.templates"}))
