"""The models a replica serves: loaded from the MLflow registry by alias, swapped atomically.

``ModelSlot`` holds one registered model's loaded version. ``refresh()`` asks
the registry which version the alias names; when it moved, the new version is
loaded *beside* the old one and then the slot's reference is replaced in one
assignment. A request takes the reference once (``slot.current``) and uses it
to the end, so in-flight requests finish on the version they started with and
no request ever sees a half-loaded model. A failed load keeps the old version
and records the error (shown by ``/v1/models``).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from paylake.errors import PaylakeError
from paylake.settings import Settings

log = logging.getLogger(__name__)
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # replicas' logs: no progress bars


class ModelNotReady(PaylakeError):
    """No version of the model is loaded yet (nothing registered under the alias, or its load failed)."""


@dataclass(frozen=True)
class Loaded:
    name: str
    alias: str
    version: str
    loaded_at: dt.datetime
    model: Any


class ModelSlot:
    def __init__(self, name: str, alias: str, resolve: Callable[[], str | None],
                 load: Callable[[str], Any]) -> None:
        self.name, self.alias = name, alias
        self._resolve, self._load = resolve, load
        self.current: Loaded | None = None
        self.last_error: str | None = None
        self._refreshing = threading.Lock()

    def refresh(self) -> bool:
        """Load the alias's version if it changed; True when a new version now answers."""
        with self._refreshing:  # one load at a time; readers never wait for it
            try:
                version = self._resolve()
                if version is None:
                    self.last_error = f"no {self.name}@{self.alias} in the registry yet"
                    return False
                if self.current is not None and self.current.version == version:
                    return False
                model = self._load(version)
            except Exception as exc:  # noqa: BLE001 - keep serving the old version, say why
                # the client sees the kind of failure; the text (paths, hosts) stays in the replica's log
                self.last_error = f"loading failed ({type(exc).__name__}): see the replica's log"
                log.warning("model %s@%s not (re)loaded: %s: %s", self.name, self.alias, type(exc).__name__, exc)
                return False
            self.current = Loaded(self.name, self.alias, version, dt.datetime.now(dt.UTC), model)
            self.last_error = None
            log.info("model %s@%s now answers with version %s", self.name, self.alias, version)
            return True

    def get(self) -> Loaded:
        loaded = self.current
        if loaded is None:
            raise ModelNotReady(f"model {self.name}@{self.alias} is not loaded: {self.last_error or 'loading'}")
        return loaded

    def info(self) -> dict:
        loaded = self.current
        return {"name": self.name, "alias": self.alias, "loaded": loaded is not None,
                "version": loaded.version if loaded else None,
                "loaded_at": loaded.loaded_at.isoformat() if loaded else None, "error": self.last_error}


def alias_resolver(settings: Settings, name: str, alias: str) -> Callable[[], str | None]:
    from paylake.ml import registry

    return lambda: registry.alias_version(settings, name, alias)
