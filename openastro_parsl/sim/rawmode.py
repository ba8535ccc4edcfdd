"""Raw mode of the survey (``generate_survey(..., raw_mode=True)``): signatures on frames, calibration frames.

Kept out of ``survey.py`` so the default survey's code path is untouched: without raw mode none of this runs
and every file is byte-for-byte what it was.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.io import fits

from .calframes import FLAT_ADU, calibration_frames, dark_times
from .instruments import Instrument
from .signature import RAW_SETTINGS, Signature, make_signature

__all__ = ["PHOTOMETRY_MODEL", "apply_signature", "mark_raw", "signatures", "write_calibration"]

PHOTOMETRY_MODEL = ("counts_e = exptime * 10**(-0.4*(m_true + colour_term*(g-r) - zero_point)) (what an ideal "
                    "detector of the flat's median response counts); raw mode: ADU = (flat * (counts_e + sky_e) + "
                    "dark_e_per_s * exptime + noise) / gain + bias map (signature_<instrument>.npz)")


def signatures(seed: int, instruments: dict[str, Instrument]) -> dict[str, Signature]:
    """Each camera's signature, from its own random stream."""
    from .survey import _rng

    return {name: make_signature(_rng(seed, "signature", name), inst, RAW_SETTINGS[name])
            for name, inst in instruments.items()}


def apply_signature(sig: Signature, expected_e: np.ndarray, exptime: float) -> tuple[np.ndarray, np.ndarray]:
    """(expected electrons through the flat plus dark current, the bias map in ADU) of a science frame."""
    return expected_e * sig.flat + sig.dark_e_per_s * exptime, sig.bias


def mark_raw(inst: Instrument, header: fits.Header) -> None:
    """A raw frame of a robotic-network camera says it is unreduced (LCO's RLEVEL 0; BANZAI writes 91)."""
    if inst.name in ("lco1m", "slt40"):
        header["RLEVEL"] = (0, "reduction level: raw")


def write_calibration(seed: int, instruments: dict[str, Instrument], sigs: dict[str, Signature], frames,
                      raw_dir: Path, outdir: Path) -> tuple[dict, list[Path]]:
    """Write each camera's calibration frames into ``raw_dir`` and its true maps beside the truth.

    Returns the truth's ``raw_mode`` section and the files written.
    """
    from .survey import _rng

    out: dict = {"signature_files": {}, "instruments": {}, "calibration_frames": []}
    files: list[Path] = []
    for name, inst in instruments.items():
        own = [fr for fr in frames if fr.inst.name == name and fr.corrupt is None]
        if not own:
            continue
        first = min(own, key=lambda fr: fr.plan.start_ms).plan
        sig = sigs[name]
        sig_file = outdir / f"signature_{name}.npz"
        sig.save(sig_file)
        out["signature_files"][name] = sig_file.name
        out["instruments"][name] = {**sig.summary(RAW_SETTINGS[name]), "dark_times": list(dark_times(inst)),
                                    "flat_adu": FLAT_ADU}
        for fname, blob, record in calibration_frames(_rng(seed, "calibration-frames", name), inst, sig, first):
            path = raw_dir / fname
            path.write_bytes(blob)
            files.append(path)
            out["calibration_frames"].append(record)
    return out, files
