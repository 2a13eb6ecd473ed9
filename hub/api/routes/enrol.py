"""Device enrolment: a device trades a one-time token and a CSR for its certificate."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, status
from pydantic import BaseModel, ConfigDict, Field

from hub.enrolment import EnrolmentService
from vigie.exceptions import EnrolmentError, WireError

__all__ = ["EnrolRequest", "EnrolResponse", "enrol", "get_enrolment", "router"]

router = APIRouter(tags=["enrolment"])

_SLUG = r"^[a-z0-9][a-z0-9-]{0,47}$"


class EnrolRequest(BaseModel):
    """What a device sends to enrol. Its private key stays on the device; only the CSR travels."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{
                "site": "vieux-port", "device": "cam-3", "token": "vgt_…",
                "csr": "-----BEGIN CERTIFICATE REQUEST-----\n…\n-----END CERTIFICATE REQUEST-----\n",
            }]
        },
    )  # fmt: skip
    site: str = Field(pattern=_SLUG, description="Site slug; must match the token's.")
    device: str = Field(pattern=_SLUG, description="The device's slug (its MQTT identity is site/device).")
    token: str = Field(min_length=8, max_length=200, description="One-time enrolment token.")
    csr: str = Field(max_length=16_384, description="PEM certificate request signed by the device's key.")


class EnrolResponse(BaseModel):
    """The device's credentials: certificate, CA, OTA trust root, where the broker is."""

    site: str
    device: str
    profile: str = Field(description="Hardware profile the token was made for.")
    certificate: str = Field(description="PEM certificate, CN = site/device, for MQTT over TLS.")
    ca: str = Field(description="PEM certificate of the hub's device CA (also signs the broker's).")
    tuf_root: dict[str, Any] | None = Field(description="TUF root metadata for OTA updates (root.json).")
    broker_host: str
    broker_port: int


def get_enrolment(request: Request) -> EnrolmentService:
    service: EnrolmentService | None = request.app.state.enrolment
    if service is None:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            "enrolment is not set up on this hub: run `vigie hub init --state-dir DIR` and start the hub "
            "with VIGIE_HUB_STATE_DIR=DIR",
        )
    return service


@router.post(
    "/v1/enrol",
    response_model=EnrolResponse,
    status_code=status.HTTP_201_CREATED,
    summary="Enrol a device with a one-time token and a CSR",
    responses={400: {"description": "The body is not JSON"},
               403: {"description": "Token unknown, spent, expired or for another site or device"},
               409: {"description": "The device is enrolled already (revoke it first)"},
               422: {"description": "Malformed request or certificate request"},
               503: {"description": "Enrolment is not set up on this hub"}},
)  # fmt: skip
def enrol(body: EnrolRequest, service: Annotated[EnrolmentService, Depends(get_enrolment)]) -> EnrolResponse:
    """Spend the token, sign the CSR for ``site/device``, add the device to the broker's ACL."""
    try:
        result = service.enrol(body.token, body.site, body.device, body.csr.encode())
    except EnrolmentError as exc:
        text = str(exc)
        code = (
            status.HTTP_409_CONFLICT if "already enrolled" in text
            else status.HTTP_422_UNPROCESSABLE_ENTITY if text.startswith("csr:")
            else status.HTTP_403_FORBIDDEN
        )  # fmt: skip
        if code == status.HTTP_422_UNPROCESSABLE_ENTITY:
            raise HTTPException(
                code, [{"loc": ["body", "csr"], "msg": text, "type": "value_error"}]
            ) from None
        raise HTTPException(code, text) from None
    except WireError as exc:
        detail = [{"loc": ["body", exc.field], "msg": exc.reason, "type": "value_error"}]
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, detail) from None
    return EnrolResponse(**result.__dict__)
