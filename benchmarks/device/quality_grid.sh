#!/bin/bash
# Device run for issue #7 (prepared by benchmarks/device/prepare.sh): validation selection + 3 seeds x 7 variants
# for the three collections, one process each, in parallel on one GPU. Builds come from the CPU machine
# (outputs/quality/*/builds). Run there as `bash benchmarks/device/quality_grid.sh` with .gpu and the builds carried.
set -u
start=$(date +%s)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
mkdir -p /tmp/data && tar xzf .gpu/data.tgz -C /tmp && export NEGSYNTH_DATA_DIR=/tmp/data NEGSYNTH_CACHE=/tmp/nc
python3 - <<'PY' || exit 1
from safetensors.torch import load_file, save_file
p = ".gpu/all-MiniLM-L6-v2/model.safetensors"
save_file({k: v.float() for k, v in load_file(p).items()}, p, metadata={"format": "pt"})
import torch, datasets, sentence_transformers, transformers, peft
from sentence_transformers import SentenceTransformer
m = SentenceTransformer(".gpu/all-MiniLM-L6-v2")
print("versions", torch.__version__, datasets.__version__, sentence_transformers.__version__, transformers.__version__, peft.__version__, next(m.parameters()).dtype, m.device, flush=True)
PY
echo "setup $(( $(date +%s) - start )) s"
mkdir -p $OUT/res
for c in cisi cranfield scifact; do
  timeout ${GRID_TIMEOUT:-470} python3 benchmarks/quality.py --collection $c --base-model $PWD/.gpu/all-MiniLM-L6-v2 \
    --select-steps 15 50 --select-learning-rates 2e-4 1e-3 --threads 4 --results-dir $OUT/res > $OUT/res/$c.log 2>&1 &
done
wait
echo "grid $(( $(date +%s) - start )) s"
tail -n 30 $OUT/res/*.log | grep -v "it/s\]" | tail -n 60
cd $OUT && tar czf results.tgz res && rm -rf res
