"""The load generator against a fast fake streaming server on loopback."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import urllib.request

import numpy as np
import pytest
from fakeserver import FakeServerProcess as FakeServer
from joulebench.serving import loadgen
from joulebench.serving.pacing import GcInGaps
from joulebench.serving.protocols import OpenAICompletions, Target
from joulebench.serving.request import Request, describe_counts, outcome_counts, results_table
from joulebench.serving.watchdog import LoadAborted, Watchdog
from joulebench.workload.arrivals import ArrivalSpec, schedule
from joulebench.workload.shaping import ShapingSpec, release_times


def requests_for(offsets: np.ndarray, release: np.ndarray | None = None, out: int = 4) -> list:
    release = offsets if release is None else release
    return [
        Request(i, f"prompt {i}", 8, out, float(a), float(r))
        for i, (a, r) in enumerate(zip(offsets, release, strict=True))
    ]


def test_poisson_load_sends_each_request_at_its_time_never_before() -> None:
    """Correctness only: how close to its time a send lands depends on the machine's load and
    is measured by tests/perf/loadgen_precision.py."""
    offsets = schedule(ArrivalSpec("poisson", rate=100.0), 400, seed=3)
    with FakeServer() as server:
        results, t0 = loadgen.run(Target(server.url), requests_for(offsets), timeout_s=10)
        arrived = np.array(server.arrivals) - t0
        order = [int(b["prompt"].split()[-1]) for b in server.bodies]
    table = results_table(results).sort("request")
    assert table.height == 400 and (table["status"] == "ok").all()
    # the schedule it was given is the one recorded, untouched
    assert table["arrival_s"].to_numpy() == pytest.approx(offsets, abs=1e-9)
    assert table["release_s"].to_numpy() == pytest.approx(offsets, abs=1e-9)
    sent = table["sent_s"].to_numpy()
    assert np.all(sent >= offsets) and np.all(table["send_lag_s"].to_numpy() >= 0)
    # and not late beyond reason: bounds no load on a working machine reaches (the precise
    # figures are tests/perf/loadgen_precision.py's), which a sender that waits for the
    # previous answer, or sleeps a second per send, would break
    assert np.median(sent - offsets) < 0.25 and sent[-1] < offsets[-1] + 2.0
    # the server saw each request after it was sent and before its answer ended
    seen = np.empty(400)
    seen[order] = arrived
    assert np.all(seen >= sent) and np.all(seen <= table["end_s"].to_numpy())


def test_every_token_is_timed() -> None:
    offsets = np.array([0.0, 0.01, 0.02])
    with FakeServer(token_delay_s=0.01) as server:
        results, _ = loadgen.run(Target(server.url), requests_for(offsets, out=5), timeout_s=10)
    table = results_table(results)
    for row in table.iter_rows(named=True):
        times = np.asarray(row["token_times_s"])
        assert row["output_tokens"] == 5 and times.size == 5
        assert np.all(np.diff(times) >= 0)
        assert row["sent_s"] <= row["first_token_s"] == times[0] <= times[-1] <= row["end_s"]
        # the server waits 10 ms before each token: no token can be read before its time
        assert np.all(times - row["sent_s"] >= 0.01 * np.arange(1, 6) - 1e-4)
        assert row["tpot_s"] >= 0.01 - 1e-4  # the server's 10 ms between tokens, at least
        assert row["ttft_s"] <= row["e2e_s"]


def test_tgi_protocol_and_output_control() -> None:
    offsets = np.array([0.0, 0.005])
    with FakeServer() as server:
        results, _ = loadgen.run(
            Target(server.url, protocol="tgi"), requests_for(offsets, out=6), timeout_s=10
        )
        assert server.bodies[0]["parameters"]["max_new_tokens"] == 6
    assert [r.output_tokens for r in results] == [6, 6]
    assert all(r.status == "ok" for r in results)
    body = OpenAICompletions().body("m", Request(0, "p", 1, 7), "min_tokens")
    assert body["min_tokens"] == 7 and body["ignore_eos"] is True
    body = OpenAICompletions().body("m", Request(0, "p", 1, 7), "generation_config")
    assert '"min_new_tokens": 7' in body["generation_config"]


@pytest.mark.parametrize("protocol", ["openai", "tgi"])
def test_an_answer_shorter_than_asked_is_counted_short_not_ok(protocol: str) -> None:
    """The server ends every answer after 3 tokens (an early EOS); 5 were asked."""
    with FakeServer(stop_after=3) as server:
        results, _ = loadgen.run(
            Target(server.url, protocol=protocol), requests_for(np.zeros(2), out=5), 10
        )
    assert [(r.status, r.output_tokens) for r in results] == [("short", 3)] * 2
    assert results[0].error == "3 of the 5 tokens asked"
    counts = outcome_counts(results)
    assert counts["completed"] == 0 and counts["short"] == 2
    assert describe_counts(results).startswith("0 completed, 2 short of the tokens asked")
    table = results_table(results)
    assert table["status"].to_list() == ["short", "short"]
    assert table["output_tokens"].to_list() == [3, 3]


def test_errors_are_recorded_not_dropped() -> None:
    offsets = np.arange(9) * 0.002
    with FakeServer(fail_every=3) as server:
        results, _ = loadgen.run(Target(server.url), requests_for(offsets), timeout_s=10)
    table = results_table(results)
    assert table.height == 9
    errors = table.filter(status="error")
    assert errors.height == 3 and errors["http_status"].to_list() == [503] * 3
    assert all("overloaded" in e for e in errors["error"].to_list())


def test_timeouts_are_bounded_and_recorded() -> None:
    with FakeServer(hang=True) as server:  # it answers 2 s after each request arrives
        results, t0 = loadgen.run(Target(server.url), requests_for(np.zeros(3)), timeout_s=0.3)
        answers_at = np.array(server.arrivals) - t0 + 2.0
    assert [r.status for r in results] == ["timeout"] * 3
    for r in results:
        assert r.end_s - r.sent_s >= 0.3  # not before its timeout
    assert max(r.end_s for r in results) < answers_at.min()  # nor waiting for the answer


def test_unreachable_server_is_an_error_per_request() -> None:
    results, _ = loadgen.run(Target("http://127.0.0.1:9"), requests_for(np.zeros(2)), 5)
    assert [r.status for r in results] == ["error", "error"]


def test_closed_loop_never_exceeds_its_users() -> None:
    reqs = [Request(i, "p", 4, 3) for i in range(12)]
    with FakeServer(token_delay_s=0.01) as server:
        results, _ = loadgen.run(Target(server.url), reqs, timeout_s=10, users=3)
    table = results_table(results)
    assert (table["status"] == "ok").all() and table.height == 12
    events = sorted([(s, 1) for s in table["sent_s"]] + [(e, -1) for e in table["end_s"]])
    assert max(np.cumsum([d for _, d in events])) <= 3


def test_group_shaping_sends_in_groups() -> None:
    offsets = np.linspace(0, 0.29, 30)
    release = release_times(offsets, ShapingSpec("group", every_ms=100))
    with FakeServer() as server:
        results, _ = loadgen.run(Target(server.url), requests_for(offsets, release), 10)
    table = results_table(results)
    assert sorted(set(np.round(table["release_s"].to_numpy(), 6))) == [0.1, 0.2, 0.3]
    assert (table["hold_s"] >= 0).all()
    assert (table["sent_s"] >= table["release_s"]).all()  # none leaves before its group


def test_garbage_collection_waits_for_gaps_and_is_restored() -> None:
    import gc

    enabled_at_start: list[bool] = []
    offsets = np.arange(20) * 0.01
    with FakeServer() as server:
        results, _ = loadgen.run(
            Target(server.url),
            requests_for(offsets),
            timeout_s=10,
            on_start=lambda _t0: enabled_at_start.append(gc.isenabled()),
        )
    assert all(r.status == "ok" for r in results)
    assert enabled_at_start == [False]  # no automatic collection during the load
    assert gc.isenabled() and gc.get_freeze_count() == 0  # and everything as before after it
    gaps = GcInGaps(gap_s=0.002, overdue=10**9)
    assert not gaps.fits(0.001) and gaps.fits(0.002)


class SignalIntoLoad:
    """Send ``sig`` to the fake server ``pid`` once it has answered ``answered`` requests (use as
    the load's ``on_start``): tied to the load's progress, not to the wall clock, so a slow
    machine delays the signal instead of moving it to before or after the load."""

    def __init__(self, pid: int, sig: int, url: str, answered: int = 3) -> None:
        self.pid, self.sig, self.url, self.answered = pid, sig, url, answered
        self.sent_at: float | None = None  # perf_counter

    def __call__(self, _t0: float) -> None:
        threading.Thread(target=self._wait_then_send, daemon=True).start()

    def _wait_then_send(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with urllib.request.urlopen(self.url + "/stats", timeout=5) as answer:
                if json.load(answer)["answered"] >= self.answered:
                    break
            time.sleep(0.005)
        self.sent_at = time.perf_counter()
        os.kill(self.pid, self.sig)


def _assert_each_request_accounted_once(results: list, planned: int) -> dict[str, int]:
    assert sorted(r.index for r in results) == list(range(planned))
    counts = outcome_counts(results)
    assert counts["completed"] + counts["short"] + counts["failed"] + counts["not_sent"] == planned
    for r in results:
        if r.status == "not_sent":
            assert np.isnan(r.sent_s) and r.error.startswith("not sent: ")
        else:
            assert r.sent_s >= r.release_s
        assert (r.status == "ok") == (r.error is None)
    return counts


@pytest.mark.parametrize("users", [None, 3])
def test_a_server_that_dies_stops_the_load_and_every_request_is_accounted(
    users: int | None,
) -> None:
    offsets = np.arange(150) * 0.02  # open loop: 3 s of load; closed: longer
    with FakeServer(token_delay_s=0.02) as server:
        proc = server._proc
        watchdog = Watchdog(
            exited=lambda: None if proc.poll() is None else f"exit status {proc.returncode}",
            interval_s=0.05,
        )
        kill = SignalIntoLoad(proc.pid, signal.SIGKILL, server.url)
        with pytest.raises(LoadAborted, match="exit status -9") as info:
            loadgen.run(
                Target(server.url),
                requests_for(offsets),
                10,
                users=users,
                on_start=kill,
                watchdog=watchdog,
            )
    counts = _assert_each_request_accounted_once(info.value.results, 150)
    assert counts["completed"] >= 3 and counts["not_sent"] >= 20, counts
    assert f"{counts['not_sent']} not sent, of 150 planned" in str(info.value)


def test_a_server_that_stops_answering_stops_the_load_in_bounded_time() -> None:
    offsets = np.arange(150) * 0.02  # 3 s of load; the server freezes after 3 answers
    with FakeServer(token_delay_s=0.01) as server:
        proc = server._proc
        watchdog = Watchdog(
            exited=lambda: None, health_url=server.url + "/health", probe_timeout_s=0.3
        )
        freeze = SignalIntoLoad(proc.pid, signal.SIGSTOP, server.url)
        try:
            with pytest.raises(LoadAborted, match="stopped answering") as info:
                loadgen.run(
                    Target(server.url),
                    requests_for(offsets),
                    0.4,
                    on_start=freeze,
                    watchdog=watchdog,
                )
            assert freeze.sent_at is not None
        finally:
            os.kill(proc.pid, signal.SIGCONT)
    # a request times out 0.4 s after the freeze, the probe gives up 0.3 s later; without the
    # watchdog the load would go on for 2.65 s more: requests due then were never sent
    counts = _assert_each_request_accounted_once(info.value.results, 150)
    assert counts["timed_out"] >= 1 and counts["completed"] >= 1 and counts["not_sent"] >= 20
    for r in info.value.results:
        if r.status == "timeout":
            assert r.end_s - r.sent_s >= 0.4
