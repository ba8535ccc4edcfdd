"""Synthetic multi-telescope survey with known truth (see survey.generate_survey)."""

from .survey import SurveyManifest, generate_survey

__all__ = ["SurveyManifest", "generate_survey"]
