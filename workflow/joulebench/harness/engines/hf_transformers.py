"""The Hugging Face transformers engine (CPU and CUDA), as the seed study used it."""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Callable
from typing import Any

from joulebench.harness.engines.base import (
    GenerationError,
    checkpoint_quant_method,
    plan_load,
    process_peak_rss,
    random_prompt_ids,
)
from joulebench.models.variants import apply_transform, torch_dtype

log = logging.getLogger(__name__)

#: bitsandbytes logs "MatMul8bitLt: inputs will be cast ... to float16" on every int8 matmul
#: when the compute dtype is not fp16 (the seed study's fp32 default): tens of thousands of
#: identical lines per run, written while the meter is on.
BNB_CHATTY_LOGGER = "bitsandbytes.autograd._functions"


class OncePerMessage(logging.Filter):
    """Let each distinct message through once; drop its repeats."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message in self.seen:
            return False
        self.seen.add(message)
        return True


def quiet_repeated_bnb_warnings() -> None:
    """Install one :class:`OncePerMessage` on bitsandbytes' matmul logger (idempotent)."""
    chatty = logging.getLogger(BNB_CHATTY_LOGGER)
    if not any(isinstance(f, OncePerMessage) for f in chatty.filters):
        chatty.addFilter(OncePerMessage())


class TransformersEngine:
    """transformers ``generate`` with greedy decoding and a fixed number of new tokens."""

    name = "transformers"

    def __init__(
        self,
        model_dir: str,
        precision: str,
        device: str,
        threads: int = 0,
        variant: dict[str, Any] | None = None,
    ) -> None:
        self.model_dir = model_dir
        plan = plan_load(self.name, model_dir, precision, device, variant)
        self.precision, self.device = plan.precision, plan.device
        self.load_dir, self.settings = plan.load_dir, plan.settings
        self.threads = threads
        self.model: Any = None
        self.tokenizer: Any = None

    def _from_pretrained_kwargs(self) -> dict[str, Any]:
        """dtype, and the bitsandbytes quantization config for bnb-* variants."""
        dtype = self.settings["dtype"]
        kwargs: dict[str, Any] = {"dtype": dtype if dtype == "auto" else torch_dtype(dtype)}
        bnb = self.settings.get("bitsandbytes")
        if bnb is not None:
            from transformers import BitsAndBytesConfig

            options = dict(bnb)
            if "bnb_4bit_compute_dtype" in options:
                options["bnb_4bit_compute_dtype"] = torch_dtype(options["bnb_4bit_compute_dtype"])
            kwargs["quantization_config"] = BitsAndBytesConfig(**options)
            kwargs["device_map"] = {"": self.device}  # bitsandbytes quantizes while placing
        elif checkpoint_quant_method(self.load_dir) == "compressed-tensors":
            from transformers import CompressedTensorsConfig

            # decompress while loading, not on the first (measured) forward pass
            kwargs["quantization_config"] = CompressedTensorsConfig(dequantize=True)
        return kwargs

    def load(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

        if self.threads > 0:
            torch.set_num_threads(self.threads)
        log.info("loading %s as %s on %s", self.load_dir, self.precision.name, self.device)
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        kwargs = self._from_pretrained_kwargs()
        if self.settings.get("bitsandbytes") is not None:
            quiet_repeated_bnb_warnings()
        with warnings.catch_warnings():
            # intended: our quantization_config only sets how a compressed-tensors one loads
            warnings.filterwarnings("ignore", message="You passed `quantization_config`")
            model = AutoModelForCausalLM.from_pretrained(self.load_dir, **kwargs)
        if "device_map" not in kwargs:
            model = model.to(self.device)
        model = apply_transform(self.precision, model.eval())
        self.model = model
        pad = self.tokenizer.pad_token_id
        if pad is None:
            pad = self.tokenizer.eos_token_id if self.tokenizer.eos_token_id is not None else 0
        self._gen = GenerationConfig(
            do_sample=False,
            num_beams=1,
            pad_token_id=pad,
            eos_token_id=self.tokenizer.eos_token_id,
            bos_token_id=self.tokenizer.bos_token_id,
        )
        self._configs: dict[int, Any] = {}

    def make_inputs(self, batch_size: int, input_len: int, seed: int) -> dict[str, Any]:
        import torch

        prompts = random_prompt_ids(
            self.tokenizer, self.model.config.vocab_size, batch_size, input_len, seed
        )
        ids = torch.tensor(prompts, dtype=torch.long, device=self.device)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}

    def generate(
        self,
        inputs: dict[str, Any],
        new_tokens: int,
        on_first_token: Callable[[], None] | None = None,
    ) -> list[int]:
        import torch

        streamer = _FirstTokenStreamer(on_first_token) if on_first_token else None
        with torch.inference_mode():
            out = self.model.generate(
                **inputs, generation_config=self._config_for(new_tokens), streamer=streamer
            )
        counts = real_new_tokens(out[:, inputs["input_ids"].shape[1] :], self._gen.eos_token_id)
        if any(n != new_tokens for n in counts):
            raise GenerationError(f"asked for {new_tokens} new tokens per prompt, got {counts}")
        self.synchronize()
        return counts

    def _config_for(self, new_tokens: int) -> Any:
        """A generation config that makes exactly ``new_tokens`` tokens (EOS cannot stop it)."""
        if new_tokens not in self._configs:
            cfg = copy.deepcopy(self._gen)
            cfg.max_new_tokens = new_tokens
            cfg.min_new_tokens = new_tokens
            self._configs[new_tokens] = cfg
        return self._configs[new_tokens]

    def synchronize(self) -> None:
        if self.device == "cuda":
            import torch

            torch.cuda.synchronize()

    def reset_peak_memory(self) -> None:
        if self.device == "cuda":
            import torch

            torch.cuda.reset_peak_memory_stats()

    def peak_memory(self) -> dict[str, Any]:
        if self.device == "cuda":
            import torch

            return {"bytes": int(torch.cuda.max_memory_allocated()), "kind": "cuda_max_allocated"}
        return process_peak_rss()

    def describe(self) -> dict[str, Any]:
        import torch

        return {
            "engine": self.name,
            "device": self.device,
            "dtype": str(self.model.dtype).removeprefix("torch."),
            "transform": self.precision.kind,
            "load": self.settings,
            "checkpoint": self.load_dir,
            "torch_threads": torch.get_num_threads(),
            "attn_implementation": getattr(self.model.config, "_attn_implementation", None),
            "quantized_execution": compressed_tensors_execution(self.model),
        }


def compressed_tensors_execution(model: Any) -> dict[str, Any] | None:
    """How transformers runs a compressed-tensors checkpoint, read off the loaded modules.

    transformers has no integer or FP8 matmul kernels for these checkpoints on CPU (nor, except
    opt-in FP8 on recent GPUs, on CUDA): compressed-tensors decompresses the weights to dense
    tensors in the model dtype, and a quantized scheme's activations are quantized and
    dequantized around each dense matmul (an emulation that costs extra work, not a saving).
    """
    modules = [m for m in model.modules() if getattr(m, "quantization_scheme", None) is not None]
    if not modules:
        return None
    weight_dtypes = sorted({str(m.weight.dtype).removeprefix("torch.") for m in modules})
    qdq = sorted(
        {
            f"{a.type}{a.num_bits} per {a.strategy}"
            for m in modules
            if (a := m.quantization_scheme.input_activations) is not None
        }
    )
    dense = all(d in ("float32", "float16", "bfloat16") for d in weight_dtypes)
    return {
        "library": "compressed-tensors",
        "quantized_modules": len(modules),
        "status": sorted({str(m.quantization_status.value) for m in modules}),
        "weight_dtypes": weight_dtypes,
        "activation_quantize_dequantize": qdq,
        "summary": (
            "weights decompressed to dense at load; dense matmuls"
            + (f", activations quantized-dequantized ({', '.join(qdq)})" if qdq else "")
            if dense
            else "quantized weights kept in memory"
        ),
    }


def real_new_tokens(generated: Any, eos: int | list[int] | None) -> list[int]:
    """Tokens each row of ``generated`` (batch × new positions) really made.

    ``generate`` pads a batch to its longest row: a row that stopped early holds its EOS and
    then padding, so its real length ends at its first EOS (the EOS itself counts). A width
    narrower than asked (the whole batch stopped early) shows in every row's count.
    """
    import torch

    width = int(generated.shape[1])
    stops = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
    if not stops or width == 0:
        return [width] * int(generated.shape[0])
    is_stop = torch.isin(generated, torch.tensor(stops, device=generated.device))
    first = is_stop.int().argmax(dim=1) + 1
    counts = torch.where(is_stop.any(dim=1), first, torch.full_like(first, width))
    return [int(n) for n in counts.tolist()]


class _FirstTokenStreamer:
    """A transformers streamer that calls back when the first new token reaches the host.

    ``generate`` hands a streamer the prompt first, then each step's tokens (already copied to
    the host, so on CUDA the prefill kernels have finished): the second ``put`` is the
    prefill/decode boundary.
    """

    def __init__(self, callback: Callable[[], None]) -> None:
        self._callback = callback
        self._puts = 0

    def put(self, value: Any) -> None:
        self._puts += 1
        if self._puts == 2:
            self._callback()

    def end(self) -> None:
        pass
