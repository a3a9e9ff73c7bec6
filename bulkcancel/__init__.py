"""bulkcancel: cancel Google Cloud long-running operations in bulk, and prove what happened.

The library surface is small on purpose::

    report = await bulkcancel.cancel_operations(names, token=...)
    async with bulkcancel.stream_operations(names, token=...) as results: ...

Everything else lives in private modules and may change.
"""

from bulkcancel._api import cancel_operations, stream_operations
from bulkcancel._config import DEFAULT_ENDPOINT
from bulkcancel._errors import (
    AuthenticationRejectedError,
    BulkCancelError,
    ConfigError,
    CredentialsError,
    JournalMismatchError,
    UnsafeEndpointError,
)
from bulkcancel._models import OperationResult, Outcome, Report
from bulkcancel._names import ANY_SHAPE, CLOUD_DEPLOY_PATTERNS, InvalidNameError, NameRules

__version__ = "0.1.0"

__all__ = [
    "ANY_SHAPE",
    "CLOUD_DEPLOY_PATTERNS",
    "DEFAULT_ENDPOINT",
    "AuthenticationRejectedError",
    "BulkCancelError",
    "ConfigError",
    "CredentialsError",
    "InvalidNameError",
    "JournalMismatchError",
    "NameRules",
    "OperationResult",
    "Outcome",
    "Report",
    "UnsafeEndpointError",
    "__version__",
    "cancel_operations",
    "stream_operations",
]
