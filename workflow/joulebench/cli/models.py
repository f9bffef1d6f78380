"""The model commands: `prepare-model` (synthesize, download or link one), `variant` and
`quantize` (a precision variant and its manifest), `presets` (the synthetic architectures)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from joulebench.cli.options import (
    Names,
    checkpoint_precisions,
    config_section,
    names_option,
    precision_names,
)
from joulebench.core import inputs
from joulebench.core.errors import ConfigError, JoulebenchError

log = logging.getLogger("joulebench")

CACHE_HELP = "the shared model cache (default: $JOULEBENCH_CACHE_DIR or ~/.cache/joulebench)"


def cmd_prepare_model(args: argparse.Namespace) -> None:
    from joulebench.models.hub import cache_dir
    from joulebench.models.sources import prepare
    from joulebench.study.config import check_model_entry

    try:
        spec = check_model_entry(inputs.json_object(args.spec_json, "--spec-json"), args.config_key)
    except ConfigError as err:
        raise inputs.ArgumentError(f"--spec-json ({err.key})", err.message) from None
    prepare(spec, Path(args.out), key=args.config_key, cache=cache_dir(args.cache_dir))
    log.info("model '%s' ready in %s", spec["name"], args.out)


def cmd_variant(args: argparse.Namespace) -> None:
    from joulebench.core.atomic import write_json
    from joulebench.models.precisions import get_precision
    from joulebench.models.variants import variant_manifest

    model_dir = inputs.model_dir(args.model_dir, "--model-dir")
    precision = get_precision(args.precision, "--precision")
    if precision.writes_checkpoint:
        raise JoulebenchError(
            f"{precision.name} is a checkpoint the workflow writes; make it (and its manifest) "
            f"with `joulebench quantize --model-dir {args.model_dir} --precision "
            f"{precision.name} --out-dir DIR --manifest {args.out}`"
        )
    quantization = config_section("quantization", args.quantization_json, "--quantization-json")
    manifest = variant_manifest(model_dir, precision, quantization)
    write_json(args.out, manifest)
    log.info("variant %s: %s", args.precision, manifest["sizes"])


def cmd_quantize(args: argparse.Namespace) -> None:
    from joulebench.core.atomic import write_json
    from joulebench.models.hub import cache_dir
    from joulebench.models.precisions import get_precision
    from joulebench.models.quantize import cached_checkpoint
    from joulebench.models.variants import variant_manifest

    model_dir = inputs.model_dir(args.model_dir, "--model-dir")
    precision = get_precision(args.precision, "--precision")
    if not precision.writes_checkpoint:
        raise JoulebenchError(
            f"{precision.name} writes no checkpoint; describe it with `joulebench variant`"
        )
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    quantization = config_section("quantization", args.quantization_json, "--quantization-json")
    written = cached_checkpoint(
        model_dir, precision, quantization, Path(args.out_dir), cache_dir(args.cache_dir)
    )
    manifest = variant_manifest(
        model_dir,
        precision,
        quantization,
        checkpoint=written.path,
        made_by=written.made_by,
        recipe=written.recipe,
    )
    write_json(args.manifest, manifest)
    log.info("variant %s in %s: %s", precision.name, written.path, manifest["sizes"])


def cmd_presets(args: argparse.Namespace) -> None:
    from joulebench.models.shapes import PRESETS

    for name, arch in PRESETS.items():
        print(
            f"{name:14s} {arch['model_type']:6s} hidden {arch['hidden_size']:5d}  "
            f"layers {arch['num_hidden_layers']:3d}  vocab {arch['vocab_size']}"
        )


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prepare-model", help="synthesize, download or link one model")
    p.add_argument("--spec-json", required=True, help="one `models:` entry as JSON")
    p.add_argument("--out", required=True)
    p.add_argument(
        "--config-key", default="models[]", help="the entry's key in errors, e.g. models[0]"
    )
    p.add_argument("--cache-dir", help=CACHE_HELP)
    p.set_defaults(func=cmd_prepare_model)

    v = sub.add_parser("variant", help="describe a precision variant of a model (variant.json)")
    v.add_argument("--model-dir", required=True)
    names_option(v, "--precision", names=Names(precision_names), required=True, help="%(names)s")
    v.add_argument("--quantization-json", help="the config's quantization: section, as JSON")
    v.add_argument("--out", required=True)
    v.set_defaults(func=cmd_variant)

    q = sub.add_parser(
        "quantize",
        help="write a ct-* variant: a compressed-tensors checkpoint and its variant.json",
    )
    q.add_argument("--model-dir", required=True, help="the source model directory")
    q.add_argument(
        "--precision",
        required=True,
        choices=Names(checkpoint_precisions),
        metavar="PRECISION",
        help="one of %(choices)s",
    )
    q.add_argument("--quantization-json", help="the config's quantization: section, as JSON")
    q.add_argument("--out-dir", required=True, help="the checkpoint directory to write")
    q.add_argument("--manifest", required=True, help="where to write variant.json")
    q.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    q.add_argument("--cache-dir", help=CACHE_HELP)
    q.set_defaults(func=cmd_quantize)

    r = sub.add_parser("presets", help="list the synthetic architecture presets")
    r.set_defaults(func=cmd_presets)
