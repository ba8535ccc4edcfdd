"""One small survey per session (plus the re-runs the determinism tests need)."""

import json

import pytest

from openastro_parsl.sim.survey import generate_survey


@pytest.fixture(scope="session")
def survey(tmp_path_factory):
    return generate_survey(tmp_path_factory.mktemp("sim") / "seed42", seed=42, size="small")


@pytest.fixture(scope="session")
def truth(survey):
    return json.loads(survey.truth.read_text())
