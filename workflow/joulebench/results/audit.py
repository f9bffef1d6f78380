"""The study-wide provenance audit: can the rows of one table be compared at all?

One row per result record (benchmark or serving): configuration, code hash, git commit and dirty
flag, library versions, host, GPU, driver, power limit and meter source. Flags name what makes
rows incomparable: mixed library or driver versions, different GPU models or power limits, code
hashes other than the checkout's (or several), uncommitted changes, estimated energy mixed with
measured energy. ``verdict`` is the one line the findings report opens with.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from joulebench.core.errors import JoulebenchError
from joulebench.provenance.record import TRACKED_PACKAGES

#: The flags, in report order, and what each says is wrong.
FLAGS = {
    "mixed-libraries": "mixed library versions",
    "mixed-drivers": "mixed GPU driver versions",
    "mixed-gpus": "different GPU models",
    "mixed-power-limits": "different GPU power limits",
    "code-hash": "code hash differs from the checkout's",
    "mixed-code-hashes": "records made by different code",
    "dirty": "made from a tree with uncommitted changes",
    "mixed-energy": "estimated energy mixed with measured energy",
}


@dataclass(frozen=True)
class Flag:
    """One reason the rows of a table are not comparable, with the records it concerns."""

    kind: str
    detail: str

    def text(self) -> str:
        return f"{FLAGS[self.kind]}: {self.detail}"


@dataclass
class Audit:
    """The audit table (one row per record), its flags and the one-line verdict."""

    rows: pl.DataFrame
    flags: list[Flag] = field(default_factory=list)
    checkout_hash: str | None = None

    @property
    def verdict(self) -> str:
        n = self.rows.height
        hosts = self.rows["host"].drop_nulls().n_unique()
        sources = ", ".join(sorted(self.rows["meter_source"].drop_nulls().unique()))
        where = f"{_count(n, 'record')}, {_count(hosts, 'host')}, energy: {sources or '-'}"
        if not self.flags:
            return f"Provenance audit: comparable — {where}; nothing flagged."
        kinds = "; ".join(FLAGS[f.kind] for f in self.flags)
        flags = _count(len(self.flags), "flag")
        return f"Provenance audit: NOT comparable — {where}; {flags}: {kinds}."

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "checkout_code_hash": self.checkout_hash,
            "flags": [{"kind": f.kind, "text": f.text()} for f in self.flags],
            "records": self.rows.to_dicts(),
        }


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' if n != 1 else ''}"


def is_record(data: Any) -> bool:
    """A benchmark or serving result record (not a variant manifest or a model config)."""
    return isinstance(data, dict) and "config_id" in data and "provenance" in data


def load(paths: Iterable[str | Path]) -> list[tuple[str, dict[str, Any]]]:
    """Records from files and directories (searched for *.json); other JSON files are skipped.

    A path that does not exist, or a file named directly that is not a record, is an error.
    """
    found: list[tuple[str, dict[str, Any]]] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            for file in sorted(path.rglob("*.json")):
                data = _read(file)
                if is_record(data):
                    found.append((str(file), data))
        elif path.is_file():
            data = _read(path)
            if not is_record(data):
                raise JoulebenchError(
                    f"{path}: not a result record (a record has config_id and provenance)"
                )
            found.append((str(path), data))
        else:
            raise JoulebenchError(f"{path}: no such file or directory")
    if not found:
        names = ", ".join(str(p) for p in paths)
        raise JoulebenchError(f"no result records under {names}")
    return found


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise JoulebenchError(f"{path}: cannot be read as JSON ({err})") from None


def _devices(prov: dict[str, Any]) -> list[dict[str, Any]]:
    return (prov.get("gpu") or {}).get("devices") or []


def _joined(values: Iterable[Any]) -> str | None:
    parts = [str(v) for v in values if v is not None]
    return ", ".join(parts) if parts else None


def row(path: str, record: dict[str, Any]) -> dict[str, Any]:
    """One record's audit row."""
    prov = record.get("provenance") or {}
    git, host, torch = prov.get("git") or {}, prov.get("host") or {}, prov.get("torch") or {}
    devices = _devices(prov)
    gpu_names = [d.get("name") for d in devices] or torch.get("gpus") or []
    meter = record.get("meter_source") or (record.get("meter") or {}).get("source")
    packages = prov.get("packages") or {}
    return {
        "record": path,
        "kind": "serving" if "experiment" in record else "benchmark",
        "config_id": record.get("config_id"),
        "config_hash": record.get("config_hash"),
        "status": record.get("status", "ok"),
        "code_hash": prov.get("code_hash"),
        "git_commit": git.get("commit"),
        "dirty": git.get("dirty"),
        "joulebench_version": prov.get("joulebench_version"),
        "host": host.get("hostname"),
        "cpu": host.get("cpu"),
        "cpu_threads": torch.get("cpu_threads"),
        "gpu": _joined(gpu_names),
        "driver": (prov.get("gpu") or {}).get("driver"),
        "power_limit_w": _joined(d.get("power_limit_w") for d in devices),
        "meter_source": meter,
        **{f"pkg:{name}": packages.get(name) for name in TRACKED_PACKAGES},
    }


def _spread(rows: pl.DataFrame, column: str) -> str | None:
    """``a (3), b (1)`` when ``column`` has more than one value across rows, else None."""
    counts = Counter(v for v in rows[column].to_list() if v is not None)
    if len(counts) < 2:
        return None
    return ", ".join(f"{v} ({n})" for v, n in sorted(counts.items(), key=lambda kv: str(kv[0])))


def audit(records: list[tuple[str, dict[str, Any]]], checkout_hash: str | None = None) -> Audit:
    """The audit of ``records`` (path, record); ``checkout_hash`` is the bench code hash of the
    checkout the tables are made with (None: not compared)."""
    rows = pl.DataFrame([row(p, r) for p, r in records], infer_schema_length=None)
    typed = {"dirty": pl.Boolean, "cpu_threads": pl.Int64}
    rows = rows.with_columns(  # a column no record fills has no type yet: give it its own
        pl.col(c).cast(typed.get(c, pl.String)) for c in rows.columns if rows[c].dtype == pl.Null
    )
    flags: list[Flag] = []
    libraries = []
    for name in TRACKED_PACKAGES:
        spread = _spread(rows, f"pkg:{name}") if f"pkg:{name}" in rows.columns else None
        if spread:
            libraries.append(f"{name} {spread}")
    if libraries:
        flags.append(Flag("mixed-libraries", "; ".join(libraries)))
    for kind, column in (
        ("mixed-drivers", "driver"),
        ("mixed-gpus", "gpu"),
        ("mixed-power-limits", "power_limit_w"),
    ):
        if spread := _spread(rows, column):
            flags.append(Flag(kind, spread))
    hashes = rows["code_hash"]
    if checkout_hash is not None:
        other = rows.filter(hashes.is_null() | (hashes != checkout_hash))
        if other.height:
            flags.append(
                Flag(
                    "code-hash",
                    f"{other.height} of {rows.height} records differ from {checkout_hash} "
                    f"({_joined(sorted(set(other['code_hash'].fill_null('none'))))})",
                )
            )
    if spread := _spread(rows, "code_hash"):
        flags.append(Flag("mixed-code-hashes", spread))
    dirty = rows.filter(pl.col("dirty").fill_null(False))
    if dirty.height:
        commits = _joined(sorted(set(dirty["git_commit"].fill_null("unknown"))))
        flags.append(Flag("dirty", f"{dirty.height} of {rows.height} records (commit {commits})"))
    sources = set(rows["meter_source"].drop_nulls())
    estimated = {s for s in sources if "estimate" in s}
    if estimated and sources - estimated:
        flags.append(Flag("mixed-energy", _spread(rows, "meter_source") or ""))
    return Audit(rows, flags, checkout_hash)


def render(result: Audit) -> str:
    """The audit as text: one line per record, the flags, and the verdict last."""
    columns = [
        "config_id",
        "code_hash",
        "git_commit",
        "dirty",
        "host",
        "cpu_threads",
        "gpu",
        "driver",
        "power_limit_w",
        "meter_source",
        "pkg:torch",
        "pkg:transformers",
    ]
    table = result.rows.select(
        pl.col(c).cast(pl.String).fill_null("-").str.slice(0, 40) for c in columns
    ).with_columns(pl.col("git_commit").str.slice(0, 10))
    widths = {c: max(len(c), *(len(v) for v in table[c])) for c in columns}
    lines = ["  ".join(f"{c:<{widths[c]}}" for c in columns).rstrip()]
    lines += [
        "  ".join(f"{v:<{widths[c]}}" for c, v in zip(columns, r, strict=True)).rstrip()
        for r in table.rows()
    ]
    lines += [""] + [f"FLAG {f.text()}" for f in result.flags]
    lines.append(result.verdict)
    return "\n".join(lines)


def command(
    paths: list[str],
    *,
    as_json: bool = False,
    strict: bool = False,
    checkout_hash: str | None = None,
    out_csv: str | None = None,
    out_json: str | None = None,
) -> int:
    """`joulebench provenance`: one record in detail, or many records audited; the exit status
    (1 with ``strict`` when anything is flagged)."""
    from joulebench.core.atomic import write_json, write_with
    from joulebench.provenance.codehash import source_hash
    from joulebench.provenance.record import render as render_record

    records = load(paths)
    result = audit(records, checkout_hash or source_hash("bench"))
    single = len(paths) == 1 and Path(paths[0]).is_file()
    if single and as_json:
        keys = ("config_id", "config_hash", "started_at", "finished_at", "meter", "provenance")
        print(json.dumps({k: records[0][1].get(k) for k in keys}, indent=2))
    elif as_json:
        print(json.dumps(result.to_dict(), indent=2, default=str))
    elif single:
        print(render_record(records[0][1]))
        print("\n" + "\n".join([*(f"FLAG {f.text()}" for f in result.flags), result.verdict]))
    else:
        print(render(result))
    if out_csv:
        write_with(out_csv, result.rows.write_csv)
    if out_json:
        write_json(out_json, result.to_dict())
    return 1 if strict and result.flags else 0
