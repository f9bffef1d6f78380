"""Fetch the wheels tests/perf/gpu_study.sh installs on a GPU node with no network (``.whl/``).

The node has python 3.12 with torch, transformers, nvidia-ml-py, aiohttp and pyarrow but not
the rest of joulebench's stack; ``tests/perf/gpu_wheels.txt`` names what it lacks, pinned. This
downloads each for CPython 3.12 on manylinux x86-64 (``pip download --no-deps``), builds the
one that PyPI ships only as a source archive (connection-pool, pure Python), keeps only the
CUDA 13 libraries of bitsandbytes (the node's torch is cu130; the other CUDA builds are 100 MB
unpacked), and re-compresses the two largest wheels with LZMA, which ``zipfile`` — hence pip —
reads like deflate (same files, same RECORD hashes). The folder must stay under 60 MB: it
travels with the working tree (64 MiB in all). Prints each wheel's size; exits 1 over budget.

    .venv/bin/python tests/perf/gpu_wheels.py          # or: make gpu-wheels
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
LIST = HERE / "gpu_wheels.txt"
BUDGET_BYTES = 60 * 10**6
PLATFORMS = [f"manylinux_2_{n}_x86_64" for n in (17, 24, 27, 28, 31, 34)]
PLATFORMS += ["manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"]
#: Built from their source archive (no wheel on PyPI); pure Python, so any builder will do.
FROM_SOURCE = {"connection-pool"}
#: bitsandbytes libraries kept: the node's torch is built for CUDA 13.0.
BNB_KEEP = re.compile(r"libbitsandbytes_cuda13\d\.so$")
#: Re-compressed with LZMA (the largest; deflate → LZMA saves ~40% on their .so files).
LZMA = ("polars_runtime_32", "bitsandbytes", "sqlalchemy", "pydantic_core")


#: Python packages the GPU node's image already holds, as far as joulebench's stack needs them
#: (the device notes' KINDS.md, nvidia-h200).
NODE_HAS = frozenset(
    (
        "accelerate", "aiohttp", "anyio", "certifi", "charset-normalizer", "filelock", "fsspec",
        "h11", "hf-xet", "httpcore", "httpx", "huggingface-hub", "idna", "jinja2", "markupsafe",
        "numpy", "nvidia-ml-py", "packaging", "pandas", "psutil", "pyarrow", "pyyaml", "regex",
        "requests", "rich", "safetensors", "scikit-learn", "tabulate", "tokenizers", "torch",
        "tqdm", "transformers", "typing-extensions", "urllib3",
    )
)  # fmt: skip
#: joulebench dependencies deliberately not carried, and why.
LEFT_OUT = {
    "vl-convert-python": "PNG/SVG renderer, 33.5 MB: the check writes HTML figures only",
    "pulp": "16 MB of CBC binaries (Snakemake's ILP scheduler); the check runs --scheduler greedy",
    "compressed-tensors": "the ct-* variants, not in the GPU check",
    "snakemake-executor-plugin-slurm": "the check runs Snakemake locally",
}


def requirements(path: Path = LIST) -> list[str]:
    """The pinned ``name==version`` lines of the wheel list."""
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


def fetch(req: str, dest: Path) -> None:
    name = req.split("==")[0]
    if name in FROM_SOURCE:
        cmd = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dest), req]
    else:
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:"]
        cmd += ["--python-version", "3.12", "--implementation", "cp", "-d", str(dest), req]
        for p in PLATFORMS:
            cmd += ["--platform", p]
    subprocess.run(cmd, check=True)


def record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def repack(wheel: Path, keep: re.Pattern[str] | None = None) -> None:
    """Rewrite ``wheel`` LZMA-compressed; with ``keep``, drop the .so files it does not match."""
    tmp = wheel.with_suffix(".tmp")
    with zipfile.ZipFile(wheel) as zin, zipfile.ZipFile(tmp, "w", zipfile.ZIP_LZMA) as zout:
        names = [
            n for n in zin.namelist() if not (keep and n.endswith(".so") and not keep.search(n))
        ]
        record = next(n for n in names if n.endswith(".dist-info/RECORD"))
        for n in names:
            if n != record:
                zout.writestr(zin.getinfo(n), zin.read(n), compress_type=zipfile.ZIP_LZMA)
        rows = [
            row
            for row in zin.read(record).decode().splitlines()
            if row.split(",", 1)[0] in names or row.startswith(record)
        ]
        zout.writestr(record, "\n".join(rows) + "\n", compress_type=zipfile.ZIP_DEFLATED)
    os.replace(tmp, wheel)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dest", type=Path, default=HERE.parent.parent / ".whl")
    args = ap.parse_args(argv)
    args.dest.mkdir(exist_ok=True)
    wanted = requirements()
    with tempfile.TemporaryDirectory(dir=args.dest.parent) as tmp:
        work = Path(tmp)
        for req in wanted:
            fetch(req, work)
        for wheel in work.glob("*.whl"):
            if wheel.name.startswith(LZMA):
                repack(wheel, BNB_KEEP if wheel.name.startswith("bitsandbytes") else None)
        for old in args.dest.glob("*.whl"):
            old.unlink()
        for wheel in sorted(work.glob("*.whl")):
            os.replace(wheel, args.dest / wheel.name)
    wheels = sorted(args.dest.glob("*.whl"), key=lambda p: p.stat().st_size, reverse=True)
    total = sum(w.stat().st_size for w in wheels)
    for w in wheels:
        print(f"{w.stat().st_size / 1e6:>8.2f} MB  {w.name}")
    print(f"{total / 1e6:>8.2f} MB  in {len(wheels)} wheels ({len(wanted)} listed) in {args.dest}")
    if len(wheels) != len(wanted):
        print(f"expected {len(wanted)} wheels, found {len(wheels)}")
        return 1
    if total > BUDGET_BYTES:
        print(f"over the {BUDGET_BYTES / 1e6:.0f} MB budget")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
