"""Per-instrument observation info from a raw header: times, site, detector constants.

Calibration needs the mid-exposure time, the exposure time, where the telescope stands and the detector's
gain, read noise and saturation. Cameras spell these differently; the spellings live in the ingest header
translators (``ingest/instruments.yaml``), so the same YAML that names a frame also describes it here — a
new camera is one YAML entry, not a code change in two places.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import OpenAstroError
from ..ingest.cards import angle_deg as _angle
from ..ingest.translator import Translator, load_translators, translate_header

if TYPE_CHECKING:
    from astropy.io import fits

__all__ = ["ObservationError", "ObservationInfo", "observation_info"]


class ObservationError(OpenAstroError):
    """A header lacks what calibration needs (and no configured default fills it)."""


@dataclass
class ObservationInfo:
    """What calibration needs to know about one exposure, in plain units."""

    translator: str
    instrument: str
    exposure: int
    band: str
    physical_filter: str | None
    mjd_start: float  # UTC
    mjd_mid: float  # UTC, start + exptime / 2
    exptime: float  # s
    airmass: float | None
    site_lat: float | None  # deg
    site_lon: float | None  # deg, east positive
    site_elev: float | None  # m
    gain: float  # e- / ADU
    read_noise: float | None  # e-
    saturation_adu: float | None
    assumed: tuple[str, ...] = ()  # quantities taken from defaults, not the header
    obs_type: str = "science"  # science / bias / dark / flat / other, from the frame-type card
    reduced: bool = False  # already bias/dark/flat corrected by its observatory (LCO BANZAI e91): skip ISR

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["assumed"] = list(self.assumed)
        return d


def _float(value: Any) -> float | None:
    if value is None:
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if np.isfinite(out) else None


def observation_info(header: fits.Header, *, translators: list[Translator] | None = None,
                     default_gain: float | None = None, default_read_noise: float | None = None,
                     default_saturation: float | None = None, default_site_elev: float | None = None,
                     repo_root: Path | None = None, data: np.ndarray | None = None, where: str = ""
                     ) -> ObservationInfo:
    """Read ``header`` with the first matching ingest translator.

    Missing gain / read noise / saturation / site elevation fall back to the given defaults (recorded in
    ``assumed``); an integer ``data`` array's dtype maximum (or a uint16-with-BZERO header) stands in for a
    missing saturation level. ``repo_root`` adds that repository's own ``instruments.yaml`` translators.
    ``where`` names the frame in error messages.
    """
    prefix = f"{where}: " if where else ""
    if translators is None:
        translators = load_translators(repo_root) if repo_root is not None else _packaged_translators()
    try:
        name, translated = translate_header(header, translators)
    except OpenAstroError as exc:
        raise ObservationError(f"{prefix}{exc}") from None
    tr = next(t for t in translators if t.name == name)
    rec = translated.records["exposure"]
    assumed: list[str] = []
    try:
        start = tr.start_time(header)
    except OpenAstroError as exc:
        raise ObservationError(f"{prefix}{exc}") from None
    exptime = _float(tr.value(header, "exptime"))
    if exptime is None or exptime <= 0:
        raise ObservationError(f"{prefix}no positive exposure time in header "
                               f"(looked for {', '.join(tr.config.keys.exptime)})")
    try:
        lat = tr.value(header, "site_lat")
        lon = tr.value(header, "site_lon")
        lat = _angle(lat, hours=False) if lat is not None else None
        lon = _angle(lon, hours=False) if lon is not None else None
    except ValueError as exc:
        raise ObservationError(f"{prefix}site coordinates unreadable: {exc}") from None
    gain = _float(tr.value(header, "gain"))
    if gain is None or gain <= 0:
        if default_gain is None:
            raise ObservationError(f"{prefix}no gain in header (looked for {', '.join(tr.config.keys.gain)}) "
                                   f"and no default_gain configured")
        gain = float(default_gain)
        assumed.append("gain")
    read_noise = _float(tr.value(header, "read_noise"))
    if read_noise is None and default_read_noise is not None:
        read_noise = float(default_read_noise)
        assumed.append("read_noise")
    saturation = _float(tr.value(header, "saturation"))
    if saturation is None:
        if default_saturation is not None:
            saturation = float(default_saturation)
            assumed.append("saturation_adu")
        elif data is not None and np.issubdtype(np.asarray(data).dtype, np.integer):
            saturation = float(np.iinfo(np.asarray(data).dtype).max)
            assumed.append("saturation_adu")
        elif _unsigned_16(header):  # uint16 stored as BITPIX 16 + BZERO 32768, read back as float
            saturation = 65535.0
            assumed.append("saturation_adu")
    site_elev = _float(tr.value(header, "site_elev"))
    if site_elev is None and default_site_elev is not None:
        site_elev = float(default_site_elev)
        assumed.append("site_elev")
    return ObservationInfo(
        translator=name, instrument=translated.data_id["instrument"], exposure=int(translated.data_id["exposure"]),
        band=translated.data_id["band"], physical_filter=rec.get("physical_filter"),
        mjd_start=float(start.mjd), mjd_mid=float(start.mjd + exptime / 2.0 / 86400.0), exptime=exptime,
        airmass=rec.get("airmass"), site_lat=lat, site_lon=lon, site_elev=site_elev,
        gain=gain, read_noise=read_noise, saturation_adu=saturation, assumed=tuple(assumed),
        obs_type=translated.obs_type, reduced=translated.reduced,
    )


@lru_cache(maxsize=1)
def _packaged_translators() -> list[Translator]:
    return load_translators(None)


def _unsigned_16(header: fits.Header) -> bool:
    return header.get("BITPIX") == 16 and float(header.get("BZERO", 0)) == 32768.0 and \
        float(header.get("BSCALE", 1)) == 1.0
