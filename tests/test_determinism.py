"""A fixed seed gives the same result on one machine: training (LoRA init, dropout, data order) and the build's
data preparation, whatever ran before in the process or Python's string-hash seed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from test_cli import _tiny_beir
from test_training import config, ntuple

from negsynth_hf.training import train

ROOT = Path(__file__).resolve().parent.parent


def _adapter_weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items() if "lora_" in k}


def test_training_is_the_same_for_a_seed_whatever_ran_before(tiny_model_path, tmp_path):
    from sentence_transformers import SentenceTransformer

    runs = []
    for i in range(2):
        torch.rand(17)  # other work in the process moved the global RNG (a build, an earlier run)
        model = SentenceTransformer(tiny_model_path)
        result = train(
            ntuple(), base_model=tiny_model_path, config=config(lora_dropout=0.1), output_dir=tmp_path / str(i),
            model=model, save=False, seed=7,
        )  # fmt: skip
        runs.append((result.log_history, model.encode(["a claim about vitamin d"], convert_to_tensor=True)))
    (log_a, emb_a), (log_b, emb_b) = runs
    losses = [[e["loss"] for e in log if "loss" in e] for log in (log_a, log_b)]
    assert losses[0] == losses[1] and losses[0]  # the same LoRA init, dropout masks and batches
    assert torch.equal(emb_a, emb_b)


def test_build_inputs_do_not_depend_on_the_string_hash_seed(tmp_path):
    data = _tiny_beir(tmp_path / "beir")
    code = (
        "import json\n"
        "from negsynth_hf.pipeline.build import _pairs_and_corpus\n"
        "from negsynth_hf.pipeline.sources import load_collection\n"
        "from negsynth_hf.recipe_config import parse_step_args\n"
        f"cfg = parse_step_args('build', ['--dataset', {str(data)!r}, '--corpus_size', '3', '--seed', '5'])\n"
        "pairs, corpus, train_ids, val_ids = _pairs_and_corpus(cfg, load_collection(cfg.data))\n"
        "print(json.dumps([pairs.to_dict(), corpus, train_ids, val_ids]))\n"
    )
    outs = []
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-2000:]
        outs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert outs[0] == outs[1]
