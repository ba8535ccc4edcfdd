"""Connections: what a task reads and writes, declared once on the class.

The planner reads these declarations (never the task's code) to wire quanta together, so a task's dataset
types, their dimensions and storage classes must be spelled out here, and nowhere else. A Connections class
checks its declarations when it is defined (as pipe_base's do), so a mistake fails at import with the class
and connection named, not as a puzzling plan or a failed quantum much later.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterable, Iterator, Mapping, Sequence

from ..errors import OpenAstroError


class PipelineError(OpenAstroError):
    """A pipeline or task definition is invalid."""


@dataclass(frozen=True)
class Connection:
    """One named input or output of a task (the name is the keyword ``run`` receives or returns)."""

    dataset_type: str
    dimensions: tuple[str, ...]
    storage_class: str
    multiple: bool = False
    doc: str = ""
    kind: str = "input"  # input | prerequisite | output
    name: str = ""       # filled in from the attribute name
    minimum: int = 1     # fewest datasets a `multiple` input needs for the quantum to run
    lazy: bool = False   # read memory-mapped (images): a gathering task touches one chunk at a time
    hint: str = ""       # prerequisites: what to run when one is missing ({dimension} and {repo} filled in)
    # A prerequisite found by validity range: the dataset certified in a CALIBRATION collection for the night
    # of the quantum's exposure (registry/calibs.py), not by data ID alone.
    calibration: bool = False
    # Further dataset types of a regular input, in order: a data ID the first type lacks (in the inputs and
    # among the pipeline's outputs) takes the next (`connections: {raw: [postIsrImage, raw]}`).
    alternatives: tuple[str, ...] = ()
    # A prerequisite the task can do without (an orbit file for vetting): none found is not a planning error;
    # the task gets the list of those found, empty when there are none.
    optional: bool = False

    @property
    def dataset_types(self) -> tuple[str, ...]:
        """The dataset type and its alternatives, in the order a data ID looks for them."""
        return (self.dataset_type,) + self.alternatives

    def renamed(self, dataset_type: str | Sequence[str]) -> "Connection":
        """The connection reading (or writing) another dataset type; a list names alternatives in order."""
        if isinstance(dataset_type, str):
            return replace(self, dataset_type=dataset_type, alternatives=())
        names = list(dataset_type)
        if not names or not all(isinstance(n, str) and n for n in names) or len(set(names)) != len(names):
            raise PipelineError(f"connection {self.name!r}: a list of dataset types must name distinct types, "
                                f"got {names!r}")
        if len(names) > 1 and self.kind != "input":
            raise PipelineError(f"connection {self.name!r}: only a regular input can name alternative dataset "
                                f"types ({names!r}); it is a {self.kind}")
        return replace(self, dataset_type=names[0], alternatives=tuple(names[1:]))


def _dims(value: Iterable[str]) -> tuple[str, ...]:
    """``tuple(value)``, except that a lone string stays whole.

    The class check then refuses it by name: ``tuple("exposure")`` would silently be eight one-letter dimensions.
    """
    return value if isinstance(value, str) else tuple(value)  # type: ignore[return-value]


def Input(dataset_type: str, dimensions: Iterable[str], storage_class: str, *, multiple: bool = False,
          doc: str = "", minimum: int = 1, lazy: bool = False) -> Connection:
    """A regular input: produced by another task of the pipeline, or found in the input collections.

    ``lazy=True`` hands the task memory-mapped images, so a co-add of hundreds of frames stays within its
    memory cap by reading one chunk of each at a time.
    """
    return Connection(dataset_type, _dims(dimensions), storage_class, multiple, doc, "input", minimum=minimum,
                      lazy=lazy)


def PrerequisiteInput(dataset_type: str, dimensions: Iterable[str], storage_class: str, *,
                      multiple: bool = False, doc: str = "", calibration: bool = False,
                      hint: str = "", optional: bool = False) -> Connection:
    """An input that must already exist in the input collections (a reference catalogue, a calibration).

    ``calibration=True``: the dataset certified (``openastro-butler certify-calibrations``) with a validity
    range holding the night of the quantum's exposure, looked up in the CALIBRATION collections of the inputs.
    ``hint``: what a user whose plan lacks one should run, e.g. ``"openastro-butler ingest-refcat {repo} FILE
    --field {field}"``; the planner prints it after the missing data ID with ``{repo}`` and the data ID's
    dimensions filled in. ``optional=True``: planning goes on without one (``run`` gets a list, empty if none).
    """
    if optional:  # a list, possibly empty: ``run`` receives [] when the input collections hold none
        return Connection(dataset_type, _dims(dimensions), storage_class, True, doc, "prerequisite", minimum=0,
                          calibration=calibration, hint=hint, optional=True)
    return Connection(dataset_type, _dims(dimensions), storage_class, multiple, doc, "prerequisite",
                      calibration=calibration, hint=hint)


def Output(dataset_type: str, dimensions: Iterable[str], storage_class: str, *, doc: str = "") -> Connection:
    """A dataset the task writes: one per quantum, a key of the mapping ``run`` returns."""
    return Connection(dataset_type, _dims(dimensions), storage_class, False, doc, "output")


def _check_connection(where: str, c: Connection) -> None:
    from ..datastore.formatters import STORAGE_CLASSES  # here: it loads astropy, which the task API alone need not

    if not isinstance(c.dataset_type, str) or not c.dataset_type:
        raise PipelineError(f"{where}: dataset type must be a non-empty string, not {c.dataset_type!r}")
    if isinstance(c.dimensions, str):
        raise PipelineError(f"{where}: dimensions {c.dimensions!r} is a string; write a tuple, "
                            f"e.g. ({c.dimensions!r},)")
    if not all(isinstance(d, str) and d for d in c.dimensions):
        raise PipelineError(f"{where}: dimensions must be names, got {c.dimensions!r}")
    if len(set(c.dimensions)) != len(c.dimensions):
        raise PipelineError(f"{where}: dimensions {c.dimensions!r} name a dimension twice")
    if c.storage_class not in STORAGE_CLASSES:
        raise PipelineError(f"{where}: unknown storage class {c.storage_class!r}; known: "
                            f"{', '.join(STORAGE_CLASSES)}")
    if c.minimum != 1 and not c.multiple:
        raise PipelineError(f"{where}: minimum={c.minimum} needs multiple=True (a single input is always one "
                            f"dataset)")
    if c.minimum < 0:
        raise PipelineError(f"{where}: minimum={c.minimum} is negative")


def check_dataset_types(where: str, connections: Mapping[str, Connection]) -> None:
    """Refuse outputs that clash with the task's other dataset types.

    An output whose dataset type is also one of the inputs would feed its own quantum; two outputs of one
    dataset type would be written to one file. Also run after ``config.connections`` renames, which can make
    either happen.
    """
    read = {t: n for n, c in connections.items() if c.kind != "output" for t in c.dataset_types}
    written: dict[str, str] = {}
    for n, c in connections.items():
        if c.kind != "output":
            continue
        if c.dataset_type in read:
            raise PipelineError(f"{where}: output {n!r} writes {c.dataset_type!r}, which input "
                                f"{read[c.dataset_type]!r} reads")
        if c.dataset_type in written:
            raise PipelineError(f"{where}: outputs {written[c.dataset_type]!r} and {n!r} both write "
                                f"{c.dataset_type!r}")
        written[c.dataset_type] = n


class Connections:
    """Subclass and assign Input/PrerequisiteInput/Output attributes; the attribute name is the connection name.

    Other attributes are left alone. Declarations are checked when the subclass is defined.
    """

    _connections: dict[str, Connection] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        found: dict[str, Connection] = {}
        for base in reversed(cls.__mro__[1:]):
            found.update(getattr(base, "_connections", {}))
        for name, value in list(vars(cls).items()):
            if isinstance(value, Connection):
                _check_connection(f"{cls.__qualname__}.{name}", value)
                found[name] = replace(value, name=name)
        check_dataset_types(cls.__qualname__, found)
        cls._connections = found

    @classmethod
    def all(cls) -> dict[str, Connection]:
        return dict(cls._connections)

    @classmethod
    def of_kind(cls, *kinds: str) -> Iterator[Connection]:
        return (c for c in cls.all().values() if c.kind in kinds)
