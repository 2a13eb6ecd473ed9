"""TLS for the asyncio MQTT clients: an ``ssl.SSLContext`` from a :class:`BrokerConfig`, checked up front.

Every TLS setting is honoured or refused at start-up with a :class:`ConfigError`
naming the file and the fix: a missing or unreadable CA, certificate or key, a
key that does not match its certificate, a certificate without its key. There
is no fallback to plain TCP. Verification is always on: the broker's
certificate must chain to ``tls_ca`` and name the configured host.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from vigie.exceptions import ConfigError
from vigie.mqtt import BrokerConfig

__all__ = ["handshake_error", "tls_context"]

_FIX = "check --mqtt-tls-dir / VIGIE_MQTT_TLS_DIR (it must hold ca.crt, device.crt and device.key)"


def _readable(path: Path, what: str) -> None:
    try:
        with path.open("rb") as fh:
            fh.read(1)
    except FileNotFoundError:
        where = "its folder does not exist" if not path.parent.is_dir() else "no such file"
        raise ConfigError(f"MQTT TLS {what} {path}: {where}; {_FIX}") from None
    except OSError as exc:
        raise ConfigError(f"MQTT TLS {what} {path}: {exc.strerror}; {_FIX}") from None


def tls_context(broker: BrokerConfig) -> ssl.SSLContext | None:
    """The client TLS context for ``broker``, or None when it asks for plain TCP.

    Raises:
        ConfigError: a TLS setting that cannot be honoured (names the file and the fix).
    """
    if broker.tls_ca is None:
        if broker.tls_cert is not None or broker.tls_key is not None:
            raise ConfigError(
                f"MQTT TLS: a client certificate ({broker.tls_cert}) without a CA to check the broker "
                f"with; {_FIX}"
            )
        return None
    _readable(broker.tls_ca, "CA certificate")
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(broker.tls_ca))
    except ssl.SSLError as exc:
        raise ConfigError(
            f"MQTT TLS CA certificate {broker.tls_ca}: not a PEM certificate ({exc.reason}); {_FIX}"
        ) from None
    context.verify_mode = ssl.CERT_REQUIRED
    context.check_hostname = True
    if (broker.tls_cert is None) != (broker.tls_key is None):
        raise ConfigError(
            f"MQTT TLS: client certificate {broker.tls_cert} and key {broker.tls_key} go together; {_FIX}"
        )
    if broker.tls_cert is not None and broker.tls_key is not None:
        _readable(broker.tls_cert, "client certificate")
        _readable(broker.tls_key, "client key")
        try:
            context.load_cert_chain(str(broker.tls_cert), str(broker.tls_key))
        except ssl.SSLError as exc:
            raise ConfigError(
                f"MQTT TLS client key {broker.tls_key} does not go with certificate {broker.tls_cert} "
                f"({exc.reason}); use the pair enrolment wrote, or enrol again"
            ) from None
    return context


def handshake_error(host: str, port: int, exc: OSError) -> ConnectionError:
    """A TLS handshake failure, in words that point at the likely cause."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return ConnectionError(
            f"TLS with {host}:{port}: the broker's certificate was refused ({exc.verify_message}); "
            "is the CA the one that signed the broker's certificate, and the host the name it carries?"
        )
    reason = getattr(exc, "reason", None) or str(exc) or type(exc).__name__
    return ConnectionError(f"TLS handshake with {host}:{port} failed ({reason}): is this a TLS listener?")
