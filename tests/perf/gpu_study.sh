#!/usr/bin/env bash
# The GPU check, one command: the real Snakemake DAG with config/gpu-check.yaml on one GPU
# (1B preset x fp32/fp16/bf16/bnb-int8/bnb-nf4 x batch 1/8/64, the 8B shape in bf16 at batch 8
# and 64, a transformers serving session with Poisson and grouped arrivals at two rates, then
# tables, figures and the findings report), an NVML cross-check against Zeus and a reader in
# another process (tests/perf/gpu_crosscheck.py), and the anchor table beside ML.ENERGY's
# published J/token (tests/perf/gpu_anchor.py). About 8 minutes on an H100/H200 (sizing:
# config/gpu-check.yaml). Clocks and power limits are left as they are.
#
#   tests/perf/gpu_study.sh OUT_DIR              # on a GPU node (or: make gpu-check OUT=DIR)
#   tests/perf/gpu_study.sh OUT_DIR --dry-run    # here, on a CPU: fake NVML, tiny shapes
#
# The node needs python3 with torch, transformers, nvidia-ml-py, aiohttp and pyarrow; the rest
# (Snakemake, polars, altair, Zeus, bitsandbytes, the serving extras) it installs from .whl/,
# which `make gpu-wheels` fills beforehand (tests/perf/gpu_wheels.txt; no network needed). The
# dry run uses this checkout's environment and tests/fake_pynvml instead (never the product path).
#
# OUT_DIR receives at most 8 files (what the device tool returns): gpu_study.log (everything
# printed), crosscheck.csv, anchor.csv, summary.csv, serving.csv, findings.md and
# gpu_study.tar.gz (the tables, the findings report, the HTML figures, the records' JSON and the
# job logs). Exit status: 0 when the DAG ran and every cross-check target was met, else 1.
set -uo pipefail

usage() { echo "usage: $0 OUT_DIR [--dry-run]" >&2; exit 2; }
[[ $# -ge 1 && $# -le 2 ]] || usage
DRY=0
if [[ $# -eq 2 ]]; then [[ $2 == --dry-run ]] || usage; DRY=1; fi
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
OUT=$(mkdir -p "$1" && cd "$1" && pwd) || { echo "cannot create OUT_DIR '$1'" >&2; exit 2; }
PY=${PYTHON:-python3}
WORK=${GPU_STUDY_WORKDIR:-$REPO/.gpu-study}
exec > >(tee "$OUT/gpu_study.log") 2>&1
T0=$SECONDS
stage() { printf '\n== %s (t=%ds)\n' "$1" $((SECONDS - T0)); }
export PYTHONUNBUFFERED=1 PYTHONPATH="$REPO/workflow${PYTHONPATH:+:$PYTHONPATH}"

if [[ $DRY -eq 1 ]]; then
    CONFIG=$REPO/tests/perf/gpu_study_dry.yaml
    CROSS_MODEL=tiny ANCHOR_MODEL=tiny-b ANCHOR_BATCHES=(8) CORES=2 BENCH_THREADS=2
    CROSS_ARGS=(--device cpu --zeus off --batch-sizes 2 --targets 0.3 1.0 --repeats 1
        --input-len 16 --output-len 8)
    # the tests' fake GPU: counters that follow a square wave on the shared monotonic clock
    # (a caller may describe its own in JOULEBENCH_FAKE_NVML, as tests/workflow/test_gpu_study.py does)
    eval "$("$PY" - "$REPO/tests" <<'EOF'
import json, os, shlex, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from fakehw import FAKE_NVML_ENV, SquareWave, fake_nvml_env
spec = json.loads(os.environ.get(FAKE_NVML_ENV) or "{}")
waves = [SquareWave(*p) for p in spec.get("profiles", [])]
log = spec.get("log")  # the caller's log of every counter read, kept
env = fake_nvml_env(waves or [SquareWave(120.0, 380.0, 0.4)], log=Path(log) if log else None)
for key, value in env.items():
    print(f"export {key}={shlex.quote(value)}")
EOF
)"
else
    # a real run measures the real GPU: refuse to start where the tests' fake NVML is in reach
    if [[ -n ${JOULEBENCH_FAKE_NVML:-} || ${PYTHONPATH:-} == *fake_pynvml* ]]; then
        echo "JOULEBENCH_FAKE_NVML or a fake_pynvml on PYTHONPATH is set: a real GPU run would"
        echo "read the tests' fake NVML and record it as nvml. Unset them (or pass --dry-run)."
        exit 2
    fi
    CONFIG=$REPO/config/gpu-check.yaml
    CROSS_MODEL=llama-3.2-1b ANCHOR_MODEL=llama-3.1-8b ANCHOR_BATCHES=(8 64) CORES=$(nproc)
    # the 8B shape (a one-thread CPU job) is written while the 1B benchmarks run: see the sizing
    BENCH_THREADS=$((CORES > 4 ? CORES - 4 : CORES))
    CROSS_ARGS=(--device cuda --zeus on)
    stage "installing the wheels of .whl/ (tests/perf/gpu_wheels.txt)"
    shopt -s nullglob
    WHEELS=("$REPO"/.whl/*.whl)
    if [[ ${#WHEELS[@]} -eq 0 ]]; then
        echo "no wheels in $REPO/.whl: run 'make gpu-wheels' where pip reaches PyPI, first"
        exit 1
    fi
    SITE=${GPU_STUDY_SITE:-/tmp/joulebench-site}
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$SITE" "${WHEELS[@]}" || exit 1
    export PYTHONPATH="$SITE:$PYTHONPATH" PATH="$SITE/bin:$PATH"
fi

stage "machine"
"$PY" - <<'EOF'
import platform
import pynvml
import torch
import transformers

pynvml.nvmlInit()
print(f"python {platform.python_version()}, torch {torch.__version__}, "
      f"transformers {transformers.__version__}, CUDA available: {torch.cuda.is_available()}")
driver = pynvml.nvmlSystemGetDriverVersion()
for i in range(pynvml.nvmlDeviceGetCount()):
    h = pynvml.nvmlDeviceGetHandleByIndex(i)
    limit = pynvml.nvmlDeviceGetPowerManagementLimit(h) / 1000
    print(f"GPU {i}: {pynvml.nvmlDeviceGetName(h)}, driver {driver}, power limit {limit:g} W")
EOF

SM=("$PY" -m snakemake -s "$REPO/Snakefile" -d "$WORK" --configfile "$CONFIG"
    --cores "$CORES" --resources gpu=1 --set-threads "benchmark=$BENCH_THREADS"
    --quiet rules --scheduler greedy --rerun-incomplete --keep-going --nolock)
STATUS=0

stage "the 1B model (the DAG's prepare_model), for the cross-check"
"${SM[@]}" "results/models/$CROSS_MODEL" || exit 1

stage "cross-check: joulebench NVML vs Zeus vs another process"
"$PY" "$REPO/tests/perf/gpu_crosscheck.py" --model-dir "$WORK/results/models/$CROSS_MODEL" \
    --out "$OUT" "${CROSS_ARGS[@]}" || STATUS=1
rm -f "$OUT/crosscheck_samples.csv"

stage "the study: snakemake with $(basename "$CONFIG")"
"${SM[@]}" || STATUS=1

R=$WORK/results
stage "anchor: $ANCHOR_MODEL bf16 beside ML.ENERGY"
"$PY" "$REPO/tests/perf/gpu_anchor.py" --summary "$R/tables/summary.parquet" \
    --model "$ANCHOR_MODEL" --batch-sizes "${ANCHOR_BATCHES[@]}" --out "$OUT/anchor.csv" \
    || STATUS=1

stage "findings (results/report/findings.md)"
grep -E '^#+ |\*\*(holds|partly holds|does not hold|missing data)' "$R/report/findings.md" \
    || echo "no findings report"

for f in tables/summary.csv tables/serving.csv report/findings.md; do
    [[ -f $R/$f ]] && cp "$R/$f" "$OUT/"
done
(cd "$WORK" && tar -czf "$OUT/gpu_study.tar.gz" --exclude='*.trace.parquet' \
    results/tables results/report results/plots results/records results/serving \
    results/variants/*/*.json logs 2>/dev/null)
echo
ls -l "$OUT"
printf '\ngpu_study: %s in %ds\n' "$([[ $STATUS -eq 0 ]] && echo ok || echo FAILED)" \
    $((SECONDS - T0))
exit $STATUS
