import json
from pathlib import Path

import pytest
from joulebench.core.atomic import atomic_path, write_json


def test_write_json_replaces_atomically(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "r.json"
    write_json(target, {"a": 1})
    write_json(target, {"a": 2})
    assert json.loads(target.read_text()) == {"a": 2}  # the second write won, whole
    assert [p.name for p in target.parent.iterdir()] == ["r.json"]


def test_failed_write_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "r.parquet"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert list(tmp_path.iterdir()) == []


def test_temp_name_keeps_suffix(tmp_path: Path) -> None:
    with atomic_path(tmp_path / "chart.png") as tmp:
        assert tmp.suffix == ".png"
        tmp.write_bytes(b"x")
    assert (tmp_path / "chart.png").read_bytes() == b"x"
