"""The compact encoding of stored events (pure): one stream's events of one hour in one blob.

A *stream* is (site, device, kind, place): what every event of a segment shares, kept once in the
``event_streams`` dictionary. An event's own part is its wire dict without the stream's fields, its
id and its window start (the id's time part *is* the window start: ``wire._check_id``). A segment
packs many such parts by column (msgpack, then zlib): a column of constant values (model, k,
window_s) or of one repeated label costs next to nothing, and hundredths are packed as integers.

The wire model stays the one schema: :func:`expand` gives back the dict that
``event.model_dump()`` gave, and a hypothesis test proves it for every event kind.
"""

from __future__ import annotations

import uuid
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import msgpack
import pydantic_core

from vigie import wire

__all__ = [
    "HOUR",
    "Item",
    "StreamKey",
    "compact",
    "expand",
    "hot_part",
    "hour_of",
    "id_bytes",
    "id_str",
    "pack_segment",
    "part_of",
    "start_of",
    "stream_key",
    "time_field",
    "unpack_part",
    "unpack_rows",
    "unpack_segment",
]

HOUR = 3600
#: Fields every event of a stream shares, or that the id carries: left out of the stored part.
_IMPLIED = ("site", "device", "kind", "id")
_FORMAT = 1  # bumped if the layout changes; a segment says which it is
_ID_TIME_MAX = 2**48 // 1000  # window starts an id can carry (its first 48 bits, in ms)


class StreamKey(NamedTuple):
    """What all events of a stream share (a tuple: hashed in C, on the ingest's hot path)."""

    site: str
    device: str
    kind: str
    place: str


@dataclass(frozen=True, slots=True)
class Item:
    """One stored event: id, window start, when the hub received it, and its own part."""

    id: str
    window_start: int
    received_at: float
    part: dict[str, Any]


def time_field(kind: str) -> str:
    """The wire field holding the window start (an alert's firing time for alerts)."""
    return "ts" if kind == "alert" else "window_start"


def stream_key(e: wire.Event) -> StreamKey:
    """The stream an event belongs to (an alert's place is its zone or its line)."""
    if isinstance(e, wire.Alert):
        return StreamKey(e.site, e.device, e.kind, e.zone or e.line or "")
    if isinstance(e, wire.Measurement):
        return StreamKey(e.site, e.device, e.kind, e.sensor)
    return StreamKey(e.site, e.device, e.kind, e.zone if isinstance(e, wire.ZoneCountEvent) else e.line)


def hour_of(ts: int) -> int:
    return ts - ts % HOUR


_PART_EXCLUDE: dict[str, set[str]] = {
    kind: {*_IMPLIED, "ts" if kind == "alert" else "window_start"}
    for kind in ("zone_count", "line_count", "alert", "measurement")
}


def start_of(e: wire.Event) -> int:
    """An event's window start (an alert's coarsened firing time)."""
    return e.ts if isinstance(e, wire.Alert) else e.window_start


def part_of(e: wire.Event) -> dict[str, Any]:
    """``compact(e.model_dump())``, done by pydantic's serializer (the ingest's hot path)."""
    return e.model_dump(mode="python", exclude=_PART_EXCLUDE[e.kind])


def compact(body: dict[str, Any]) -> dict[str, Any]:
    """An event's wire dict without what its stream and id imply (pure)."""
    drop = {*_IMPLIED, time_field(str(body["kind"]))}
    return {k: v for k, v in body.items() if k not in drop}


def expand(stream: StreamKey, event_id: str, window_start: int, part: dict[str, Any]) -> dict[str, Any]:
    """The wire dict back from its stored part: ``compact``'s inverse (pure)."""
    return {
        "site": stream.site, "device": stream.device, "kind": stream.kind, "id": event_id,
        time_field(stream.kind): window_start, **part,
    }  # fmt: skip


def id_bytes(event_id: str) -> bytes:
    return uuid.UUID(event_id).bytes


def id_str(raw: bytes) -> str:
    return str(uuid.UUID(bytes=raw))


# A hot part is JSON from pydantic's serializer (the fastest encoding at ingest), deflated against
# a preset dictionary of what every event's JSON repeats (field names, the usual model and labels):
# ~200 bytes become ~35, which is most of a hot row (issue 24: a few minutes of the city stay hot).
# The first byte says which dictionary; JSON itself (rows of older hubs) starts with "{". A new
# dictionary takes a new first byte, and this one stays readable.
_HOT_DICTS = {
    1: (
        b'"rule":"crowd_density","value":,"threshold":,"quantity":"sound_level","unit":"dB(A)",'
        b'"samples":600,"stats":{"mean":,"max":,"min":"sensor":"","forward":{"person":},"backward":{},'
        b'"line":"",{"v":1,"window_s":10,"k":3,"noise_epsilon":null,'
        b'"model":"ssd-mobilenet-v2-coco-quant@1.0.0","zone":"","frames":50,'
        b'"counts":{"person":"<3","car":,"bicycle":0},"mean_counts":{"person":0.0},"sd_counts":{}}'
    ),
}
_HOT_DICT = 1
_HOT_WBITS = -11  # raw deflate, a 2-kB window (the dictionary and a part fit): a small state to copy
_HOT_PACKER = zlib.compressobj(
    1, zlib.DEFLATED, _HOT_WBITS, 2, zlib.Z_DEFAULT_STRATEGY, _HOT_DICTS[_HOT_DICT]
)
_HOT_UNPACKERS = {k: zlib.decompressobj(_HOT_WBITS, zdict=d) for k, d in _HOT_DICTS.items()}


def hot_part(e: wire.Event) -> bytes:
    """One event's part alone, for a hot row: its JSON, deflated against a preset dictionary."""
    packer = _HOT_PACKER.copy()  # primed with the dictionary once; a copy is cheaper than a new one
    raw = e.model_dump_json(exclude=_PART_EXCLUDE[e.kind]).encode()
    return bytes((_HOT_DICT,)) + packer.compress(raw) + packer.flush()


def unpack_part(raw: bytes) -> dict[str, Any]:
    """``hot_part``'s inverse: the part as ``part_of`` gives it (plain JSON too: older hubs' rows;
    pydantic's own JSON parser: three times ``json.loads``'s speed, and a page parses one per row)."""
    if raw[:1] != b"{":
        unpacker = _HOT_UNPACKERS.get(raw[0])
        if unpacker is None:
            raise ValueError(f"hot event part of format {raw[0]}; this hub reads {sorted(_HOT_DICTS)}")
        raw = unpacker.copy().decompress(raw[1:])
    part: dict[str, Any] = pydantic_core.from_json(raw)
    return part


# Hundredths: the agent rounds means and deviations to 0.01, so most floats are n / 100. A column
# with no int anywhere in it, whose floats are all exact hundredths, is stored as ints (n) and read
# back as n / 100: exact, since n / 100 is the float the condition compared with.
_SCALE = 100
_MAX_SCALED = 2**52 // _SCALE


def _walk_ok(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return False  # an int would be read back as a float: leave such columns as they are
    if isinstance(value, float):
        return abs(value) < _MAX_SCALED and round(value * _SCALE) / _SCALE == value
    if isinstance(value, dict):
        return all(_walk_ok(v) for v in value.values())
    if isinstance(value, list):
        return all(_walk_ok(v) for v in value)
    return True  # str, None


def _scale(value: Any, down: bool) -> Any:
    if isinstance(value, dict):
        return {k: _scale(v, down) for k, v in value.items()}
    if isinstance(value, list):
        return [_scale(v, down) for v in value]
    if down and isinstance(value, float):
        return round(value * _SCALE)
    if not down and isinstance(value, int) and not isinstance(value, bool):
        return value / _SCALE
    return value


# What every segment's msgpack repeats (its keys, the wire fields, the usual labels and model), as a
# preset dictionary for zlib: ~100 bytes less per segment, which counts when the compaction job
# packs a stream's last two minutes (~12 events). Never edit these words: a segment names its
# dictionary by checksum; a new list goes into _SEG_DICTS beside this one.
_SEG_WORDS = (
    "f", "ws", "id", "ra", "cols", "scaled", "rows", "v", "window_s", "k", "noise_epsilon", "model",
    "zone", "line", "frames", "counts", "mean_counts", "sd_counts", "forward", "backward", "person",
    "car", "bicycle", "bus", "<3", "sensor", "quantity", "unit", "samples", "stats", "rule", "value",
    "threshold", "sound_level", "dB(A)", "mean", "max", "min", "crowd_density",
    "ssd-mobilenet-v2-coco-quant@1.0.0",
)  # fmt: skip
_SEG_DICT = b"".join(msgpack.packb(w) for w in _SEG_WORDS)
_SEG_DICTS = {zlib.adler32(_SEG_DICT): _SEG_DICT}


def pack_segment(items: Sequence[Item], hour: int) -> bytes:
    """Events of one stream and one hour as one blob (pure); ``unpack_segment`` gives them back.

    Sorted by (window start, id): the window starts become small deltas, the ids keep their 80
    bits that the window start does not imply, received times are milliseconds after the window.
    """
    rows = sorted(items, key=lambda i: (i.window_start, i.id))
    starts: list[int] = []
    prev = hour
    for r in rows:
        starts.append(r.window_start - prev)
        prev = r.window_start
    low = b"".join(uuid.UUID(r.id).bytes[6:] for r in rows)
    received = [round(r.received_at * 1000) - r.window_start * 1000 for r in rows]
    keys = list(rows[0].part) if rows else []
    if all(list(r.part) == keys for r in rows):
        cols: dict[str, list[Any]] = {k: [r.part[k] for r in rows] for k in keys}
        scaled = [k for k, col in cols.items() if _walk_ok(col)]
        body: Any = {k: _scale(col, True) if k in scaled else col for k, col in cols.items()}
        doc = {"f": _FORMAT, "ws": starts, "id": low, "ra": received, "cols": body, "scaled": scaled}
    else:  # parts of differing shapes (never from one stream of one schema): row by row
        doc = {"f": _FORMAT, "ws": starts, "id": low, "ra": received, "rows": [r.part for r in rows]}
    packer = zlib.compressobj(9, zlib.DEFLATED, 15, 9, zlib.Z_DEFAULT_STRATEGY, _SEG_DICT)
    return packer.compress(msgpack.packb(doc, use_bin_type=True)) + packer.flush()


def _inflate(blob: bytes) -> bytes:
    """A segment's msgpack: zlib names a preset dictionary by its checksum (FDICT, RFC 1950)."""
    if not blob[1] & 0x20:
        return zlib.decompress(blob)  # no dictionary: the segments of the first compact store
    dict_id = int.from_bytes(blob[2:6], "big")
    if dict_id not in _SEG_DICTS:
        raise ValueError(
            f"event segment packed with dictionary {dict_id:#x}; this hub knows {sorted(_SEG_DICTS)}"
        )
    return zlib.decompressobj(zdict=_SEG_DICTS[dict_id]).decompress(blob)


def unpack_segment(blob: bytes, hour: int) -> list[Item]:
    """``pack_segment``'s inverse (pure)."""
    return [
        Item(event_id, ws, received_at, part) for ws, event_id, received_at, part in unpack_rows(blob, hour)
    ]


def unpack_rows(blob: bytes, hour: int) -> list[tuple[int, str, float, dict[str, Any]]]:
    """``unpack_segment`` as (window start, id, received at, part) tuples (pure): what a page of
    events reads, without an ``Item`` per event. Sorted by (window start, id)."""
    doc = msgpack.unpackb(_inflate(blob), raw=False, strict_map_key=False)
    if doc.get("f") != _FORMAT:
        raise ValueError(f"event segment of format {doc.get('f')!r}; this hub reads format {_FORMAT}")
    starts: list[int] = []
    prev = hour
    for d in doc["ws"]:
        prev += d
        starts.append(prev)
    ids = _ids(starts, doc["id"])
    received = [(ws * 1000 + ms) / 1000 for ws, ms in zip(starts, doc["ra"], strict=True)]
    if "rows" in doc:
        parts: list[dict[str, Any]] = doc["rows"]
    else:
        scaled = set(doc["scaled"])
        cols = {k: [_unscale(v) for v in col] if k in scaled else col for k, col in doc["cols"].items()}
        keys = list(cols)
        parts = [dict(zip(keys, values, strict=True)) for values in zip(*cols.values(), strict=True)]
        if not keys:  # parts without a field (zip of no column gives no row)
            parts = [{} for _ in starts]
    return list(zip(starts, ids, received, parts, strict=True))


def _ids(starts: list[int], low: bytes) -> list[str]:
    """The events' ids: the window start in milliseconds (48 bits) and the 80 stored bits."""
    if not all(0 <= ws < _ID_TIME_MAX for ws in starts):
        # Out of the id's time range: ``to_bytes`` raises, as it always did for such a segment.
        return [
            str(uuid.UUID(bytes=(ws * 1000).to_bytes(6, "big") + low[10 * i : 10 * i + 10]))
            for i, ws in enumerate(starts)
        ]
    tail = low.hex()
    # str(uuid.UUID(...)) formatted by hand: lower-case hex, 8-4-4-4-12 (a test compares both).
    out = []
    for i, ws in enumerate(starts):
        t = f"{ws * 1000:012x}"
        r = tail[20 * i : 20 * i + 20]
        out.append(f"{t[:8]}-{t[8:]}-{r[:4]}-{r[4:8]}-{r[8:]}")
    return out


def _unscale(value: Any) -> Any:
    """``_scale(value, False)``, by exact type (msgpack gives plain ints, floats, dicts, lists)."""
    kind = type(value)
    if kind is int:
        return value / _SCALE
    if kind is dict:
        return {k: v / _SCALE if type(v) is int else _unscale(v) for k, v in value.items()}
    if kind is list:
        return [_unscale(v) for v in value]
    return value
