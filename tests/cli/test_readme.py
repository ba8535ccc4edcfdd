"""The README's site-config table documents every key once, with the max_in_flight default the code uses."""

import inspect
from pathlib import Path

from openastro_parsl.execution.site import ExecutorConfig, ProviderConfig, SiteConfig
from openastro_parsl.execution.submit import Submission

README = Path(__file__).resolve().parents[2] / "README.md"


def _site_table() -> dict[str, str]:
    text = README.read_text().split("### Site configs", 1)[1].split("\n\n", 2)[1]
    rows = [line.split("|")[1:3] for line in text.splitlines() if line.startswith("| `")]
    return {key.strip(): meaning.strip() for key, meaning in rows}


def _documented_keys() -> list[str]:
    keys = []
    for cell in _site_table():
        first, *rest = [part.strip(" `") for part in cell.split("/")]
        prefix = first.rsplit(".", 1)[0] + "." if "." in first else ""
        keys += [first] + [prefix + r for r in rest]
    return [k.replace("executors[].", "") for k in keys]


def test_site_table_lists_each_key_once():
    keys = _documented_keys()
    assert len(keys) == len(set(keys)), sorted(k for k in keys if keys.count(k) > 1)
    fields = ({f for f in SiteConfig.model_fields if f not in ("executors", "description")}
              | {f for f in ExecutorConfig.model_fields if f != "provider"}
              | {f"provider.{f}" for f in ProviderConfig.model_fields})
    assert set(keys) == fields


def test_max_in_flight_default_is_the_codes():
    said = "16 x workers, at least 64"
    assert said in _site_table()["`max_in_flight`"]
    assert said in SiteConfig.model_fields["max_in_flight"].description
    assert "self.site.max_in_flight or max(64, 16 * self._workers)" in inspect.getsource(Submission)
