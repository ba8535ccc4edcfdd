"""``fetch-known-sources``: a field's catalogued galaxies, variables, quasars and stars from NED or SIMBAD, on a
machine with a network, registered as the field's ``knownSources`` (as ``ingest-known-sources`` registers a file).

NED: its "Near Position Search" (astroquery.ipac.ned builds the query and parses the VOTable), object types as
NED writes them (``G``, ``QSO``, ``!V*``...). SIMBAD: its TAP service (pyvo, astroquery's own client) on the
``basic`` table, object types as SIMBAD writes them (``G``, ``Sy1``, ``RR*``...) and the galaxies' major axes.
Each type becomes a ``kind`` of ``ingest/known_sources.py``. Answers go through the archive cache
(``ingest/archive_cache.py``): offline, or with the archive unreachable, the same command answers from it and
says so; what it lacks is one line, and the registry is left unchanged.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import partial

import numpy as np
from astropy.table import Table

from ..astro.refcat import Region, is_network_error
from ..butler import Butler
from ..errors import OpenAstroError
from .archive_cache import ArchiveCache, cached_answer
from .known_sources import DEFAULT_GALAXY_RADIUS_ARCSEC
from .refcats import field_record

__all__ = ["CATALOGS", "FetchedSources", "classify", "fetch_known_sources"]

NED_SERVER_ENV = "OPENASTRO_NED_SERVER"        # NED's objsearch URL (a fake archive in tests)
SIMBAD_TAP_ENV = "OPENASTRO_SIMBAD_TAP"        # SIMBAD's TAP URL
SIMBAD_TAP = "https://simbad.cds.unistra.fr/simbad/sim-tap"
SIMBAD_ADQL = ("SELECT main_id, ra, dec, otype, galdim_majaxis FROM basic WHERE ra IS NOT NULL AND dec IS NOT NULL "
               "AND CONTAINS(POINT('ICRS', ra, dec), CIRCLE('ICRS', {ra:.8f}, {dec:.8f}, {radius:.8f})) = 1")
MAX_ROWS = 20000

# Object types -> kinds (NED: ned.ipac.caltech.edu "NED object types"; SIMBAD: its object-type hierarchy).
_GALAXY = {"G", "GPair", "GTrpl", "G_Lens", "GiC", "GiG", "GiP", "BiC", "IG", "PaG", "SBG", "bCG", "LSB", "EmG",
           "H2G", "rG", "LSBG"}
_QSO = {"QSO", "Q_Lens", "Bla", "BLL", "AGN", "SyG", "Sy1", "Sy2", "LIN", "LINER", "Sy"}
_VARIABLE = {"V*", "Ir*", "Er*", "Ro*", "Pu*", "RR*", "Ce*", "cC*", "dS*", "RV*", "WV*", "bC*", "gD*", "SX*", "LP*",
             "Mi*", "EB*", "No*", "Nova", "CV*", "BY*", "RS*", "Fl*", "Or*", "a2*", "El*", "WR*", "Be*", "YSO", "TT*"}


def classify(otype: str) -> str:
    """A NED or SIMBAD object type as a knownSources kind (galaxy, qso, variable, star, other)."""
    t = str(otype).strip().lstrip("!")  # NED's '!' marks a Galactic object
    if t in _GALAXY:
        return "galaxy"
    if t in _QSO:
        return "qso"
    if t in _VARIABLE or (t.endswith("*") and t[:-1].endswith("V")):
        return "variable"
    if t.endswith("*"):
        return "star"
    return "other"


@dataclass
class FetchedSources:
    table: Table
    notes: list[str] = field(default_factory=list)


def _ned(ra: float, dec: float, radius_deg: float) -> list[dict]:
    """NED's objects in a cone (network)."""
    import astropy.units as u
    from astropy.coordinates import SkyCoord
    from astroquery import cache_conf
    from astroquery.ipac.ned import Ned

    payload = Ned.query_region(SkyCoord(ra * u.deg, dec * u.deg), radius=radius_deg * u.deg, get_query_payload=True)
    url = os.environ.get(NED_SERVER_ENV) or Ned.OBJ_SEARCH_URL
    with cache_conf.set_temp("cache_active", False):
        response = Ned._request("GET", url=url, params=payload, timeout=Ned.TIMEOUT, cache=False)
        response.raise_for_status()
        t = Ned._parse_result(response)
    return [{"name": str(r["Object Name"]).strip(), "ra": float(r["RA"] if "RA" in t.colnames else r["RA(deg)"]),
             "dec": float(r["DEC"] if "DEC" in t.colnames else r["DEC(deg)"]), "type": str(r["Type"]).strip(),
             "radius_arcsec": None} for r in t]


def _simbad(ra: float, dec: float, radius_deg: float) -> list[dict]:
    """SIMBAD's objects in a cone through its TAP service (network)."""
    import pyvo

    tap = pyvo.dal.TAPService(os.environ.get(SIMBAD_TAP_ENV) or SIMBAD_TAP)
    try:
        t = tap.search(SIMBAD_ADQL.format(ra=ra, dec=dec, radius=radius_deg), maxrec=MAX_ROWS).to_table()
    except (pyvo.dal.DALServiceError, pyvo.dal.DALFormatError) as exc:  # pyvo wraps an unreachable service: say it is one
        cause = getattr(exc, "cause", None)
        if cause is not None and is_network_error(cause):
            raise ConnectionError(f"{type(cause).__name__}: {cause}") from None
        raise
    out = []
    for r in t:
        axis = r["galdim_majaxis"] if "galdim_majaxis" in t.colnames else None
        half = None if axis is None or np.ma.is_masked(axis) or not np.isfinite(float(axis)) else float(axis) * 30.0
        out.append({"name": str(r["main_id"]).strip(), "ra": float(r["ra"]), "dec": float(r["dec"]),
                    "type": str(r["otype"]).strip(), "radius_arcsec": half})  # major axis (arcmin) -> radius (")
    return out


CATALOGS = {"ned": ("NED", _ned), "simbad": ("SIMBAD", _simbad)}


def fetch_known_sources(butler: Butler, field_name: str, catalogs: tuple[str, ...], *, radius_deg: float = 0.5,
                        galaxy_radius_arcsec: float = DEFAULT_GALAXY_RADIUS_ARCSEC, cache=None, offline: bool = False,
                        refresh: bool = False) -> FetchedSources:
    """The field's catalogued sources from ``catalogs`` (ned, simbad) through the cache, as a knownSources table
    (``name, ra, dec, kind, radius_arcsec`` plus ``otype`` and ``catalog``)."""
    rec = field_record(butler, field_name)
    if rec.get("ra") is None or rec.get("dec") is None:
        raise OpenAstroError(f"field {field_name!r} has no centre to search around; give it one with "
                             f"`openastro-butler define-fields {butler.root} fields.csv`")
    if not 0 < radius_deg <= 5:
        raise OpenAstroError(f"--radius {radius_deg} deg: give a radius between 0 and 5 degrees")
    unknown = [c for c in catalogs if c not in CATALOGS]
    if unknown or not catalogs:
        raise OpenAstroError(f"--catalog {', '.join(unknown) or '(none)'}: choose from {', '.join(CATALOGS)}")
    store = ArchiveCache(cache)
    region = Region(float(rec["ra"]) % 360.0, float(rec["dec"]), float(radius_deg))
    rows, notes = [], []
    for cat in dict.fromkeys(catalogs):
        label, fn = CATALOGS[cat]
        what = f"{label} cone ra={region.ra:.5f} dec={region.dec:.5f} r={region.radius:.4f} deg"
        ans = cached_answer(store, f"{cat}:cone", f"{region.ra:.6f},{region.dec:.6f},{region.radius:.6f}",
                            partial(fn, region.ra, region.dec, region.radius), what=what, offline=offline,
                            refresh=refresh, region=region)
        got = [r for r in ans.body if Region(region.ra, region.dec, region.radius).contains(
            Region(r["ra"], r["dec"], 0.0))]
        how = {"archive": f"fetched from {label} into the cache", "cache": "from the cache (--refresh to ask again)",
               "offline-cache": "offline: from the cache"}[ans.source]
        why = f" ({ans.reason})" if ans.reason and ans.reason != "--offline" else ""
        notes.append(f"{label}: {len(got)} sources, {how} {store.path}{why}")
        rows += [{**r, "catalog": cat} for r in got]
    if not rows:
        raise OpenAstroError(f"no catalogued sources within {radius_deg} deg of field {field_name!r} in "
                             f"{', '.join(catalogs)}; widen --radius")
    kinds = [classify(r["type"]) for r in rows]
    radius = [r["radius_arcsec"] if r["radius_arcsec"] is not None else
              (galaxy_radius_arcsec if k == "galaxy" else 0.0) for r, k in zip(rows, kinds, strict=True)]
    t = Table({"name": [r["name"] for r in rows], "ra": np.array([r["ra"] for r in rows], float),
               "dec": np.array([r["dec"] for r in rows], float), "kind": kinds,
               "radius_arcsec": np.array(radius, float), "otype": [r["type"] for r in rows],
               "catalog": [r["catalog"] for r in rows]})
    t.meta["source"] = "+".join(CATALOGS[c][0] for c in dict.fromkeys(catalogs))
    return FetchedSources(t, notes)
