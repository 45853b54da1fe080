"""Checks a command makes before it starts any flow: the work folder, the tracking store and the device are usable.

Each failure is a `ConfigError` (one line, exit 2) raised within
milliseconds, where the first write into an unwritable folder would
otherwise surface minutes later as a raw ``PermissionError`` or as MLflow's
SQLAlchemy retry loop giving up on ``unable to open database file``.
Reachability of a tracking server is not a precondition: it is retried and
reported as exit 4 where it is used.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from normlab.config import PipelineConfig
from normlab.credentials import redact_uri, store_uri
from normlab.errors import ConfigError
from normlab.tracking import sqlite_path

_SQLITE_HEADER = b"SQLite format 3\x00"
# URI schemes MLflow opens with SQLAlchemy (its database tracking stores).
_DATABASE_SCHEMES = ("postgresql", "mysql", "mssql", "sqlite")


def check_workdir(folder: Path) -> Path:
    """The work folder; `ConfigError` when it cannot be a folder normlab writes into (nothing is created)."""
    _writable_folder(folder, "workdir")
    return folder


def check_store(uri: str) -> None:
    """A SQLite store's file can be created or opened for writing; a database store's driver is installed."""
    shown = redact_uri(uri)
    scheme = uri.split(":", 1)[0].split("+", 1)[0].lower()
    db = sqlite_path(uri)
    if db is not None:
        _writable_folder(db.parent, f"tracking store {shown}: its folder")
        if db.exists():
            if not db.is_file():
                raise ConfigError(f"tracking store {shown}: {db} is not a file")
            if not os.access(db, os.R_OK | os.W_OK):
                raise ConfigError(f"tracking store {shown}: {db} cannot be read and written by this user")
            with db.open("rb") as handle:
                head = handle.read(len(_SQLITE_HEADER))
            if head and head != _SQLITE_HEADER:
                raise ConfigError(f"tracking store {shown}: {db} is not an SQLite database")
        return
    if scheme in _DATABASE_SCHEMES:
        _check_driver(store_uri(uri), shown)


def check_device(device: str, precision: str) -> None:
    """``train.device`` is there and ``train.precision`` runs on it (`normlab.device`).

    The default (auto or cpu, fp32) cannot fail, so it is passed without importing torch (about 2 s).
    """
    if device in ("auto", "cpu") and precision == "fp32":
        return
    from normlab.device import resolve_device, resolve_precision

    resolve_precision(precision, resolve_device(device))


def check_all(cfg: PipelineConfig) -> None:
    """Every check of this module, in the order a run needs them."""
    check_workdir(cfg.workdir_path())
    check_store(cfg.tracking_uri())
    check_device(cfg.train.device, cfg.train.precision)


def _writable_folder(folder: Path, what: str) -> None:
    """`ConfigError` unless ``folder`` is, or can be created as, a folder this user can write into.

    Nothing is created: the nearest existing ancestor must be a folder that takes a new file.
    """
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{what} {folder} exists and is not a folder")
    existing = folder
    while not existing.exists():
        if existing.is_symlink():
            raise ConfigError(f"{what} {folder} cannot be created ({existing} is a broken link)")
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{what} {folder} cannot be created ({existing} is not a folder)")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        if existing == folder:
            raise ConfigError(f"{what} {folder} is not writable ({reason})") from None
        raise ConfigError(f"{what} {folder} cannot be created ({existing} is not writable: {reason})") from None


def _check_driver(uri: str, shown: str) -> None:
    """The SQLAlchemy dialect and driver of ``uri`` import (nothing is connected)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        url = make_url(uri)
    except ArgumentError:
        raise ConfigError(f"tracking.uri {shown} is not a database URL SQLAlchemy can read") from None
    try:
        url.get_dialect().import_dbapi()
    except NoSuchModuleError:
        raise ConfigError(f"tracking.uri {shown}: SQLAlchemy has no dialect '{url.drivername}'") from None
    except ImportError as exc:
        raise ConfigError(
            f"tracking.uri {shown}: the database driver for '{url.drivername}' is not installed ({exc.name or exc})"
        ) from None
