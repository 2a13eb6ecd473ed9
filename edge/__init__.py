"""The Vigie edge agent: capture -> detect -> zone rules -> aggregate -> outbox -> MQTT.

Nothing identifying leaves this package: only :mod:`vigie.wire` messages are
published, and those carry counts per zone and window, never pixels, boxes
or track identities.
"""

__all__: list[str] = []
