"""What a user installs: the sdist carries what the wheel needs, and the wheel built from it holds every module.

The chain is the one pip follows for a source release: build the sdist from a clean copy of the checkout
(setuptools' PEP 517 hook, offline), unpack it, build the wheel from the unpacked sdist (``pip wheel --no-build-isolation``), unpack
the wheel into a folder and run Python from a temporary directory with only that folder on ``PYTHONPATH``, so
the checkout cannot shadow it (every imported module's file is checked to lie in the unpacked wheel).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# walks the installed package, imports every module and reports any that came from elsewhere
IMPORT_ALL = """
import importlib, pkgutil, sys
from pathlib import Path
import negsynth_hf
site = Path(sys.argv[1]).resolve()
names = [m.name for m in pkgutil.walk_packages(negsynth_hf.__path__, "negsynth_hf.")]
outside = []
for name in ["negsynth_hf", *names]:
    module = importlib.import_module(name)
    if site not in Path(module.__file__).resolve().parents:
        outside.append(f"{name}: {module.__file__}")
assert not outside, outside
from negsynth_hf import build_dataset, CausalNegLoss
from negsynth_hf.publish.cards import template_path
from negsynth_hf.synthesis.schemas import SCHEMAS
print(len(names) + 1, template_path("model_card.md"), len(SCHEMAS))
"""


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc


def _source_modules() -> set[str]:
    return {p.relative_to(ROOT).as_posix() for p in (ROOT / "negsynth_hf").rglob("*.py")}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    """sdist from the checkout -> unpacked -> wheel built from it -> unpacked into ``site``."""
    tmp = tmp_path_factory.mktemp("packaging")
    # a clean copy: a stale *.egg-info/SOURCES.txt in the checkout would put every file listed there into the
    # sdist and, as package data, into the wheel, hiding a package that discovery misses
    checkout = tmp / "checkout"
    junk = shutil.ignore_patterns(".*", "*.egg-info", "build", "dist", "__pycache__", "outputs", "runs", "benchmarks")
    shutil.copytree(ROOT, checkout, ignore=junk)
    dist = tmp / "dist"
    dist.mkdir()
    hook = "import sys; from setuptools import build_meta; print(build_meta.build_sdist(sys.argv[1]))"
    name = _run([sys.executable, "-c", hook, str(dist)], cwd=checkout).stdout.strip().splitlines()[-1]
    sdist = dist / name
    with tarfile.open(sdist) as archive:
        archive.extractall(tmp / "src", filter="data")
    (source,) = (tmp / "src").iterdir()
    _run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(source), "-w", str(dist)],
        cwd=tmp,
    )
    (wheel,) = dist.glob("negsynth_hf-*.whl")
    site = tmp / "site"
    zipfile.ZipFile(wheel).extractall(site)
    return {"tmp": tmp, "sdist": sdist, "source": source, "wheel": wheel, "site": site}


@pytest.mark.slow
def test_sdist_carries_what_the_wheel_needs(built):
    names = {n.split("/", 1)[1] for n in tarfile.open(built["sdist"]).getnames() if "/" in n}
    needed = _source_modules() | {"pyproject.toml", "setup.py", "README.md"}
    needed |= {f"negsynth_hf/templates/{p.name}" for p in (ROOT / "model_cards").glob("*.md")}  # the link, as files
    needed |= {p.relative_to(ROOT).as_posix() for p in (ROOT / "negsynth_hf" / "synthesis" / "schemas").glob("*.json")}
    assert not needed - names, f"missing from the sdist: {sorted(needed - names)}"


@pytest.mark.slow
def test_wheel_ships_every_module_templates_and_schemas(built):
    wheel = zipfile.ZipFile(built["wheel"])
    names = set(wheel.namelist())
    missing = _source_modules() - names
    assert not missing, f"missing from the wheel: {sorted(missing)}"
    for card in ("dataset_card.md", "model_card.md"):
        assert wheel.read(f"negsynth_hf/templates/{card}") == (ROOT / "model_cards" / card).read_bytes()
    for schema in (ROOT / "negsynth_hf" / "synthesis" / "schemas").glob("*.json"):
        assert f"negsynth_hf/synthesis/schemas/{schema.name}" in names
    assert not [n for n in names if "__pycache__" in n or n.startswith(("tests/", "benchmarks/", "recipes/"))]
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    assert "negsynth = negsynth_hf.cli:main" in wheel.read(entry_points).decode()


@pytest.mark.slow
def test_every_module_imports_and_the_cli_runs_from_the_wheel(built):
    site, cwd = built["site"], built["tmp"]
    env = {**os.environ, "PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1"}
    out = _run([sys.executable, "-c", IMPORT_ALL, str(site)], cwd=cwd, env=env).stdout.split()
    count, template, schemas = int(out[-3]), Path(out[-2]), int(out[-1])
    assert count == len(_source_modules())  # every module, __init__s included
    assert template == site / "negsynth_hf" / "templates" / "model_card.md"
    assert schemas >= 5
    # the `negsynth` console script is negsynth_hf.cli:main
    help_text = _run([sys.executable, "-m", "negsynth_hf.cli", "--help"], cwd=cwd, env=env).stdout
    for step in ("build", "train", "evaluate", "diagnose", "publish", "demo"):
        assert step in help_text
