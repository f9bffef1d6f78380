"""Model sources: prepare one ``models:`` entry of the config into a model directory, from an
architecture preset (:mod:`~joulebench.models.synthetic`), the hub (:mod:`~joulebench.models.hub`)
or a local directory.

Every source ends as a normal Hugging Face model directory (config.json, safetensors weights,
tokenizer.json), so every engine loads it the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from joulebench.core.errors import ConfigError
from joulebench.models.hub import download
from joulebench.models.prepared import remove_path
from joulebench.models.shapes import check_declared_quantization, check_local
from joulebench.models.synthetic import synthesize


def link_local(out_dir: Path, path: Path) -> Path:
    """Expose a user's model directory under results/ as a symlink (nothing is copied)."""
    check_local(path)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    if out_dir.is_symlink() or out_dir.exists():
        remove_path(out_dir)
    out_dir.symlink_to(path.resolve(), target_is_directory=True)
    return out_dir


def prepare(
    spec: dict[str, Any], out_dir: Path, key: str = "models[]", cache: Path | None = None
) -> Path:
    """Prepare one model (a ``models:`` entry of the config, ``key``) into ``out_dir``.

    A hub model goes through the shared cache ``cache`` (default:
    :func:`~joulebench.models.hub.cache_dir`). A hub or local checkpoint must ship the
    quantization its entry declares (and none if it declares none); see
    :func:`~joulebench.models.shapes.check_declared_quantization`.
    """
    source = spec["source"]
    if source == "synthetic":
        return synthesize(
            out_dir,
            spec["architecture"],
            spec.get("overrides"),
            spec.get("seed", 0),
            spec.get("tokenizer_vocab_size"),
        )
    if source == "hub":
        where = f"{key} ('{spec.get('name', spec['repo'])}')"
        prepared = download(out_dir, spec["repo"], spec["revision"], cache, where)
    elif source == "local":
        prepared = link_local(out_dir, Path(spec["path"]))
    else:
        raise ConfigError(f"{key}.source", f"unknown source '{source}'")
    try:
        check_declared_quantization(prepared, spec.get("quantization"), f"{key}.quantization")
    except ConfigError:
        remove_path(prepared)  # a wrong checkpoint must not look prepared
        raise
    return prepared
