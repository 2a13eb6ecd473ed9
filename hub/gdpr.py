"""GDPR records generated from the live configuration: the record of processing (art. 30), a DPIA draft
(art. 35(7)) and the retention report, as Markdown and PDF.

Every fact comes from what is configured and stored now (sources imported, devices
enrolled and seen, models, retention, roles, k), so the documents change when the
system does. The wording around the facts is a draft for the DPO to complete.
"""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hub.storage import EventQuery, Retention, Store

__all__ = [
    "GdprFacts",
    "collect_facts",
    "dpia_draft",
    "privacy_guarantees",
    "record_of_processing",
    "retention_report",
    "to_pdf",
]

SOURCE_DESCRIPTIONS = {
    "camera": "anonymised counts per zone and time window from the edge devices (no image, no identity)",
    "sensor": "sound level, temperature, air quality aggregates from the edge devices",
    "police": "municipal police logbook: incident category, time and place only",
    "fire": "fire-brigade interventions: type, time and place",
    "parks": "parks agents' reports: type, time and place",
    "presence": "mobile-operator device counts per zone and hour (aggregated by the operator, k-anonymous)",
    "transport": "ticket validations per stop and hour",
    "hospital": "emergency admissions per day, area and category (aggregated, k-anonymous)",
}


@dataclass
class GdprFacts:
    """What the documents are built from."""

    generated_at: float
    controller: str
    dpo_contact: str
    retention: Retention
    k: int
    sources: dict[str, int] = field(default_factory=dict)  # source -> files imported
    devices_enrolled: Counter[str] = field(default_factory=Counter)  # profile -> devices
    devices_seen: int = 0
    sites: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    roles: Counter[str] = field(default_factory=Counter)
    purges: list[dict[str, Any]] = field(default_factory=list)
    audit_entries: int = 0


def collect_facts(
    store: Store, retention: Retention, k: int, *, controller: str, dpo_contact: str
) -> GdprFacts:
    imports = store.list_imports(10_000)
    enrolled = store.list_enrolments()
    seen = store.list_devices()
    events, _ = store.list_events(EventQuery(limit=1000))
    return GdprFacts(
        generated_at=time.time(),
        controller=controller,
        dpo_contact=dpo_contact,
        retention=retention,
        k=k,
        sources=dict(Counter(i["source"] for i in imports)) | ({"camera": len(seen)} if seen else {}),
        devices_enrolled=Counter(e["profile"] for e in enrolled if e["revoked_at"] is None),
        devices_seen=len(seen),
        sites=sorted({d["site"] for d in seen} | {e["site"] for e in enrolled}),
        models=sorted({e["model"] for e in events if e.get("model")}),
        roles=Counter(u["role"] for u in store.list_users() if u["disabled_at"] is None),
        purges=store.list_purges(50),
        audit_entries=len(store.list_audit(limit=1_000_000)),
    )


def _days(value: float | None) -> str:
    return "kept without limit (set a retention!)" if value is None else f"{value:g} days"


def _when(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def record_of_processing(f: GdprFacts) -> str:
    """Article 30(1) record, one processing activity: the observatory."""
    sources = (
        "\n".join(
            f"  - **{s}** ({n} files or devices): {SOURCE_DESCRIPTIONS.get(s, 'city data')}"
            for s, n in sorted(f.sources.items())
        )
        or "  - none yet"
    )
    devices = ", ".join(f"{n} × {p}" for p, n in sorted(f.devices_enrolled.items())) or "none enrolled yet"
    roles = ", ".join(f"{n} {r}" for r, n in sorted(f.roles.items())) or "no users yet"
    return f"""# Record of processing activities (GDPR art. 30)

Generated {_when(f.generated_at)} from the live configuration of the Vigie hub.

**Controller**: {f.controller}. **Data-protection officer**: {f.dpo_contact}.

## Processing: public-tranquillity observatory

**Purposes (art. 30(1)(b))**: measure how busy public places are and how this changes; detect
unusual situations (crowding, noise, incidents) to plan municipal services; produce aggregated
statistics for the city's tranquillity policy. Not: identifying, following or profiling people.

**Categories of data subjects (art. 30(1)(c))**: people present in public spaces within the cameras'
fields of view and the zones of the other sources; people involved in incidents recorded by the city's
services (only as counts: no record about a person is kept).

**Categories of personal data (art. 30(1)(c))**: none stored by design. Images are analysed on the
device and never leave it; what leaves is counts per zone and time window (counts under the device's
k are sent as "<k"). City sources are imported as category, time and place only; free text and person
fields are never read (docs/fusion.md). Residual risk: a small count at a precise place and hour may
relate to an identifiable event; the API suppresses any aggregate under k = {f.k}.

Sources in use:
{sources}

**Recipients (art. 30(1)(d))**: city staff with an account, by role: {roles}. Other city platforms
through the exports (NGSI-LD, CSV, GeoJSON), aggregated and k-suppressed. No transfer outside the EU
(art. 30(1)(e)).

**Retention (art. 30(1)(f))**: raw events {_days(f.retention.events_days)}; hourly roll-ups
{_days(f.retention.rollups_days)}; quarantined messages {_days(f.retention.quarantine_days)};
the audit log is kept as long as the processing runs.

**Security measures (art. 30(1)(g), art. 32)**: anonymisation on the device (no pixel, face, plate,
MAC address or persistent track identity leaves it); mutual TLS with per-device certificates from the
hub's CA, revocation by CRL; per-device ACLs on the broker; signed model updates (TUF); API access by
role with argon2id-hashed passwords, expiring and revocable tokens, per-token rate limits; k-anonymity
(k = {f.k}) on every aggregate; hash-chained, append-only audit log ({f.audit_entries} entries) with the
stated purpose of each sensitive request; devices provisioned with SSH keys only and a firewall.

**Devices**: {f.devices_seen} seen; enrolled: {devices}; sites: {", ".join(f.sites) or "none yet"}.
**Detection models**: {", ".join(f.models) or "none reported yet"}.
"""


PRIVACY_DOC = Path(__file__).resolve().parent.parent / "docs" / "privacy.md"


def privacy_guarantees(doc: Path = PRIVACY_DOC) -> str:
    """The guarantees table of docs/privacy.md, so that the DPIA states what the code enforces."""
    try:
        text = doc.read_text(encoding="utf-8")
    except OSError:
        return f"(the table is in docs/privacy.md, not installed with this hub: {doc} is missing)"
    section = text.split("\n## Guarantees\n", 1)[-1].split("\n## ", 1)[0]
    return "\n".join(line for line in section.strip().splitlines() if line.startswith("|"))


def dpia_draft(f: GdprFacts) -> str:
    """Article 35(7) draft: (a) description, (b) necessity and proportionality, (c) risks, (d) measures."""
    return f"""# Data-protection impact assessment: draft (GDPR art. 35(7))

Generated {_when(f.generated_at)} from the live configuration. To be completed and signed by the
controller ({f.controller}) with the advice of the DPO ({f.dpo_contact}).

## (a) Systematic description

Edge devices ({f.devices_seen} seen; sites: {", ".join(f.sites) or "none yet"}) run object detection
({", ".join(f.models) or "no model reported yet"}) on camera frames in memory and publish counts per zone
and time window. The hub fuses them with the city's other sources ({
        ", ".join(sorted(f.sources)) or "none yet"
    }) per zone and hour, learns hour-of-week baselines, flags anomalies and forecasts short-term
risk per zone. Purposes: see the record of processing.

## (b) Necessity and proportionality

- Data minimisation: counts instead of images; category, time and place instead of logbook text;
  k = {f.k} on every aggregate served; no individual-level output exists.
- Storage limitation: events {_days(f.retention.events_days)}, roll-ups {_days(f.retention.rollups_days)};
  purges run automatically and are reported ({len(f.purges)} purges recorded).
- Accuracy and fairness: police-initiated records can be excluded from training per category, since they
  measure patrol presence (Lum & Isaac 2016); the backtest reports how concentrated flagged areas stay.
- Information of the public: signs at each site (to be listed by the controller).

## (c) Risks to the rights and freedoms of data subjects

| risk | likelihood | severity | notes |
|---|---|---|---|
| Re-identification from small counts at a place and hour | low | medium | disclosure control, below |
| Images leaving a device (compromise, misconfiguration) | low | high | no code path publishes pixels |
| Function creep (watching individuals) | medium | high | no identity to follow; every request audited |
| Feedback loops concentrating police attention | medium | medium | exclusion switch; concentration report |
| Unauthorised access to the hub | low | medium | roles, tokens, rate limits, audit chain |

### Disclosure control, guarantee by guarantee (docs/privacy.md)

{privacy_guarantees()}

## (d) Measures envisaged

See the record's security measures; in addition: yearly review of k and retention; DPO access to the
audit log at any time (`GET /v1/audit`, `vigie hub audit verify`); review before any new source.
"""


def retention_report(f: GdprFacts) -> str:
    lines = [
        "# Retention report",
        "",
        f"Policy: events {_days(f.retention.events_days)}, roll-ups "
        f"{_days(f.retention.rollups_days)}, quarantine {_days(f.retention.quarantine_days)}.",
        "",
        "| ran at | events | roll-ups | quarantine |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {_when(p['ran_at'])} | {p['events']} | {p['rollups']} | {p['quarantine']} |" for p in f.purges
    ]
    return "\n".join(lines) + "\n"


def to_pdf(markdown: str, path: Path) -> Path:
    """A plain PDF of a Markdown document (headings, paragraphs, lists, tables as text)."""
    from fpdf import FPDF

    pdf = FPDF(format="A4")
    pdf.set_auto_page_break(auto=True, margin=15)
    pdf.add_page()
    fonts = Path("/usr/share/fonts/truetype/dejavu")
    if (fonts / "DejaVuSans.ttf").exists():
        pdf.add_font("body", "", str(fonts / "DejaVuSans.ttf"))
        pdf.add_font("body", "B", str(fonts / "DejaVuSans-Bold.ttf"))
        family = "body"
    else:  # the core fonts are Latin-1 only
        family = "helvetica"
        markdown = markdown.encode("latin-1", "replace").decode("latin-1")
    for line in markdown.splitlines():
        text = line.replace("**", "")
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            pdf.set_font(family, "B", {1: 16, 2: 13}.get(level, 11))
            pdf.multi_cell(0, 8, text.lstrip("# "), new_x="LMARGIN", new_y="NEXT")
            pdf.ln(1)
        elif not line.strip() or set(line.strip()) <= set("|-"):
            pdf.ln(2)
        else:
            pdf.set_font(family, "", 9.5)
            pdf.multi_cell(
                0,
                5,
                text.replace("|", "  ").strip() if line.startswith("|") else text,
                new_x="LMARGIN",
                new_y="NEXT",
            )
    pdf.output(str(path))
    return path
