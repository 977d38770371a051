"""The user docs stay true to the repository: rendered results tables, length, no development history.

The results tables of README.md and benchmarks/README.md are written by ``benchmarks/render_tables.py`` from
``benchmarks/results/``; CI fails when a result file changes and the documents were not re-rendered.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RENDER = ROOT / "benchmarks" / "render_tables.py"
RESULTS = ROOT / "benchmarks" / "results"
USER_DOCS = [ROOT / "README.md", ROOT / "benchmarks" / "README.md", ROOT / "docs" / "method.md"]
README_MAX_WORDS = 2000
# development history: issue/PR references, development rounds and sessions
HISTORY = re.compile(r"(?<![\w/&])#\d+\b|\b(?:issues?|PR)\s+#?\d+|\brounds?\b|\bsessions?\b", re.IGNORECASE)


def render(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(RENDER), *args], capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_rendered_tables_match_the_result_files():
    done = render("--check")
    assert done.returncode == 0, f"run `python benchmarks/render_tables.py`:\n{done.stdout}{done.stderr}"


@pytest.fixture
def results_copy(tmp_path: Path) -> Path:
    """The quality result files (not the large per-query ones) and both documents, in a scratch folder."""
    results = tmp_path / "results"
    results.mkdir()
    for path in RESULTS.glob("quality_*"):
        if path.is_file() and not path.name.endswith((".per_query.json", ".png")):
            shutil.copy(path, results / path.name)
    shutil.copy(RESULTS / "guard_eval.json", results / "guard_eval.json")
    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    shutil.copy(ROOT / "benchmarks" / "README.md", tmp_path / "benchmarks_README.md")
    return tmp_path


def _documents(folder: Path) -> list[str]:
    return [
        "--results-dir", str(folder / "results"),
        "--document", str(folder / "README.md"), "headline",
        "--document", str(folder / "benchmarks_README.md"), "ladder",
    ]  # fmt: skip


def _edit(path: Path, change) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(json.dumps(data), encoding="utf-8")


def test_a_changed_score_changes_both_tables(results_copy: Path):
    assert render("--check", *_documents(results_copy)).returncode == 0  # same files, same tables

    def lower_mined(records):
        mined = next(r for r in records if r["variant"] == "mined" and r["seed"] == 0)
        mined["ndcg@10"] -= 0.05

    _edit(results_copy / "results" / "quality_cisi.json", lower_mined)
    check = render("--check", *_documents(results_copy))
    assert check.returncode == 1
    assert "out of date" in check.stderr and "README.md" in check.stderr
    assert render(*_documents(results_copy)).returncode == 0  # re-render, then the check passes again
    assert render("--check", *_documents(results_copy)).returncode == 0
    readme = (results_copy / "README.md").read_text(encoding="utf-8")
    assert (ROOT / "README.md").read_text(encoding="utf-8") != readme
    old_row = next(line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith("| CISI | 0."))
    new_row = next(line for line in readme.splitlines() if line.startswith("| CISI | 0."))
    assert old_row != new_row  # the CISI mined cell moved


def test_a_changed_test_result_changes_the_comparison(results_copy: Path):
    def flip_p(tests):
        for t in tests:
            if (t["a"], t["b"], t["metric"]) == ("full", "mined", "ndcg@10"):
                t["p_value"] = 0.001

    _edit(results_copy / "results" / "quality_cisi.significance.json", flip_p)
    assert render(*_documents(results_copy)).returncode == 0
    readme = (results_copy / "README.md").read_text(encoding="utf-8")
    cisi_tests = [line for line in readme.splitlines() if line.startswith("| CISI | ") and "(p " in line]
    assert len(cisi_tests) == 1 and "(p 0.001)*" in cisi_tests[0]


def test_a_changed_guard_evaluation_changes_the_guard_table(results_copy: Path):
    documents = ["--results-dir", str(results_copy / "results"), "--document", str(results_copy / "README.md")]
    assert render("--check", *documents, "guard").returncode == 0

    def perfect_contrast(guard_eval):
        row = guard_eval["collections"]["cranfield"]["policies"]["contrast"]["eval"]
        row["precision"], row["recall"] = 1.0, 1.0

    _edit(results_copy / "results" / "guard_eval.json", perfect_contrast)
    assert render("--check", *documents, "guard").returncode == 1
    assert render(*documents, "guard").returncode == 0
    cranfield = [
        line for line in (results_copy / "README.md").read_text().splitlines() if line.startswith("| Cranfield | 73")
    ]
    assert len(cranfield) == 1 and cranfield[0].rstrip(" |").endswith("1.00 / 1.00")


def test_missing_markers_are_an_error_that_says_what_to_add(tmp_path: Path):
    doc = tmp_path / "doc.md"
    doc.write_text("# no table here\n", encoding="utf-8")
    done = render("--document", str(doc), "headline")
    assert done.returncode != 0 and "<!-- results:start -->" in done.stderr


def test_readme_is_short():
    words = len((ROOT / "README.md").read_text(encoding="utf-8").split())  # what `wc -w` counts
    assert words <= README_MAX_WORDS, f"README.md has {words} words; keep it at most {README_MAX_WORDS}"


@pytest.mark.parametrize("path", USER_DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_user_docs_hold_no_development_history(path: Path):
    found = [
        f"line {n}: {m.group(0)!r}"
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        for m in HISTORY.finditer(line)
    ]
    assert not found, f"{path.name} speaks of the development history: {found}"


def test_readme_test_command_is_the_one_ci_runs():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").strip().splitlines()[-1]
    assert ci in (ROOT / "README.md").read_text(encoding="utf-8")
