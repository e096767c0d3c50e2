from __future__ import annotations

from datetime import UTC, datetime, timedelta

from scheduler_domain.circuits import Circuit, CircuitPolicy, CircuitState, host_circuit

T0 = datetime(2030, 1, 1, tzinfo=UTC)
POLICY = CircuitPolicy(failure_threshold=3, cool_down=timedelta(seconds=30))


def test_consecutive_failures_open_and_a_success_resets_the_count() -> None:
    circuit = Circuit(name="limit:x")
    assert circuit.record("r1", succeeded=False, now=T0, policy=POLICY) is None
    assert circuit.record("r2", succeeded=False, now=T0, policy=POLICY) is None
    assert circuit.record("r3", succeeded=True, now=T0, policy=POLICY) is None
    assert circuit.failures == 0
    for run_id in ("r4", "r5"):
        assert circuit.record(run_id, succeeded=False, now=T0, policy=POLICY) is None
    assert circuit.record("r6", succeeded=False, now=T0, policy=POLICY) is CircuitState.OPEN
    assert (circuit.state, circuit.opened_at) == (CircuitState.OPEN, T0)


def test_open_holds_until_the_cool_down_then_lets_one_probe_through() -> None:
    circuit = Circuit(name="limit:x", state=CircuitState.OPEN, failures=3, opened_at=T0)
    assert circuit.admit("a", now=T0 + timedelta(seconds=29), policy=POLICY) == (False, None)
    later = T0 + timedelta(seconds=30)
    assert circuit.admit("a", now=later, policy=POLICY) == (True, CircuitState.HALF_OPEN)
    assert circuit.probe_run_id == "a"
    assert circuit.admit("b", now=later, policy=POLICY) == (False, None)  # one probe only
    assert circuit.admit("a", now=later, policy=POLICY) == (True, None)  # the probe again


def test_the_probe_decides_and_other_outcomes_are_ignored_while_not_closed() -> None:
    circuit = Circuit(name="h", state=CircuitState.OPEN, failures=3, opened_at=T0)
    later = T0 + timedelta(seconds=31)
    circuit.admit("probe", now=later, policy=POLICY)
    assert circuit.record("old", succeeded=True, now=later, policy=POLICY) is None
    assert circuit.state is CircuitState.HALF_OPEN
    assert circuit.record("probe", succeeded=False, now=later, policy=POLICY) is CircuitState.OPEN
    assert (circuit.opened_at, circuit.probe_run_id) == (later, None)
    again = later + timedelta(seconds=30)
    circuit.admit("probe2", now=again, policy=POLICY)
    assert circuit.record("probe2", succeeded=True, now=again, policy=POLICY) is CircuitState.CLOSED
    assert (circuit.failures, circuit.opened_at) == (0, None)


def test_a_silent_probe_is_replaced_after_a_cool_down() -> None:
    circuit = Circuit(name="h", state=CircuitState.OPEN, failures=3, opened_at=T0)
    circuit.admit("lost", now=T0 + timedelta(seconds=30), policy=POLICY)
    assert circuit.admit("next", now=T0 + timedelta(seconds=59), policy=POLICY)[0] is False
    assert circuit.admit("next", now=T0 + timedelta(seconds=60), policy=POLICY) == (True, None)
    assert circuit.probe_run_id == "next"


def test_host_circuit_names_the_lower_cased_host() -> None:
    assert host_circuit("https://API.Vendor.com:8443/x?y=1") == "host:api.vendor.com"
    assert host_circuit(None) is None
