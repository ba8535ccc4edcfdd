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
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..errors import IngestError
from ..yamlconfig import load_model, load_yaml, validate
from .cards import BIAS, DARK, OBS_TYPES, SCIENCE, angle_deg, has_zone, header_matches, obs_type, parse_date

if TYPE_CHECKING:  # astropy is imported where a header is read (see cards.py)
    from astropy.io import fits
    from astropy.time import Time

UNASSIGNED = "unassigned"  # the field of a frame whose header names no object
NO_BAND = "none"  # the band of a bias or dark that carries no (known) filter: it has no passband


class _ExposureKey(BaseModel):
    model_config = ConfigDict(extra="forbid")
    key: str | None = None
    from_date: str | None = None
    # LCO style: the night (day_obs, YYYYMMDD) x 10000 + this card's running frame number, as in the file names
    frame_of_night: str | None = None


class _Keys(BaseModel):
    model_config = ConfigDict(extra="forbid")
    exposure: _ExposureKey
    physical_filter: list[str] = Field(default_factory=lambda: ["FILTER"])
    field: list[str] = Field(default_factory=lambda: ["OBJECT"])
    date: list[str] = Field(default_factory=lambda: ["DATE-OBS"])
    local_date: list[str] = Field(default_factory=list)  # DATE-LOC: local clock time, for day_obs
    day_obs: list[str] = Field(default_factory=list)  # a card holding the night itself (LCO DAY-OBS)
    mjd: list[str] = Field(default_factory=list)
    exptime: list[str] = Field(default_factory=lambda: ["EXPTIME"])
    obs_type: list[str] = Field(default_factory=lambda: ["IMAGETYP", "OBSTYPE", "FRAMETYP", "FRAME"])
    airmass: list[str] = Field(default_factory=list)
    ra: list[str] = Field(default_factory=list)
    dec: list[str] = Field(default_factory=list)
    gain: list[str] = Field(default_factory=list)
    read_noise: list[str] = Field(default_factory=list)
    pixel_scale: list[str] = Field(default_factory=list)
    pixel_size_um: list[str] = Field(default_factory=list)
    binning: list[str] = Field(default_factory=lambda: ["XBINNING"])
    focal_length_mm: list[str] = Field(default_factory=list)
    # Observation info for calibration (astro/observation.py); defaults are the common conventions.
    site_lat: list[str] = Field(default_factory=lambda: ["SITELAT", "LATITUDE", "LAT-OBS"])
    site_lon: list[str] = Field(default_factory=lambda: ["SITELONG", "LONGITUD", "LONG-OBS"])
    site_elev: list[str] = Field(default_factory=lambda: ["SITEELEV", "HEIGHT", "ALT-OBS"])
    saturation: list[str] = Field(default_factory=lambda: ["SATURATE"])


class TranslatorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # header key -> patterns (case-insensitive; `*` any run of characters, `?` one), all keys must match
    match: dict[str, list[str]] = Field(default_factory=dict)
    telescope: str | None = None
    telescope_from: list[str] = Field(default_factory=list)  # cards joined with '/' (LCO: SITEID/TELESCOP)
    instrument_from: list[str] = Field(default_factory=list)
    # a camera on a telescope: add the focal length (and binning > 1) to the camera's name, so one camera on
    # two telescopes is two instruments with one pixel scale each
    name_with_optics: bool = False
    # gain and read noise are per-frame settings of a CMOS camera, not constants of the instrument record
    gain_per_frame: bool = False
    # XPIXSZ already includes binning (the SBFITSEXT convention: MaxIm DL, APT, INDI); false: multiply
    pixel_size_binned: bool = True
    keys: _Keys
    filters: dict[str, str] = Field(default_factory=dict)
    default_band: str | None = None   # band of a frame without a filter card; none unless declared
    default_field: str = UNASSIGNED
    day_obs_offset_hours: float = 0.0
    obs_types: dict[str, str] = Field(default_factory=dict)  # own frame-type spellings -> science/bias/...
    reduced_when: dict[str, list[str]] = Field(default_factory=dict)  # e.g. LCO {RLEVEL: ["91", "92"]}

    @field_validator("obs_types")
    @classmethod
    def _known_types(cls, value: dict[str, str]) -> dict[str, str]:
        bad = {k: v for k, v in value.items() if v not in OBS_TYPES}
        if bad:
            raise ValueError(f"obs_types values must be one of {', '.join(OBS_TYPES)}; got {bad}")
        return {" ".join(k.lower().split()): v for k, v in value.items()}


class TranslatorFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    instruments: dict[str, TranslatorConfig]


@dataclass
class Translated:
    """What one raw file's header says: its data ID, the dimension records to sync before registering, what
    the frame is for (``obs_type``: science/bias/dark/flat/other) and whether it is already instrument-signature
    corrected (``reduced``: an LCO BANZAI e91 frame, in electrons; ISR must leave it alone)."""

    data_id: dict[str, Any]
    records: dict[str, dict[str, Any]]
    obs_type: str = SCIENCE
    reduced: bool = False


class UnmatchedHeader(IngestError):
    """No translator recognises the frame; carries the header so the CLI can show it and suggest a translator."""

    def __init__(self, message: str, header: fits.Header):
        super().__init__(message)
        self.header = header


_SAFE = re.compile(r"[^A-Za-z0-9_.+-]+")


def _slug(text: str) -> str:
    return _SAFE.sub("-", text.strip()).strip("-").lower() or "unknown"


def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


class Translator:
    def __init__(self, name: str, config: TranslatorConfig):
        self.name = name
        self.config = config

    def matches(self, header: fits.Header) -> bool:
        return header_matches(header, self.config.match)

    def value(self, header: fits.Header, key: str) -> Any:
        """The first present header card configured for ``key`` (a field of ``keys``), or None."""
        return self._first(header, getattr(self.config.keys, key))

    def start_time(self, header: fits.Header) -> Time:
        """UTC start of the exposure: the configured MJD card (MJD-OBS is the start, by the FITS standard)
        when present, else the date cards (``date_start``)."""
        from astropy.time import Time

        mjd = _float(self.value(header, "mjd"))
        return Time(mjd, format="mjd", scale="utc") if mjd is not None else self.date_start(header)

    def date_start(self, header: fits.Header) -> Time:
        """UTC start from the configured UTC date card, else from a local date card that states its zone."""
        k = self.config.keys
        date_card = next((d for d in k.date if header.get(d) not in (None, "")), None)
        if date_card is not None:
            return parse_date(header, date_card)
        local = next((d for d in k.local_date if header.get(d) not in (None, "")), None)
        if local is not None and has_zone(header[local]):
            return parse_date(header, local)
        if local is not None:
            raise IngestError(f"no UTC observation date in header (looked for {', '.join(k.date)}); "
                              f"{local}={header[local]!r} is local time without a zone")
        raise IngestError(f"no observation date in header (looked for {', '.join(k.date + k.local_date)})")

    def _first(self, header: fits.Header, cards: list[str]) -> Any:
        for card in cards:
            if card in header and header[card] not in (None, ""):
                value = header[card]
                return value.strip() if isinstance(value, str) else value
        return None

    def obs_type(self, header: fits.Header) -> str:
        """What the frame is for; a frame without a frame-type card is science (old frames and plates)."""
        value = self.value(header, "obs_type")
        return SCIENCE if value is None else obs_type(value, self.config.obs_types)

    def _band(self, header: fits.Header, kind: str) -> tuple[str, Any]:
        """(band, filter name): from ``filters`` when the translator lists its filters (one it does not list
        is refused, not made a new band), else the name itself; ``default_band`` only where declared. A bias
        or dark has band ``none`` whatever its filter wheel says: it has no passband."""
        c = self.config
        card = next((k for k in c.keys.physical_filter if header.get(k) not in (None, "")), None)
        physical = self._first(header, [card]) if card is not None else None
        if kind in (BIAS, DARK):
            return NO_BAND, physical
        if card is None:
            if c.default_band is None:
                raise IngestError(f"no filter card in header (looked for {', '.join(c.keys.physical_filter)}); "
                                  f"instrument {self.name} declares no default_band")
            return c.default_band, None
        if not c.filters:
            return _slug(str(physical)), physical
        if str(physical) not in c.filters:
            raise IngestError(f"{card}={str(physical)!r} is not a filter of instrument {self.name} (known: "
                              f"{', '.join(c.filters)}; add it under filters: in instruments.yaml)")
        return c.filters[str(physical)], physical

    def _instrument(self, header: fits.Header, focal_length: float | None, binning: int) -> str:
        c = self.config
        if not c.instrument_from:
            return self.name
        raw = self._first(header, c.instrument_from)
        if raw is None:
            raise IngestError(f"no instrument in header (looked for {', '.join(c.instrument_from)})")
        name = str(raw)
        if c.name_with_optics and focal_length:
            name += f" {focal_length:.0f}mm"
        if c.name_with_optics and binning > 1:
            name += f" bin{binning}"
        return _slug(name)

    def _day_obs(self, header: fits.Header, start: Time) -> int:
        """The observing night: a night card (LCO DAY-OBS); else the local date card's clock less 12 h (a night
        runs noon to noon); else the UTC start shifted by ``day_obs_offset_hours``."""
        import astropy.units as u

        k = self.config.keys
        night = self._first(header, k.day_obs)
        if night is not None:
            digits = re.sub(r"\D", "", str(night))
            if len(digits) != 8:
                raise IngestError(f"{k.day_obs[0]}={night!r} is not a YYYYMMDD night")
            return int(digits)
        local = next((d for d in k.local_date if header.get(d) not in (None, "")), None)
        if local is not None and not has_zone(header[local]):
            clock = parse_date(header, local)  # read as if UTC: only its calendar is used
            return int((clock - 12 * u.hour).strftime("%Y%m%d"))
        return int((start + self.config.day_obs_offset_hours * u.hour).strftime("%Y%m%d"))

    def _exposure_id(self, header: fits.Header, start: Time, day_obs: int) -> int:
        e = self.config.keys.exposure
        card = e.key or e.frame_of_night
        if card:
            if card not in header:
                raise IngestError(f"no exposure id card {card} in header")
            try:
                number = int(header[card])
            except (TypeError, ValueError):
                raise IngestError(f"{card}={header[card]!r} is not an integer exposure id") from None
            return day_obs * 10000 + number if e.frame_of_night else number
        source = parse_date(header, e.from_date) if e.from_date and e.from_date in header else start
        return int(source.strftime("%Y%m%d%H%M%S"))

    def _pixel_scale(self, header: fits.Header, binning: int) -> tuple[float | None, float | None]:
        """(arcsec/pixel, focal length mm): a scale card, else pixel size (um) and focal length."""
        k = self.config.keys
        fl = _float(self._first(header, k.focal_length_mm))
        fl = fl if fl and fl > 0 else None
        scale = _float(self._first(header, k.pixel_scale))
        if scale is None:
            px = _float(self._first(header, k.pixel_size_um))
            if px is not None and fl:
                scale = 206.264806 * px * (1 if self.config.pixel_size_binned else binning) / fl
        return scale, fl

    def translate(self, header: fits.Header) -> Translated:
        from erfa import ErfaWarning

        c, k = self.config, self.config.keys
        kind = self.obs_type(header)
        binning = int(_float(self._first(header, k.binning)) or 1)
        scale, focal_length = self._pixel_scale(header, binning)
        instrument = self._instrument(header, focal_length, binning)
        start = self.date_start(header)
        exptime = _float(self._first(header, k.exptime)) or 0.0
        mjd_card = _float(self._first(header, k.mjd))
        mjd = mjd_card if mjd_card is not None else float(start.mjd + exptime / 2 / 86400.0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ErfaWarning)  # pre-1960 plates: UTC is "dubious", still right enough
            day_obs = self._day_obs(header, start)
            exposure = self._exposure_id(header, start, day_obs)
        band, physical = self._band(header, kind)
        field_name = self._first(header, k.field)
        field = _slug(str(field_name)) if field_name is not None else c.default_field
        ra, dec = self._first(header, k.ra), self._first(header, k.dec)
        try:
            # A sexagesimal RA string is in hours (MaxIm DL's OBJCTRA, LCO's RA); a number is degrees.
            ra = angle_deg(ra, hours=True) if ra is not None else None
            dec = angle_deg(dec, hours=False) if dec is not None else None
        except ValueError as exc:
            raise IngestError(f"pointing {ra!r}, {dec!r} unreadable: {exc}") from None
        airmass = _float(self._first(header, k.airmass))
        gain = None if c.gain_per_frame else _float(self._first(header, k.gain))
        rn = None if c.gain_per_frame else _float(self._first(header, k.read_noise))
        instrument_rec = {"name": instrument, "telescope": self._telescope(header),
                          "pixel_scale": scale, "gain": gain, "read_noise": rn}
        exposure_rec = {"instrument": instrument, "id": exposure, "band": band, "field": field, "day_obs": day_obs,
                        "mjd": mjd, "exptime": exptime, "airmass": airmass,
                        "physical_filter": str(physical) if physical is not None else None, "ra": ra, "dec": dec}
        # A field's centre is defined once (by whoever sets up the survey), not by each frame's pointing.
        field_rec = {"name": field}
        return Translated(
            data_id={"instrument": instrument, "exposure": exposure, "band": band, "field": field},
            records={"instrument": instrument_rec, "band": {"name": band}, "field": field_rec, "exposure": exposure_rec},
            obs_type=kind, reduced=bool(c.reduced_when) and header_matches(header, c.reduced_when),
        )

    def _telescope(self, header: fits.Header) -> str | None:
        c = self.config
        if c.telescope:
            return c.telescope
        if c.telescope_from:
            parts = [str(header[k]).strip() for k in c.telescope_from if header.get(k) not in (None, "")]
            return "/".join(parts) or None
        return str(header.get("TELESCOP", "")).strip() or None


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


def with_default_field(registry, translators: list[Translator], field: str) -> list[Translator]:
    """The translators, giving ``field`` to frames whose header names no object (``--field`` at ingest). The
    field must be defined with a centre: a typo would otherwise make a new, empty field."""
    known = {f["name"]: f for f in registry.dimension_records("field")}
    if field not in known or known[field].get("ra") is None:
        defined = sorted(n for n, f in known.items() if f.get("ra") is not None)
        raise IngestError(f"--field {field!r} is not a defined field (defined, with ra/dec: "
                          f"{', '.join(defined) or 'none'})")
    return [Translator(t.name, t.config.model_copy(update={"default_field": field})) for t in translators]


def translate_header(header: fits.Header, translators: list[Translator]) -> tuple[str, Translated]:
    """The first matching translator's name and translation. A frame that only the catch-all (an empty
    ``match``) would take, and that it cannot read (no instrument or date card), raises ``UnmatchedHeader``."""
    for tr in translators:
        if tr.matches(header):
            if tr.config.match:
                return tr.name, tr.translate(header)
            _refuse_known_telescope(header, translators)
            try:
                return tr.name, tr.translate(header)
            except IngestError as exc:  # the catch-all cannot name it either: nothing recognises this frame
                raise UnmatchedHeader(f"no header translator matches, and the catch-all {tr.name} cannot read it "
                                      f"({exc}); add one to REPO/instruments.yaml", header) from None
    raise UnmatchedHeader("no header translator matches (add one to REPO/instruments.yaml)", header)


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
