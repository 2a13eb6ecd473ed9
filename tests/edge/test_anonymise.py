"""Anonymisation: windows, coarsening, k-suppression, Laplace noise (pure)."""

from __future__ import annotations

import random
import statistics
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.anonymise import AnonymisationConfig, Anonymiser, laplace, publish_counts
from edge.rules import Crossing, Firing
from vigie import wire

T0 = 1_700_000_040.0


def anon(**cfg: object) -> Anonymiser:
    return Anonymiser(
        site="s", device="d", zones=["left", "right"], lines=["door"], classes=("person", "car", "bus"),
        model_ref="m@1", config=AnonymisationConfig(**cfg), rng=random.Random(7),
    )  # fmt: skip


def test_default_k_is_the_safe_value() -> None:
    assert AnonymisationConfig().k == 3
    a = anon(window_s=10)
    a.add(T0, {"left": Counter(person=2, car=3), "right": Counter()})
    left = a.flush()[0]
    assert isinstance(left, wire.ZoneCountEvent)
    assert (left.k, left.counts, left.mean_counts) == (3, {"car": 3, "person": "<3"}, {"car": 3.0})


def test_window_emits_peak_and_mean_per_zone_and_crossings_per_line() -> None:
    a = anon(window_s=10, k=1)
    assert a.add(T0 + 1, {"left": Counter(person=2), "right": Counter()}) == []
    crossings = [Crossing("door", "person", 1, 17), Crossing("door", "person", -1, 18)]
    assert a.add(T0 + 5, {"left": Counter(person=4, bus=1), "right": Counter(car=1)}, crossings) == []
    closed = a.add(T0 + 12, {"left": Counter(person=1)})
    zones = {e.zone: e for e in closed if isinstance(e, wire.ZoneCountEvent)}
    (line,) = [e for e in closed if isinstance(e, wire.LineCountEvent)]
    assert zones["left"].counts == {"bus": 1, "person": 4}
    assert zones["left"].mean_counts == {"bus": 0.5, "person": 3.0}
    assert zones["left"].frames == 2
    assert zones["right"].counts == {"car": 1}
    assert (line.forward, line.backward) == ({"person": 1}, {"person": 1})
    for e in closed:
        assert e.window_start == 1_700_000_040
        assert wire.decode(wire.encode(e)) == e
    (nl, _nr, _nline) = a.flush()
    assert nl.counts == {"person": 1}
    assert a.flush() == []


def test_counts_under_k_are_sent_as_less_than_k() -> None:
    a = anon(window_s=10, k=3)
    a.add(T0, {"left": Counter(person=5, bus=1, car=2), "right": Counter()})
    left = a.flush()[0]
    assert isinstance(left, wire.ZoneCountEvent)
    assert left.counts == {"bus": "<3", "car": "<3", "person": 5}
    assert left.mean_counts == {"person": 5.0}  # no mean may reveal a suppressed count
    assert b'"<3"' not in wire.encode(left)  # msgpack, not JSON: but the value is there as a str
    assert wire.decode(wire.encode(left)).counts["bus"] == "<3"  # type: ignore[union-attr]


def test_laplace_noise_has_the_right_scale() -> None:
    rng = random.Random(1)
    samples = [laplace(2.0, rng) for _ in range(20_000)]
    assert abs(statistics.mean(samples)) < 0.1
    # Var(Laplace(b)) = 2 b².
    assert statistics.pvariance(samples) == pytest.approx(8.0, rel=0.08)


def test_noise_covers_unseen_classes_and_disables_means() -> None:
    rng = random.Random(3)
    seen_bus = 0
    for _ in range(300):
        out = publish_counts({"person": 10}, k=1, epsilon=0.5, rng=rng, universe=("person", "bus"))
        seen_bus += "bus" in out  # a class never seen still gets a (noisy) count sometimes
        assert all(isinstance(v, int) and v > 0 for v in out.values())
    assert 0 < seen_bus < 300
    a = anon(window_s=10, epsilon=1.0)
    a.add(T0, {"left": Counter(person=10)})
    ev = a.flush()[0]
    assert isinstance(ev, wire.ZoneCountEvent)
    assert ev.mean_counts == {}
    assert ev.noise_epsilon == 1.0


@given(st.dictionaries(st.sampled_from(["person", "car", "bus"]), st.integers(0, 50)), st.integers(1, 20))
def test_suppression_never_publishes_a_small_number(raw: dict[str, int], k: int) -> None:
    out = publish_counts(raw, k=k, epsilon=None, rng=random.Random(0))
    for label, value in out.items():
        assert value == f"<{k}" or (isinstance(value, int) and value >= k)
        assert raw[label] > 0


def test_alert_is_coarsened_and_anonymous() -> None:
    a = anon()
    alert = a.alert(Firing("intrusion", "left", None, T0 + 7.3, 4.26, 3.0))
    assert alert.ts == 1_700_000_040
    assert wire.decode(wire.encode(alert)) == alert
