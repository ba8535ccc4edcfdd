"""Light-curve branch: photometry of each target through time, and what its periodicities and transits say.

``makeLightcurve`` -> ``periodSearch`` (variables), ``transitSearch`` -> ``transitTiming`` -> ``ttvFit`` (planets).

===============  ============================================================================================
``build``        ``LightcurveTask``: the target in every src table, BJD_TDB, colour term, ensemble, outliers
``ensemble``     differential (ensemble) photometry: per-frame offsets from all comparison stars at once
``periodogram``  ``PeriodSearchTask``: multiband Lomb-Scargle, harmonics by BIC, false-alarm probability
``multiband``   the shared-phase multiband power from per-band sums (non-uniform FFTs), coarse then exact
``harmonic``     batched fits of one light-curve shape shared by all bands (amplitude per band)
``transit``      ``TransitSearchTask`` (detrend + BLS) and ``TransitTimingTask`` (batman mid-times, O-C)
``ttv``          ``TtvFitTask``: joint fit of a field's planets (+ perturbers) from their transit times
``ttv_model``    the TTVFast forward model of a whole system and its likelihood
``ttv_priors``   per-planet prior configuration and one-dimensional prior transforms
``ttv_sampling`` dynesty nested sampling: process pool, checkpoints and resume, warm starts
``ttv_plots``    corner plot and O-C diagram with posterior draws
===============  ============================================================================================
"""

from typing import Any

from ..._lazy import lazy_exports

__all__ = ["EnsembleSolution", "LightcurveConfig", "LightcurveConnections", "LightcurveTask", "PeriodResult",
           "PeriodSearchConfig", "PeriodSearchConnections", "PeriodSearchTask", "TransitSearchConfig",
           "TransitSearchConnections", "TransitSearchTask", "TransitTimingConfig", "TransitTimingConnections",
           "TransitTimingTask", "TtvFitConfig", "TtvFitConnections", "TtvFitTask", "bjd_tdb", "detrend_and_search",
           "fit_global", "flag_outliers", "lomb_scargle_search", "match_source", "measure_transit_times", "oc_table",
           "solve_ensemble"]
_get = lazy_exports(__name__, {
    "build": ("LightcurveConfig", "LightcurveConnections", "LightcurveTask", "bjd_tdb", "flag_outliers",
        "match_source"),
    "ensemble": ("EnsembleSolution", "solve_ensemble"),
    "periodogram": ("PeriodResult", "PeriodSearchConfig", "PeriodSearchConnections", "PeriodSearchTask",
        "lomb_scargle_search"),
    "transit": ("TransitSearchConfig", "TransitSearchConnections", "TransitSearchTask", "TransitTimingConfig",
        "TransitTimingConnections", "TransitTimingTask", "detrend_and_search", "fit_global", "measure_transit_times",
        "oc_table"),
    "ttv": ("TtvFitConfig", "TtvFitConnections", "TtvFitTask"),
})


def __getattr__(name: str) -> Any:
    return _get(name)
