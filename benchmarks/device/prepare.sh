#!/bin/bash
# Prepare the folder .gpu/ (git-ignored via .git/info/exclude) that benchmarks/device/quality_grid.sh needs on a
# lent GPU machine with no network and a 64 MiB transfer limit (this workplace's `device` tool):
#   - wheels the machine's image lacks or has in other versions (py3.12, manylinux),
#   - the embedded all-MiniLM-L6-v2 with its weights stored as fp16 (88 MB fp32 does not fit; the grid script
#     converts them back to fp32 before anything runs, so every variant starts from the same fp16-rounded base),
#   - the three judged collections as one tarball (read from ../shared/data, never committed).
# The LLM work is done here first: `python benchmarks/quality.py --collection <c> --build-only` for each collection,
# then the device run carries outputs/quality/<c>/builds.
set -euo pipefail
cd "$(dirname "$0")/../.."
grep -qx "/.gpu/" .git/info/exclude || echo "/.gpu/" >> .git/info/exclude
rm -rf .gpu && mkdir -p .gpu/whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .gpu/whl \
  datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 \
  typing-inspection==0.4.5 sentence-transformers==6.2.0 peft==0.21.2
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
data=$(.venv/bin/python -c "from negsynth_hf.paths import shared_data_dir; print(shared_data_dir())")
tar czf .gpu/data.tgz -C "$(dirname "$data")" "$(basename "$data")/cisi" "$(basename "$data")/cranfield" "$(basename "$data")/scifact"
du -sh .gpu
