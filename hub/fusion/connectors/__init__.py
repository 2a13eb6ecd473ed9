"""The city-data connectors, one plugin per source (``vigie hub import SOURCE FILE``)."""

from __future__ import annotations

from hub.fusion.connectors.base import AggregateConnector, Connector, IncidentConnector
from hub.fusion.connectors.transport import TransportConnector

__all__ = ["CONNECTORS", "Connector"]

CONNECTORS: dict[str, Connector] = {
    "police": IncidentConnector("police", "Municipal police logbook (main courante): category, time, place"),
    "fire": IncidentConnector("fire", "Fire-brigade interventions: type, time, place"),
    "parks": IncidentConnector("parks", "Parks and green-spaces agents' reports: type, time, place"),
    "presence": AggregateConnector(
        "presence", "Mobile-operator presence counts per zone and hour (k-anonymous)"
    ),
    "transport": TransportConnector(),
    "hospital": AggregateConnector(
        "hospital", "Emergency admissions per day, area and category (k-anonymous)"
    ),
}
