"""Certificate renewal: a device trades its current certificate and a CSR from the same key for a new one."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, status
from pydantic import BaseModel, ConfigDict, Field

from hub.api.routes.enrol import get_enrolment
from hub.enrolment import EnrolmentService
from vigie.exceptions import EnrolmentError

__all__ = ["RenewRequest", "RenewResponse", "renew", "router"]

router = APIRouter(tags=["enrolment"])


class RenewRequest(BaseModel):
    """The device's current certificate and a request signed by its key (which never leaves it)."""

    model_config = ConfigDict(extra="forbid")
    certificate: str = Field(max_length=16_384, description="The current PEM certificate (CN = site/device).")
    csr: str = Field(max_length=16_384, description="PEM certificate request signed by the same key.")


class RenewResponse(BaseModel):
    certificate: str = Field(description="The new PEM certificate, same identity and key, 825 days.")
    ca: str = Field(description="PEM certificate of the hub's device CA.")


@router.post(
    "/v1/renew",
    response_model=RenewResponse,
    summary="Renew a device certificate before it expires (proof: the current certificate and its key)",
    responses={400: {"description": "The body is not JSON"},
               403: {"description": "Not this hub's, expired, revoked, replaced, or another key"},
               503: {"description": "Enrolment is not set up on this hub"}},
)  # fmt: skip
def renew(
    body: RenewRequest, request: Request, service: Annotated[EnrolmentService, Depends(get_enrolment)]
) -> RenewResponse:
    from hub.cert_renewal import renew_device_certificate

    try:
        pem = renew_device_certificate(
            request.app.state.store, service.ca, body.certificate.encode(), body.csr.encode(), time.time()
        )
    except EnrolmentError as exc:
        raise HTTPException(status.HTTP_403_FORBIDDEN, str(exc)) from None
    return RenewResponse(certificate=pem.decode(), ca=service.ca.ca_pem.decode())
