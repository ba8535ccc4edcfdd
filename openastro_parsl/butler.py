"""The butler: one handle on a repository, joining the registry (what exists) and the datastore (the files).

Users, CLIs and tests hold a Butler; pipeline workers never do (they get file paths in their quantum).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml
from pydantic import BaseModel, ConfigDict, Field

from .datastore.checksum import file_checksum
from .datastore.datastore import Datastore
from .errors import OpenAstroError, RepositoryError
from .registry.refs import DatasetRef, DatasetType
from .registry.registry import Registry
from .registry.universe import DimensionUniverse
from .yamlconfig import ConfigError, load_model

CONFIG_NAME = "butler.yaml"
REGISTRY_FILE = "registry.sqlite3"
# postgresql://user@host:port[/PREFIX]: where `create` puts a new repository's registry when none is given, one
# database (PREFIX + part of the repository's uuid; PREFIX defaults to "openastro_") per repository.
REGISTRY_SERVER_ENV = "OPENASTRO_REGISTRY_SERVER"


class _RegistryConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    db: str = REGISTRY_FILE  # a path relative to the repo, or an SQLAlchemy URL


class _DatastoreConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    formatters: dict[str, str] = Field(default_factory=dict)  # storage class -> formatter name


class RepoConfig(BaseModel):
    """A repository's ``butler.yaml``: its identity (``uuid``) and its registry and datastore settings."""

    model_config = ConfigDict(extra="forbid")
    repository: str = "openastro-parsl"
    # Made at `create`; a quantum graph records it so that it is never run against another repository.
    uuid: str | None = None
    registry: _RegistryConfig = Field(default_factory=_RegistryConfig)
    datastore: _DatastoreConfig = Field(default_factory=_DatastoreConfig)


OWNER_KEY = "repository_root"  # the meta key naming the directory a server-side registry belongs to


def _holds(root: Path, repo_id: str | None) -> bool:
    """Whether ``root`` is (still) a repository with this identity."""
    try:
        return repo_id is not None and yaml.safe_load((root / CONFIG_NAME).read_text()).get("uuid") == repo_id
    except (OSError, yaml.YAMLError, AttributeError):
        return False


def _same_directory(a: Path, b: Path) -> bool:
    """One directory under two paths (a symlink, a bind mount, an NFS alias): not a copy."""
    try:
        return os.path.samefile(a / CONFIG_NAME, b / CONFIG_NAME)
    except OSError:
        return False


def _db_url(root: Path, db: str) -> str:
    return db if "://" in db else f"sqlite:///{(root / db).resolve()}"


def _default_db(repo_uuid: str) -> str:
    """The registry of a repository created without one.

    An SQLite file, or a new database on the server that ``$OPENASTRO_REGISTRY_SERVER`` names.
    """
    server = os.environ.get(REGISTRY_SERVER_ENV, "").strip()
    if not server:
        return REGISTRY_FILE
    scheme, sep, rest = server.partition("://")
    if not sep or not scheme.startswith("postgres"):
        raise RepositoryError(f"${REGISTRY_SERVER_ENV}={server!r} is not a PostgreSQL server URL "
                              "(postgresql://user@host:port[/PREFIX])")
    base, _, prefix = rest.partition("/")
    return f"{scheme}://{base}/{prefix or 'openastro_'}{repo_uuid.replace('-', '')[:16]}"


class Butler:
    """A repository opened for use: the registry (what exists) joined to the datastore (the files)."""

    def __init__(self, root: str | Path, *, run: str | None = None, collections: str | Sequence[str] | None = None):
        self.root = Path(root).resolve()
        if not self.root.exists():
            raise RepositoryError(f"no repository at {root}: the directory does not exist "
                                  f"(create one with `openastro-butler create {root}`)")
        cfg_path = self.root / CONFIG_NAME
        if not cfg_path.exists():
            raise RepositoryError(f"{root} is not an openastro-parsl repository (no {CONFIG_NAME}); "
                                  f"create one with `openastro-butler create {root}`")
        try:
            self.config = load_model(RepoConfig, cfg_path)
        except ConfigError as exc:
            raise RepositoryError(str(exc)) from None
        if self.config.uuid is None:
            self._add_uuid(cfg_path)
        self.registry = Registry(_db_url(self.root, self.config.registry.db))
        if "://" in self.config.registry.db:  # a registry outside the directory: a copy of it would share it
            self._claim_registry()
        self.datastore = Datastore(self.root, self.config.datastore.formatters)
        self.run = run
        self.collections = collections

    @classmethod
    def create(cls, root: str | Path, *, universe: str | Path | None = None, db: str | None = None,
               formatters: Mapping[str, str] | None = None) -> "Butler":
        """Create a repository: its config, an empty registry (with the universe) and the datastore root."""
        root = Path(root)
        if (root / CONFIG_NAME).exists():
            raise RepositoryError(f"{root} is already a repository")
        if root.exists() and not root.is_dir():
            raise RepositoryError(f"{root} exists and is not a directory")
        uni = DimensionUniverse.from_file(universe) if universe else DimensionUniverse.default()
        root.mkdir(parents=True, exist_ok=True)
        repo_uuid = str(uuid.uuid4())
        cfg = RepoConfig(uuid=repo_uuid, registry=_RegistryConfig(db=db or _default_db(repo_uuid)),
                         datastore=_DatastoreConfig(formatters=dict(formatters or {})))
        from .datastore.formatters import formatter_for

        for sc in cfg.datastore.formatters:
            formatter_for(sc, cfg.datastore.formatters)  # validate before anything is written
        Registry.create(_db_url(root.resolve(), cfg.registry.db), uni).close()
        (root / CONFIG_NAME).write_text(yaml.safe_dump(cfg.model_dump(), sort_keys=False))
        return cls(root)

    def _add_uuid(self, cfg_path: Path) -> None:
        """Repositories made before identities existed get one the first time they are opened (when writable)."""
        self.config.uuid = str(uuid.uuid4())
        tmp = cfg_path.with_name(f".{CONFIG_NAME}.{uuid.uuid4().hex[:8]}")
        try:
            tmp.write_text(yaml.safe_dump(self.config.model_dump(), sort_keys=False))
            os.replace(tmp, cfg_path)
        except OSError:
            self.config.uuid = None  # read-only repository: it keeps no identity, graphs fall back to its path
            tmp.unlink(missing_ok=True)

    def _claim_registry(self) -> None:
        """Refuse a copy of a repository whose registry is on a database server.

        ``cp -r`` of such a repository copies its ``butler.yaml`` (so its identity and database URL) but not the
        database: both directories would register files that only one of them holds, and each would find the
        other's datasets missing. The registry records the directory it belongs to. Opened from another one, it
        is refused while that directory still holds this repository; otherwise the repository was moved, and the
        registry now belongs here (where it can be written).
        """
        owner = self.registry.meta_value(OWNER_KEY)
        if owner == str(self.root) or (owner and _same_directory(Path(owner), self.root)):
            return  # its own directory (under another path, too: nothing to record)
        if owner and _holds(Path(owner), self.repo_id):
            raise RepositoryError(
                f"{self.root} shares its registry ({self.registry.display_url}) with the repository at {owner}, of "
                f"which it is a copy: a copy of a repository whose registry is on a database server is not a new "
                f"repository (it would register files that only one directory holds). Use {owner}, or give this "
                f"directory a database of its own in its {CONFIG_NAME} (registry.db) after emptying it")
        self.registry.set_meta_value(OWNER_KEY, str(self.root))

    @property
    def repo_id(self) -> str | None:
        """The repository's identity, kept by copies of it (a copy holds the same data) and by moves."""
        return self.config.uuid

    def check_graph(self, header: Mapping[str, Any], source: str = "the quantum graph") -> None:
        """Refuse a graph planned on another repository.

        Its outputs would be registered here but predicted, checked and linked against that one.
        """
        planned = header.get("repo_id")
        if planned and self.repo_id and planned != self.repo_id:
            raise RepositoryError(
                f"{source} was planned on repository {header.get('repo')} (id {planned}), not on {self.root} "
                f"(id {self.repo_id}); plan it again against {self.root}")
        if not planned and Path(header.get("repo", "")).resolve() != self.root:
            raise RepositoryError(f"{source} was planned on repository {header.get('repo')}, not on {self.root}; "
                                  f"plan it again against {self.root}")

    # -- convenience ----------------------------------------------------------------------------
    @property
    def universe(self) -> DimensionUniverse:
        return self.registry.universe

    def _collections(self, collections) -> str | Sequence[str]:
        coll = collections if collections is not None else self.collections
        if not coll:
            raise OpenAstroError("no collections given to search (pass collections=... or --collections)")
        return coll

    def _dataset_type(self, dataset_type: str | DatasetType) -> DatasetType:
        if isinstance(dataset_type, DatasetType):
            return self.registry.register_dataset_type(dataset_type)
        return self.registry.get_dataset_type(dataset_type)

    # -- reading and writing --------------------------------------------------------------------
    def put(self, obj: Any, dataset_type: str | DatasetType, data_id: Mapping[str, Any], run: str | None = None) -> DatasetRef:
        """Write ``obj`` and register it in ``run`` (created if new) in one step; a failure leaves neither."""
        run = run or self.run
        if not run:
            raise OpenAstroError("put needs an output run")
        dt = self._dataset_type(dataset_type)
        self.registry.register_run(run)
        full = self.registry.expand_data_id(dt.dimensions, data_id)
        key_dims = self.universe.required(dt.dimensions)
        existing = self.registry.query_datasets(dt.name, [run], data_id={k: full[k] for k in key_dims})
        if existing:
            raise OpenAstroError(f"{existing[0]} already exists; refusing to overwrite it")
        loc = self.datastore.write(obj, dataset_type=dt.name, storage_class=dt.storage_class, key_dims=key_dims,
                                   data_id=full, run=run)
        try:
            return self.registry.insert_datasets(dt, run, [(full, loc)])[0]
        except Exception:
            self.datastore.remove(loc["path"])
            raise

    def get(self, ref_or_type: DatasetRef | str, data_id: Mapping[str, Any] | None = None, *,
            collections: str | Sequence[str] | None = None, parameters: Mapping[str, Any] | None = None) -> Any:
        ref = ref_or_type if isinstance(ref_or_type, DatasetRef) else self.find(ref_or_type, data_id or {}, collections)
        path, formatter = ref.location()
        return self.datastore.read(path, formatter, parameters)

    def find(self, dataset_type: str, data_id: Mapping[str, Any], collections=None) -> DatasetRef:
        return self.registry.find_dataset(dataset_type, data_id, self._collections(collections))

    def path(self, ref: DatasetRef) -> Path:
        return self.datastore.abspath(ref.location()[0])

    def query_datasets(self, dataset_type: str, collections=None, where: str = "", binds=None,
                       find_first: bool = True) -> list[DatasetRef]:
        return self.registry.query_datasets(dataset_type, self._collections(collections), where, binds,
                                            find_first=find_first)

    def query_data_ids(self, dimensions: Sequence[str], where: str = "", binds=None, *, datasets: str | None = None,
                       collections=None) -> list[dict]:
        return self.registry.query_data_ids(dimensions, where, binds, datasets=datasets, collections=collections)

    def query_collections(self, pattern: str = "*"):
        return self.registry.query_collections(pattern)

    def set_chain(self, name: str, children: Sequence[str]) -> None:
        self.registry.set_chain(name, children)

    # -- integrity -----------------------------------------------------------------------------
    def verify(self) -> tuple[int, list[str]]:
        """Check every registered file exists and matches its checksum; return (checked, problems)."""
        problems, checked = [], 0
        for ref in self.registry.all_locations():
            checked += 1
            if ref.path is None:  # a dataset row without its location row
                problems.append(f"no file recorded: {ref}")
                continue
            full = self.datastore.abspath(ref.path)
            if not full.exists():
                problems.append(f"missing file: {ref} -> {full}")
            elif file_checksum(full) != ref.checksum:
                problems.append(f"checksum mismatch: {ref} -> {full}")
        return checked, problems
