#!/bin/bash
# Device run of the retrieval-quality grid (prepared by benchmarks/device/prepare.sh): validation selection + every variant
# x 3 seeds, one process per collection named on the command line, in parallel on one GPU. The built sets come
# from the CPU machine (carry outputs/quality). Records already in the carried results are skipped, so a grid that
# outlasts one device command (10 minutes) is finished by the next with the returned results carried back in. Its
# files are quality_<c>_gpu.* (TAG=_gpu): device scores are not comparable run for run with the CPU ones:
#   device run, carry [".gpu", "outputs/quality", "benchmarks/results"]:
#     bash benchmarks/device/quality_grid.sh cranfield scifact
# then here: tar xzf <files_at>/results.tgz -C benchmarks/results --strip-components 1
set -u
start=$(date +%s)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/.gpu/stubs:$PWD HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
mkdir -p /tmp/data && tar xzf .gpu/data.tgz -C /tmp && export NEGSYNTH_DATA_DIR=/tmp/data NEGSYNTH_CACHE=/tmp/nc
python3 - <<'PY' || exit 1
from safetensors.torch import load_file, save_file
p = ".gpu/all-MiniLM-L6-v2/model.safetensors"
save_file({k: v.float() for k, v in load_file(p).items()}, p, metadata={"format": "pt"})
import torch, datasets, sentence_transformers, transformers, peft, ranx
from sentence_transformers import SentenceTransformer
m = SentenceTransformer(".gpu/all-MiniLM-L6-v2")
print("versions", torch.__version__, datasets.__version__, sentence_transformers.__version__, transformers.__version__, peft.__version__, ranx.__version__, next(m.parameters()).dtype, m.device, flush=True)
PY
echo "setup $(( $(date +%s) - start )) s"
mkdir -p $OUT/res && cp -r benchmarks/results/. $OUT/res/ 2>/dev/null
for c in "$@"; do
  timeout ${GRID_TIMEOUT:-520} python3 benchmarks/quality.py --collection $c --base-model $PWD/.gpu/all-MiniLM-L6-v2 \
    --select-steps 15 30 60 --select-learning-rates 2e-4 1e-3 --threads 4 --work-dir outputs/quality/$c \
    --tag "${TAG:-_gpu}" --results-dir $OUT/res > $OUT/res/$c.log 2>&1 &
done
wait
echo "grid $(( $(date +%s) - start )) s"
tail -n 30 $OUT/res/*.log | grep -v "it/s\]" | tail -n 60
cd $OUT && tar czf results.tgz --exclude='*.png' res && rm -rf res
