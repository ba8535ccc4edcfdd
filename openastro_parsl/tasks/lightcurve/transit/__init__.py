"""Transit search (detrend + Box Least Squares) and transit timing (batman fits, linear ephemeris, O-C).

Detrending: a time-windowed biweight location (astropy's ``biweight_location``, Tukey's robust M-estimator,
as in wotan's default) divided out of the flux. A transit pulls even a robust location down when it fills much
of the window (ground-based nights are often mostly transit), so the search iterates: detrend, BLS, mask the
found transits (``mask_factor`` x duration), detrend again without them, BLS again, until the period holds.

Search: astropy ``BoxLeastSquares`` over ``autoperiod`` with a duration grid, then a fine grid around the
peak. A sparse light curve cannot tell P from P/2, P/3... when the phantom transits fall in gaps, so the
longest multiple of the best period that keeps the power (``harmonic_tolerance``) is preferred.

Timing (stage 7b): one global batman (Mandel & Agol, quadratic limb darkening) fit of t0, P, Rp/Rs, a/Rs and
the impact parameter to every transit window of the relative flux, each window with its own polynomial
baseline (the night's zero point and airmass trend, fitted rather than detrended away); then each window is
fitted with that shape, only its mid-time and baseline free. Mid-time errors come from the curvature of chi-square
(the Jacobian at the optimum) or, when wider, the profile-likelihood interval (chi-square within reduced
chi-square of its minimum over a grid of mid-times, the baseline re-fitted at each: ingress or egress covered
by a few points makes chi-square flatter than its curvature says), scaled by the square root of the window's
reduced chi-square when it exceeds 1 (red noise, a bad night); injection tests check their coverage. A weighted
linear fit gives the ephemeris and the O-C table.

Modules: ``search`` (detrending, BLS), ``fit`` (batman shape, mid-times, ephemeris, O-C), ``tasks`` (the two
pipeline tasks).
"""

from .fit import (
                  DEFAULT_LIMB_DARKENING,
                  GlobalFit,
                  TransitShape,
                  TransitTime,
                  fit_global,
                  fit_transit_time,
                  measure_transit_times,
                  oc_plot,
                  oc_table,
                  profile_half_width,
                  t14,
)
from .search import BlsResult, biweight_trend, bls_search, detrend_and_search, search_plot
from .tasks import (
                  TransitSearchConfig,
                  TransitSearchConnections,
                  TransitSearchTask,
                  TransitTimingConfig,
                  TransitTimingConnections,
                  TransitTimingTask,
                  stack_flux,
)

__all__ = ["DEFAULT_LIMB_DARKENING", "BlsResult", "GlobalFit", "TransitSearchConfig", "TransitSearchConnections",
           "TransitSearchTask", "TransitShape", "TransitTime", "TransitTimingConfig", "TransitTimingConnections",
           "TransitTimingTask", "biweight_trend", "bls_search", "detrend_and_search", "fit_global",
           "fit_transit_time", "measure_transit_times", "oc_plot", "oc_table", "profile_half_width",
           "search_plot", "stack_flux", "t14"]
