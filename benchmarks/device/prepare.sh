#!/bin/bash
# Prepare the folder .gpu/ (git-ignored via .git/info/exclude) that benchmarks/device/quality_grid.sh needs on a
# lent GPU machine with no network and a 64 MiB transfer limit (this workplace's `device` tool):
#   - wheels the machine's image lacks or has in other versions (py3.12, manylinux); its image already has numba,
#     llvmlite, scipy, pandas, seaborn, tabulate and rich, which ranx needs,
#   - a stand-in for ir_datasets (ranx imports it at import time, only for Qrels.from_ir_datasets, which nothing here
#     calls; the real package pulls a dozen more wheels),
#   - the embedded all-MiniLM-L6-v2 with its weights stored as fp16 (88 MB fp32 does not fit; the grid script
#     converts them back to fp32 before anything runs, so every variant starts from the same fp16-rounded base),
#   - the three judged collections as one tarball (read from ../shared/data, never committed).
# The LLM work is done here first (`python benchmarks/quality.py --collection <c> --build-only`); the device run
# carries outputs/quality (the built sets; the LLM responses travel with the repository anyway).
set -euo pipefail
cd "$(dirname "$0")/../.."
grep -qx "/.gpu/" .git/info/exclude || echo "/.gpu/" >> .git/info/exclude
rm -rf .gpu && mkdir -p .gpu/whl .gpu/stubs/ir_datasets
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .gpu/whl \
  datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 \
  typing-inspection==0.4.5 sentence-transformers==6.2.0 peft==0.21.2 ranx==0.3.21 orjson==3.13.0 lz4==4.4.5 \
  cbor2==6.3.0 fastparquet==2026.9.0 cramjam==2.14.0
cat > .gpu/stubs/ir_datasets/__init__.py <<'PY'
"""Stand-in for ir_datasets on the device machine: ranx imports it at import time, and only Qrels.from_ir_datasets
(never called by negsynth_hf) uses it."""
PY
src=$(.venv/bin/python -c "from negsynth_hf.paths import embedded_retriever_path; print(embedded_retriever_path())")
cp -r "$src" .gpu/all-MiniLM-L6-v2
.venv/bin/python - <<'PY'
import json
from safetensors.torch import load_file, save_file
p = ".gpu/all-MiniLM-L6-v2/model.safetensors"
save_file({k: v.half() for k, v in load_file(p).items()}, p, metadata={"format": "pt"})
c = json.load(open(".gpu/all-MiniLM-L6-v2/config.json"))
c["dtype"] = "float32"  # load as fp32 even where the fp16 file is read directly
json.dump(c, open(".gpu/all-MiniLM-L6-v2/config.json", "w"), indent=2)
PY
data=$(.venv/bin/python -c "from benchmarks.reporting import data_dir; print(data_dir())")
tar czf .gpu/data.tgz -C "$(dirname "$data")" "$(basename "$data")/cisi" "$(basename "$data")/cranfield" "$(basename "$data")/scifact"
du -sh .gpu outputs/quality 2>/dev/null || true
