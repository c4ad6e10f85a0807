"""The few expected failures of paylake.

Every message says what failed and what to do next; the CLI prints it on one
line and exits non-zero. Unexpected failures keep their traceback.
"""


class PaylakeError(Exception):
    """An expected failure with a message fit for a user."""


class ConfigError(PaylakeError):
    """Settings are missing or invalid."""


class StackError(PaylakeError):
    """A local-stack service could not be started, reached or stopped."""


class StoreUnavailable(PaylakeError):
    """A store (database, object store, warehouse) refused or timed out."""


class ContractError(PaylakeError):
    """Data violated its contract beyond the tolerated threshold."""
