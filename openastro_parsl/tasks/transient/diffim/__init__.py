"""Difference imaging: template onto the new frame, PSF-matched and flux-scaled, subtracted; 5-sigma candidates.

The template (a deep co-add on the field's grid at zero-point 25) is resampled onto the science frame's own
WCS with ``reproject`` (exact, flux-conserving), scaled to the science zero-point, and the sharper of the two
images is convolved to the other's PSF with a kernel fitted on stars (Alard & Lupton 1998: Gaussians times
polynomials, plus a differential sky; both directions are tried when the seeings are close and the better fit
kept). With too few stars the kernel is the Gaussian that takes one FWHM to the other. Keeping the science
frame's grid means its pixels and noise are never resampled.

Candidates are found on the matched-filter significance map in both signs (``sep``), and measured on the
difference by PSF fitting. The PSF is a pixel-integrated Moffat fitted to the stars (the header FWHM and
beta = 3 when there are none), carried through the kernel when the science frame was the one convolved; its
analytic normalisation makes fluxes totals, not aperture fractions. Errors are calibrated on blank positions
(convolution correlates the noise), and each candidate gets science / reference / difference / noise stamps.

==============  ==========================================================================================
``alignment``   the template resampled onto the science frame's grid and flux-scaled
``background``  the sky of both images before, and of the difference after, the subtraction
``psf``         Moffat PSFs fitted to each image's stars, the difference image's PSF
``kernel``      the Alard-Lupton PSF-matching kernel and its stars
``subtract``    ``subtract``: the whole subtraction (``DiffimResult``)
``detection``   matched-filter candidates, PSF photometry, noise calibration, shapes, flags, cutouts
``task``        ``DiffimTask`` and ``difference_image`` (subtract -> calibrate noise -> detect -> cut out)
==============  ==========================================================================================
"""

from ....astro.psf import FWHM_SIGMA, MoffatPSF
from .alignment import align_template
from .detection import FLAGS, calibrate_noise, detect_candidates, make_cutouts, psf_photometry, snr_map
from .kernel import fit_psf_matching_kernel, gaussian_kernel
from .psf import DifferencePSF, fit_moffat, psf_fwhm
from .subtract import DiffimResult, subtract
from .task import DiffimConfig, DiffimConnections, DiffimTask, difference_image

__all__ = ["FLAGS", "FWHM_SIGMA", "DiffimConfig", "DiffimConnections", "DiffimResult", "DiffimTask",
           "DifferencePSF", "MoffatPSF", "align_template", "calibrate_noise", "detect_candidates",
           "difference_image", "fit_moffat", "fit_psf_matching_kernel", "gaussian_kernel", "make_cutouts",
           "psf_fwhm", "psf_photometry", "snr_map", "subtract"]
