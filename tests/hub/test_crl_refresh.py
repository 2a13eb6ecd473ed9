"""The revocation list is rewritten on a schedule, long before it expires (issue 21: day 31)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from cryptography import x509

from hub.crl_refresh import CrlRefresher, crl_due
from hub.enrolment import EnrolmentService, HubState
from tests.hub.test_enrolment import _csr

DAY = 86400.0


def _next_update(path: Path) -> float:
    nxt = x509.load_pem_x509_crl(path.read_bytes()).next_update_utc
    assert nxt is not None
    return nxt.timestamp()


def test_crl_due_only_when_validity_runs_low() -> None:
    now = 1_000_000.0
    assert crl_due(None, now, 23 * DAY)  # missing or unreadable
    assert not crl_due(now + 29 * DAY, now, 23 * DAY)
    assert crl_due(now + 22 * DAY, now, 23 * DAY)
    assert crl_due(now - DAY, now, 23 * DAY)  # expired already


def test_a_low_crl_is_rewritten_with_the_revoked_serials_kept(store: Any, tmp_path: Path) -> None:
    state = HubState(tmp_path / "state")
    state.init(["localhost"])
    service = EnrolmentService(store, state)
    token = service.create_token("lyon", "rpi5", device="cam-1")
    service.enrol(token, "lyon", "cam-1", _csr())
    service.revoke("lyon", "cam-1")
    crl_path = state.pki / "crl.pem"
    service.ca.write_crl([(int(store.list_revoked()[0][0], 16), time.time())], days=5)  # a quiet month
    job = CrlRefresher(store, service.ca, state.layout)
    assert not job.run_once(now=time.time() - 30 * DAY)  # 35 days left then: nothing to do
    assert job.run_once()
    assert _next_update(crl_path) > time.time() + 29 * DAY
    revoked = x509.load_pem_x509_crl(crl_path.read_bytes())
    assert len(list(revoked)) == 1  # the revoked device stays revoked
    assert not job.run_once()  # fresh now: not rewritten at every check
