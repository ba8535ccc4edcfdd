"""An instrument's colour terms from a repository's field fits, pooled over fields: the transformation
coefficients ``fieldCalibration`` can then take as known (config ``colour_terms``).

Why: on one field the colour terms rest on the few stars the frames see and their catalogue errors, which no
number of frames averages down (docs/zeropoints.md); the zero-point at colour 0 is extrapolated along them.
Different fields see different stars, so their colour terms are independent measurements of the same
instrument property, and a standard field (M67, a Landolt field: hundreds of stars with small errors) measures
it in one night. Field fits that already took a group's colour term as known are left out of that group's pool,
so a coefficient is never fed back into itself.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

__all__ = ["PooledColourTerm", "override_file", "pool_colour_terms"]


@dataclass
class PooledColourTerm:
    """One instrument x band's colour term against one catalogue colour, over the fields that measured it."""

    instrument: str
    band: str
    colour_index: str
    value: float
    error: float  # the weighted mean's, scaled up by the fields' scatter when it exceeds their errors
    chi2_red: float  # of the fields about the mean (1.0 for a single field)
    fields: list[tuple[str, float, float]] = field(default_factory=list)  # (field, value, error)

    @property
    def key(self) -> str:
        return f"{self.instrument}/{self.band}"


def pool_colour_terms(tables: Iterable) -> tuple[list[PooledColourTerm], list[str]]:
    """Pool the ``colour_terms`` of ``fieldZeropoints`` tables (their meta) per colour index, instrument and band.

    Returns the pooled terms (sorted) and notes on what was left out and why."""
    found: dict[tuple[str, str, str], list[tuple[str, float, float]]] = {}
    notes = []
    for t in tables:
        meta = t.meta
        name, index = str(meta.get("field", "?")), str(meta.get("colour_index", "g-r"))
        known = set(meta.get("colour_terms_known", []))
        for key, (ct, err) in meta.get("colour_terms", {}).items():
            if key in known:
                notes.append(f"field {name}: {key} left out (its fit took the colour term as known)")
                continue
            if not (np.isfinite(ct) and np.isfinite(err) and err > 0):
                notes.append(f"field {name}: {key} left out (no finite colour term or error)")
                continue
            inst, _, band = key.partition("/")
            found.setdefault((index, inst, band), []).append((name, float(ct), float(err)))
    out = []
    for (index, inst, band), rows in sorted(found.items()):
        v = np.array([r[1] for r in rows])
        w = 1.0 / np.array([r[2] for r in rows]) ** 2
        mean = float(np.sum(w * v) / np.sum(w))
        chi2 = float(np.sum(w * (v - mean) ** 2) / (len(v) - 1)) if len(v) > 1 else 1.0
        err = float(np.sqrt(1.0 / np.sum(w)) * np.sqrt(max(chi2, 1.0)))
        out.append(PooledColourTerm(inst, band, index, mean, err, chi2, sorted(rows)))
    return out, notes


def override_file(pooled: list[PooledColourTerm]) -> str:
    """A config override file (``-C fieldCalibration:FILE``) that makes the field fit take these colour terms as
    known; they must all be against one colour index."""
    indices = sorted({p.colour_index for p in pooled})
    if len(indices) != 1:
        raise ValueError(f"colour terms against {len(indices)} colour indices ({', '.join(indices)}); "
                         "choose one")
    lines = ["# fieldCalibration config: plan with -C fieldCalibration:THIS_FILE",
             f"colour_terms_index: {indices[0]}", "colour_terms:"]
    lines += [f"  {p.key}: [{p.value:.4f}, {p.error:.4f}]  # {len(p.fields)} field(s)" for p in pooled]
    return "\n".join(lines) + "\n"
