"""User-facing errors.

Every error a user can cause derives from ``OpenAstroError`` so the CLIs can print its message as one clear
line (no traceback) and exit non-zero; anything else reaching the top is a bug and keeps its traceback.
"""


class OpenAstroError(Exception):
    """An error caused by input the user can fix; its message says what and where."""


class RepositoryError(OpenAstroError):
    """The repository is missing, not a repository, or of an incompatible schema."""


class UniverseError(OpenAstroError):
    """The dimension universe YAML is invalid."""


class WhereError(OpenAstroError):
    """A ``where`` expression is malformed or names something unknown."""


class DataIdError(OpenAstroError):
    """A data ID is incomplete, has unknown dimensions, or values of the wrong type."""


class ConflictError(OpenAstroError):
    """A write would contradict something already stored (dataset type, dimension record, dataset)."""


class MissingDatasetError(OpenAstroError):
    """A requested dataset does not exist in the searched collections."""


class FormatterError(OpenAstroError):
    """A file could not be read or written by the formatter of its storage class."""


class IngestError(OpenAstroError):
    """A file could not be ingested (its reason goes to the quarantine)."""


class CollectionNameError(OpenAstroError):
    """A collection (run, chain, tagged) name breaks the name grammar of ``registry/names.py``."""


class DatastorePathError(OpenAstroError):
    """A datastore path would leave the repository, or a dataset's file name cannot be formed."""
