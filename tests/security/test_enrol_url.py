"""Issue 17, finding 8: enrolment refuses plain http:// except to this machine."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.enrol import check_hub_url, enrol
from vigie.exceptions import EnrolmentError

ALLOWED = ["https://hub.city.example", "https://10.0.0.2:8443/", "http://127.0.0.1:8000", "http://localhost:8000/",
           "http://[::1]:8000", "http://127.0.0.53"]  # fmt: skip
REFUSED = {
    "http://hub.city.example": "plain http:// is refused",
    "http://10.0.0.2:8000": "use https://10.0.0.2:8000/",
    "http://localhost.evil.example": "plain http:// is refused",
    "ftp://hub": "must start with https://",
    "hub.city.example": "must start with https://",
    "https://": "must start with https://",
}


@pytest.mark.parametrize("url", ALLOWED)
def test_https_and_loopback_http_are_accepted(url: str) -> None:
    check_hub_url(url)


@pytest.mark.parametrize(("url", "why"), REFUSED.items())
def test_anything_else_is_refused_before_a_key_or_token_is_used(url: str, why: str, tmp_path: Path) -> None:
    with pytest.raises(EnrolmentError, match=why):
        enrol(url, "port", "cam-1", "vgt_secret", tmp_path / "pki")
    assert not (tmp_path / "pki").exists()  # refused before any key was made
