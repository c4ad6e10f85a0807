"""MongoDB connection factory (pymongo)."""

from __future__ import annotations

import pymongo
from pymongo.database import Database
from pymongo.errors import PyMongoError

from paylake.errors import StoreUnavailable
from paylake.settings import Settings, redact_url


def client(settings: Settings, *, timeout_ms: int = 5000) -> pymongo.MongoClient:
    """A connected client; raises StoreUnavailable when the server does not answer."""
    uri = settings.mongo_uri.get_secret_value()
    mongo = pymongo.MongoClient(uri, serverSelectionTimeoutMS=timeout_ms, tz_aware=True)
    try:
        mongo.admin.command("ping")
    except PyMongoError as exc:
        mongo.close()
        raise StoreUnavailable(
            f"MongoDB at {redact_url(uri)} did not answer ({type(exc).__name__}): run 'paylake stack up' "
            "or check PAYLAKE_MONGO_URI"
        ) from exc
    return mongo


def database(mongo: pymongo.MongoClient, settings: Settings) -> Database:
    return mongo[settings.mongo_database]
