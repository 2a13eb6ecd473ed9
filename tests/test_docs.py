"""The examples in the documentation are valid: a copied example must work."""

from __future__ import annotations

import yaml

from edge.config import HardwareProfile, SiteConfig
from tests.conftest import ROOT


def _yaml_block(doc: str, heading: str) -> dict[str, object]:
    text = (ROOT / "docs" / doc).read_text()
    block = text.split(heading, 1)[1].split("```yaml", 1)[1].split("```", 1)[0]
    loaded = yaml.safe_load(block)
    assert isinstance(loaded, dict)
    return loaded


def test_configuration_examples_validate() -> None:
    site = SiteConfig.model_validate(_yaml_block("configuration.md", "## Site file"))
    assert [s.type for s in site.cameras[0].sensors] == ["sound_device", "sht31", "pms5003"]
    assert (
        HardwareProfile.model_validate(_yaml_block("configuration.md", "## Hardware profile")).name == "rpi5"
    )
