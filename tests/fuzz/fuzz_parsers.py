"""Coverage-guided fuzzing (atheris/libFuzzer) of the parsers that read bytes from the network.

    .venv/bin/python tests/fuzz/fuzz_parsers.py -max_total_time=60 [corpus_dir]

Targets: the wire decoder (every channel), the ingest's classifier (topic and
payload together) and the hub's MQTT packet parser (bytes from the broker,
framed and parsed by vigie.mqtt_codec).
Each may refuse its input only with its own error type; any other exception,
or a hang (libFuzzer's -timeout), is a finding and stops the run with a crash file.
"""

from __future__ import annotations

import contextlib
import sys

import atheris

with atheris.instrument_imports():
    from hub.ingest import classify
    from hub.mqtt_receiver import BrokerRefusedError, LeanSubscriber
    from hub.storage import QuarantineRecord
    from vigie import wire
    from vigie.exceptions import WireError
    from vigie.mqtt import BrokerConfig

CHANNELS = list(wire.Channel)
SUB = LeanSubscriber(BrokerConfig(host="127.0.0.1", port=1), "fuzz", ["vigie/v1/+/+/event"], lambda b: [])
SUB_V5 = LeanSubscriber(
    BrokerConfig(host="127.0.0.1", port=1, protocol="5"), "fuzz", ["vigie/v1/+/+/event"], lambda b: []
)


def one(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    target = fdp.ConsumeIntInRange(0, 3)
    if target == 0:
        channel = CHANNELS[fdp.ConsumeIntInRange(0, len(CHANNELS) - 1)]
        payload = fdp.ConsumeBytes(fdp.remaining_bytes())
        with contextlib.suppress(WireError):
            wire.decode(payload, channel)
    elif target == 1:
        topic = fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 80))
        result = classify(topic, fdp.ConsumeBytes(fdp.remaining_bytes()), 0.0)
        assert isinstance(result, QuarantineRecord) or result.site, result
        if not isinstance(result, QuarantineRecord):
            assert wire.topic(result.site, result.device, wire.Channel.EVENT)  # a valid identity
    else:
        sub = SUB if target == 2 else SUB_V5
        buf = bytearray(fdp.ConsumeBytes(fdp.remaining_bytes()))
        try:
            batch, _ = sub._parse(buf, [], 0.0, 1)
        except (BrokerRefusedError, ConnectionError):
            return
        for d in batch:
            assert isinstance(d.payload, bytes)


def main() -> None:
    atheris.Setup(sys.argv, one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
