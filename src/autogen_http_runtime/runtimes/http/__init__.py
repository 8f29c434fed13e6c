"""The seed's import path: ``from autogen_http_runtime.runtimes.http import HttpWorkerAgentRuntime``.

Re-exports the very same objects as :mod:`autogen_http_runtime`, every name of its ``__all__``.
"""

from ... import *  # noqa: F403 - the whole public surface, as it is
from ... import __all__ as __all__
