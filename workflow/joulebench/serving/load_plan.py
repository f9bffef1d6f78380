"""The requests of one experiment: prompts, their arrival times and release times, planned
before the load starts.

Prompts are synthetic (exact token lengths) or read from a file; arrival times come from the
experiment's arrival process (a seeded schedule, or a replay file whose rows may also fix each
request's lengths); the shaping policy turns arrivals into release times. A closed loop has no
schedule: its requests' times are set as the users send them.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from joulebench.serving.request import Request
from joulebench.study.serving_specs import Experiment, SessionSpec
from joulebench.workload import arrivals, shaping
from joulebench.workload.prompts import Prompt, from_file, synthetic


def make_prompts(spec: SessionSpec, tokenizer: Any, n: int, seed: int) -> list[Prompt]:
    load = spec.load
    source = load["prompts"]
    if source["source"] == "file":
        return from_file(
            Path(source["path"]),
            tokenizer,
            n,
            load["output_len"],
            source.get("prompt_field", "prompt"),
            source.get("output_len_field", "output_len"),
        )
    return synthetic(tokenizer, n, load["input_len"], load["output_len"], seed)


def build_requests(exp: Experiment, spec: SessionSpec, tokenizer: Any, seed: int) -> list[Request]:
    """Prompts + arrival schedule + shaping → the requests of one experiment."""
    n = spec.load["requests"]
    arrival = exp.arrival_spec
    if arrival.process == arrivals.REPLAY:
        replay = arrivals.read_replay(Path(arrival.trace or ""), n)
        in_lens = replay.get("input_len", np.full(n, spec.load["input_len"])).tolist()
        out_lens = replay.get("output_len", np.full(n, spec.load["output_len"])).tolist()
        prompts = synthetic(tokenizer, n, in_lens, out_lens, seed)
        offsets: np.ndarray | None = replay["timestamp"]
    else:
        prompts = make_prompts(spec, tokenizer, n, seed)
        offsets = arrivals.schedule(arrival, n, seed)
    release = None if offsets is None else shaping.release_times(offsets, exp.shaping_spec)
    return [
        Request(
            i,
            p.text,
            p.input_len,
            p.output_len,
            math.nan if offsets is None else float(offsets[i]),
            math.nan if release is None else float(release[i]),
        )
        for i, p in enumerate(prompts)
    ]
