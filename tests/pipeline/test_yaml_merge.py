"""YAML merge keys (`<<: *defaults`) work in pipeline and site files, and errors still name file and line."""

import pytest

from openastro_parsl.execution.site import load_site
from openastro_parsl.pipeline import PipelineError, load_pipeline
from openastro_parsl.yamlconfig import ConfigError, load_yaml

PIPELINE = """\
tasks:
  strict:
    class: openastro_parsl.tasks.qa.FrameStatsTask
    config: &stats
      detect_sigma: 4
      min_area: 3
  loose:
    class: openastro_parsl.tasks.qa.FrameStatsTask
    config:
      <<: *stats
      min_area: {min_area}
      connections: {{stats: frameStatsLoose}}
"""


def test_a_pipeline_shares_config_through_a_merge_key(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text(PIPELINE.format(min_area=9))
    loose = load_pipeline(f).task("loose").config
    assert (loose.detect_sigma, loose.min_area, loose.connections) == (4, 9, {"stats": "frameStatsLoose"})
    f.write_text(PIPELINE.format(min_area=0))  # a key written beside `<<` keeps its own line
    with pytest.raises(PipelineError, match=f"{f}:11: min_area: .*greater than or equal to 1"):
        load_pipeline(f)
    f.write_text(PIPELINE.format(min_area=9).replace("detect_sigma: 4", "detect_sigma: -4"))
    with pytest.raises(PipelineError, match=f"{f}:5: detect_sigma: .*greater than 0"):  # a merged key: its anchor's line
        load_pipeline(f"{f}#loose")


def test_a_site_shares_a_provider_through_a_merge_key(tmp_path):
    f = tmp_path / "site.yaml"
    f.write_text("""\
executors:
  - label: fast
    provider: &node {kind: local, init_blocks: 1, max_blocks: 1}
    resource_classes: [fast]
  - label: slow
    provider:
      <<: *node
      max_blocks: 2
    resource_classes: [slow]
""")
    site, _ = load_site(f)
    assert [(e.provider.kind, e.provider.init_blocks, e.provider.max_blocks) for e in site.executors] == \
        [("local", 1, 1), ("local", 1, 2)]
    f.write_text(f.read_text().replace("max_blocks: 2", "max_blockz: 2"))
    with pytest.raises(ConfigError, match=f"{f}:8: executors.1.provider.max_blockz: unknown key"):
        load_site(f)


def test_merge_rules():
    data, lines = load_yaml("a: &a {x: 1, y: 1}\nb: &b {x: 2, z: 2}\nc:\n  <<: [*a, *b]\n  y: 3\n")
    assert data["c"] == {"x": 1, "y": 3, "z": 2}  # earlier mappings win, keys beside `<<` win over all
    assert lines[("c", "z")] == 2 and lines[("c", "y")] == 5
    with pytest.raises(ConfigError, match=r"f.yaml: line 2: '<<' merges mappings, not scalars"):
        load_yaml("a: 1\nb: {<<: 3}\n", "f.yaml")
    with pytest.raises(ConfigError, match=r"f.yaml: duplicate key 'y' at line 4"):
        load_yaml("a: &a {x: 1}\nb:\n  y: 1\n  y: 2\n  <<: *a\n", "f.yaml")
