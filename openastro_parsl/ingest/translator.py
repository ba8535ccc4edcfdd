"""Header translators: turn one instrument's FITS header into a data ID and the dimension records it needs.

Every camera writes its headers differently (EXPID or none, GAIN or EGAIN, degrees or sexagesimal); the
differences live in YAML (``instruments.yaml``, extendable per repository) rather than in code.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import astropy.units as u
from astropy.io import fits
from astropy.time import Time
from erfa import ErfaWarning
from pydantic import BaseModel, ConfigDict, Field

from ..errors import IngestError
from ..yamlconfig import load_model, load_yaml, validate


class _ExposureKey(BaseModel):
    model_config = ConfigDict(extra="forbid")
    key: str | None = None
    from_date: str | None = None


class _Keys(BaseModel):
    model_config = ConfigDict(extra="forbid")
    exposure: _ExposureKey
    physical_filter: list[str] = Field(default_factory=lambda: ["FILTER"])
    field: list[str] = Field(default_factory=lambda: ["OBJECT"])
    date: list[str] = Field(default_factory=lambda: ["DATE-OBS"])
    mjd: list[str] = Field(default_factory=list)
    exptime: list[str] = Field(default_factory=lambda: ["EXPTIME"])
    airmass: list[str] = Field(default_factory=list)
    ra: list[str] = Field(default_factory=list)
    dec: list[str] = Field(default_factory=list)
    gain: list[str] = Field(default_factory=list)
    read_noise: list[str] = Field(default_factory=list)
    pixel_scale: list[str] = Field(default_factory=list)
    pixel_size_um: list[str] = Field(default_factory=list)
    focal_length_mm: list[str] = Field(default_factory=list)
    # Observation info for calibration (astro/observation.py); defaults are the common conventions.
    site_lat: list[str] = Field(default_factory=lambda: ["SITELAT", "LATITUDE", "LAT-OBS"])
    site_lon: list[str] = Field(default_factory=lambda: ["SITELONG", "LONGITUD", "LONG-OBS"])
    site_elev: list[str] = Field(default_factory=lambda: ["SITEELEV", "HEIGHT", "ALT-OBS"])
    saturation: list[str] = Field(default_factory=lambda: ["SATURATE"])


class TranslatorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    match: dict[str, list[str]] = Field(default_factory=dict)
    telescope: str | None = None
    instrument_from: list[str] = Field(default_factory=list)
    keys: _Keys
    filters: dict[str, str] = Field(default_factory=dict)
    default_band: str | None = None   # band of a frame without a filter card; none unless declared
    default_field: str = "unassigned"
    day_obs_offset_hours: float = 0.0


class TranslatorFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    instruments: dict[str, TranslatorConfig]


@dataclass
class Translated:
    """What one raw file's header says: its data ID and the dimension records to sync before registering."""

    data_id: dict[str, Any]
    records: dict[str, dict[str, Any]]


_SAFE = re.compile(r"[^A-Za-z0-9_.+-]+")


def _slug(text: str) -> str:
    return _SAFE.sub("-", text.strip()).strip("-").lower() or "unknown"


def _parse_date(header: fits.Header, card: str) -> Time:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ErfaWarning)  # pre-1960 plates: UTC is "dubious", still right enough
        return _read_date(header, card)


def _read_date(header: fits.Header, card: str) -> Time:
    value = str(header[card]).strip()
    try:
        if re.fullmatch(r"\d\d/\d\d/\d\d", value):  # old dd/mm/yy with the time in UT / TIME-OBS
            d, m, y = (int(x) for x in value.split("/"))
            year = 1900 + y if y >= 40 else 2000 + y
            clock = str(header.get("UT", header.get("TIME-OBS", "00:00:00"))).strip()
            return Time(f"{year:04d}-{m:02d}-{d:02d}T{clock}", format="isot", scale="utc")
        return Time(value, format="isot", scale="utc")
    except ValueError as exc:
        raise IngestError(f"{card}={value!r} is not a date I can read ({exc})") from None


def _angle(value: Any, hours: bool) -> float:
    """Degrees from a number (already degrees) or a sexagesimal string (hours when ``hours``)."""
    if isinstance(value, (int, float)):
        return float(value)
    import astropy.units as u
    from astropy.coordinates import Angle

    text = str(value).strip()
    try:
        return float(text)
    except ValueError:
        pass
    return float(Angle(text, unit=u.hourangle if hours else u.deg).deg)


class Translator:
    def __init__(self, name: str, config: TranslatorConfig):
        self.name = name
        self.config = config

    def matches(self, header: fits.Header) -> bool:
        for key, values in self.config.match.items():
            got = str(header.get(key, "")).strip().lower()
            if got not in {v.lower() for v in values}:
                return False
        return True

    def value(self, header: fits.Header, key: str) -> Any:
        """The first present header card configured for ``key`` (a field of ``keys``), or None."""
        return self._first(header, getattr(self.config.keys, key))

    def start_time(self, header: fits.Header) -> Time:
        """UTC start of the exposure: the configured MJD card (MJD-OBS is the start, by the FITS standard)
        when present, else the configured date card."""
        mjd = self.value(header, "mjd")
        if mjd is not None:
            return Time(float(mjd), format="mjd", scale="utc")
        date_card = next((d for d in self.config.keys.date if d in header), None)
        if date_card is None:
            raise IngestError(f"no observation date in header (looked for {', '.join(self.config.keys.date)})")
        return _parse_date(header, date_card)

    def _first(self, header: fits.Header, cards: list[str]) -> Any:
        for card in cards:
            if card in header and header[card] not in (None, ""):
                value = header[card]
                return value.strip() if isinstance(value, str) else value
        return None

    def _band(self, header: fits.Header) -> tuple[str, Any]:
        """(band, filter name): from ``filters`` when the translator lists its filters (one it does not list
        is refused, not made a new band), else the name itself; ``default_band`` only where declared."""
        c = self.config
        card = next((k for k in c.keys.physical_filter if header.get(k) not in (None, "")), None)
        if card is None:
            if c.default_band is None:
                raise IngestError(f"no filter card in header (looked for {', '.join(c.keys.physical_filter)}); "
                                  f"instrument {self.name} declares no default_band")
            return c.default_band, None
        physical = self._first(header, [card])
        if not c.filters:
            return _slug(str(physical)), physical
        if str(physical) not in c.filters:
            raise IngestError(f"{card}={str(physical)!r} is not a filter of instrument {self.name} (known: "
                              f"{', '.join(c.filters)}; add it under filters: in instruments.yaml)")
        return c.filters[str(physical)], physical

    def translate(self, header: fits.Header) -> Translated:
        c, k = self.config, self.config.keys
        if c.instrument_from:
            raw = self._first(header, c.instrument_from)
            if raw is None:
                raise IngestError(f"no instrument in header (looked for {', '.join(c.instrument_from)})")
            instrument = _slug(str(raw))
        else:
            instrument = self.name
        date_card = next((d for d in k.date if d in header), None)
        if date_card is None:
            raise IngestError(f"no observation date in header (looked for {', '.join(k.date)})")
        start = _parse_date(header, date_card)
        exptime = self._first(header, k.exptime)
        exptime = float(exptime) if exptime is not None else 0.0
        mjd_card = self._first(header, k.mjd)
        mjd = float(mjd_card) if mjd_card is not None else float(start.mjd + exptime / 2 / 86400.0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ErfaWarning)  # see _parse_date
            day_obs = int((start + c.day_obs_offset_hours * u.hour).strftime("%Y%m%d"))
            if k.exposure.key:
                if k.exposure.key not in header:
                    raise IngestError(f"no exposure id card {k.exposure.key} in header")
                try:
                    exposure = int(header[k.exposure.key])
                except (TypeError, ValueError):
                    raise IngestError(f"{k.exposure.key}={header[k.exposure.key]!r} is not an integer exposure id") from None
            else:
                source = _parse_date(header, k.exposure.from_date) if k.exposure.from_date in header else start
                exposure = int(source.strftime("%Y%m%d%H%M%S"))
        band, physical = self._band(header)
        field_name = self._first(header, k.field)
        field = _slug(str(field_name)) if field_name is not None else c.default_field
        ra = self._first(header, k.ra)
        dec = self._first(header, k.dec)
        try:
            # A sexagesimal RA string is in hours (MaxIm DL's OBJCTRA); a number is degrees.
            ra = _angle(ra, hours=True) if ra is not None else None
            dec = _angle(dec, hours=False) if dec is not None else None
        except ValueError as exc:
            raise IngestError(f"pointing {ra!r}, {dec!r} unreadable: {exc}") from None
        airmass = self._first(header, k.airmass)
        gain = self._first(header, k.gain)
        rn = self._first(header, k.read_noise)
        scale = self._first(header, k.pixel_scale)
        if scale is None:
            px, fl = self._first(header, k.pixel_size_um), self._first(header, k.focal_length_mm)
            if px is not None and fl:
                scale = 206.265 * float(px) / float(fl)
        instrument_rec = {"name": instrument, "telescope": c.telescope or str(header.get("TELESCOP", "")) or None,
                          "pixel_scale": float(scale) if scale is not None else None,
                          "gain": float(gain) if gain is not None else None,
                          "read_noise": float(rn) if rn is not None else None}
        exposure_rec = {"instrument": instrument, "id": exposure, "band": band, "field": field, "day_obs": day_obs,
                        "mjd": mjd, "exptime": exptime, "airmass": float(airmass) if airmass is not None else None,
                        "physical_filter": str(physical) if physical is not None else None, "ra": ra, "dec": dec}
        # A field's centre is defined once (by whoever sets up the survey), not by each frame's pointing.
        field_rec = {"name": field}
        return Translated(
            data_id={"instrument": instrument, "exposure": exposure, "band": band, "field": field},
            records={"instrument": instrument_rec, "band": {"name": band}, "field": field_rec, "exposure": exposure_rec},
        )


def load_translators(repo_root: Path | None = None) -> list[Translator]:
    """The repository's own translators (REPO/instruments.yaml) first, then the packaged ones."""
    out: list[Translator] = []
    if repo_root is not None and (Path(repo_root) / "instruments.yaml").exists():
        cfg = load_model(TranslatorFile, Path(repo_root) / "instruments.yaml")
        out.extend(Translator(n, c) for n, c in cfg.instruments.items())
    text = resources.files("openastro_parsl.ingest").joinpath("instruments.yaml").read_text()
    data, lines = load_yaml(text, "openastro_parsl/ingest/instruments.yaml")
    cfg = validate(TranslatorFile, data, "openastro_parsl/ingest/instruments.yaml", lines)
    out.extend(Translator(n, c) for n, c in cfg.instruments.items())
    return out


def translate_header(header: fits.Header, translators: list[Translator]) -> tuple[str, Translated]:
    for tr in translators:
        if tr.matches(header):
            if not tr.config.match:
                _refuse_known_telescope(header, translators)
            return tr.name, tr.translate(header)
    raise IngestError("no header translator matches (add one to instruments.yaml)")


def _refuse_known_telescope(header: fits.Header, translators: list[Translator]) -> None:
    """A frame from a telescope a translator knows, whose INSTRUME is missing or not that translator's, would
    fall through to the catch-all and be ingested as a new instrument named after the telescope."""
    telescope = str(header.get("TELESCOP", "")).strip()
    owners = [t.name for t in translators if t.config.match and (t.config.telescope or "").lower() == telescope.lower()]
    if not telescope or not owners:
        return
    instrume = str(header.get("INSTRUME", "")).strip()
    if not instrume:
        raise IngestError(f"no INSTRUME card in header; TELESCOP={telescope!r} is the telescope of instrument "
                          f"{', '.join(owners)}: the instrument is not guessed")
    raise IngestError(f"INSTRUME={instrume!r} is not a known instrument of TELESCOP={telescope!r} "
                      f"(known: {', '.join(owners)})")
