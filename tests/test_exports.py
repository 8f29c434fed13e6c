"""The public surface: what the package exports, and the exception tree. No sockets."""

from __future__ import annotations

import asyncio
import pickle
import types

import pytest

import autogen_http_runtime
import autogen_http_runtime.runtimes.http as compat
from autogen_http_runtime import (
    AgentNotFoundError,
    AgentTypeConflictError,
    AuthenticationError,
    CallCancelledError,
    CallTimeoutError,
    ClusterJoinError,
    ClusterUnavailableError,
    HostConnectionError,
    HostShuttingDownError,
    HttpRuntimeError,
    MessageTooLargeError,
    PermissionDeniedError,
    ProtocolError,
    RemoteAgentError,
    RpcError,
    SerializationError,
    SubscriptionError,
    TLSError,
    TooManyCallsError,
    WorkerDisconnectedError,
)
from autogen_http_runtime._exceptions import error_from_wire

CLASSES = ("HttpAgentServer", "HttpAgentService", "HttpWorkerAgentRuntime")
EXCEPTIONS = [
    AgentNotFoundError,
    AgentTypeConflictError,
    AuthenticationError,
    CallCancelledError,
    CallTimeoutError,
    ClusterJoinError,
    ClusterUnavailableError,
    HostConnectionError,
    HostShuttingDownError,
    HttpRuntimeError,
    MessageTooLargeError,
    PermissionDeniedError,
    ProtocolError,
    RemoteAgentError,
    RpcError,
    SerializationError,
    SubscriptionError,
    TLSError,
    TooManyCallsError,
    WorkerDisconnectedError,
]


def public_names(module: types.ModuleType) -> set[str]:
    return {
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }


def test_all_is_sorted_and_unique() -> None:
    names = autogen_http_runtime.__all__
    assert names == sorted(names)
    assert len(set(names)) == len(names)


def test_all_is_complete() -> None:
    exported = set(autogen_http_runtime.__all__)
    assert public_names(autogen_http_runtime) <= exported
    assert {*CLASSES, *(cls.__name__ for cls in EXCEPTIONS)} <= exported
    for name in exported:
        assert hasattr(autogen_http_runtime, name), name


def test_public_objects_claim_the_package_as_their_module() -> None:
    for name in autogen_http_runtime.__all__:
        value = getattr(autogen_http_runtime, name)
        if isinstance(value, type):
            assert value.__module__ == "autogen_http_runtime", name


def test_version_is_a_string() -> None:
    assert isinstance(autogen_http_runtime.__version__, str)
    assert autogen_http_runtime.__version__.count(".") >= 1


def test_compatibility_path_exports_the_same_objects() -> None:
    assert compat.__all__ == sorted(compat.__all__)
    assert compat.__all__ == autogen_http_runtime.__all__
    assert public_names(compat) <= set(compat.__all__)
    for name in compat.__all__:
        assert getattr(compat, name) is getattr(autogen_http_runtime, name), name


def test_compatibility_path_in_a_fresh_import_statement() -> None:
    from autogen_http_runtime.runtimes.http import (
        HttpAgentServer,
        HttpAgentService,
        HttpWorkerAgentRuntime,
    )

    assert HttpAgentServer is autogen_http_runtime.HttpAgentServer
    assert HttpAgentService is autogen_http_runtime.HttpAgentService
    assert HttpWorkerAgentRuntime is autogen_http_runtime.HttpWorkerAgentRuntime


# -- the exception tree ---------------------------------------------------------------------


@pytest.mark.parametrize("cls", EXCEPTIONS, ids=lambda cls: cls.__name__)
def test_every_exception_derives_from_the_root(cls: type[Exception]) -> None:
    assert issubclass(cls, HttpRuntimeError)


def test_every_exported_exception_is_listed_here() -> None:
    exported = {
        value
        for name in autogen_http_runtime.__all__
        if isinstance(value := getattr(autogen_http_runtime, name), type) and issubclass(value, BaseException)
    }
    assert exported == set(EXCEPTIONS)


@pytest.mark.parametrize(
    ("cls", "builtin"),
    [
        (AgentNotFoundError, LookupError),
        (AgentTypeConflictError, ValueError),
        (SubscriptionError, ValueError),
        (SerializationError, ValueError),
        (CallTimeoutError, TimeoutError),
        (HostConnectionError, ConnectionError),
        (AuthenticationError, HostConnectionError),
        (TLSError, HostConnectionError),
        (PermissionDeniedError, PermissionError),
    ],
)
def test_exceptions_also_derive_from_the_builtin_the_in_process_runtime_raises(
    cls: type[Exception], builtin: type[Exception]
) -> None:
    assert issubclass(cls, builtin)


@pytest.mark.parametrize(
    "cls",
    [
        ProtocolError,
        AgentNotFoundError,
        WorkerDisconnectedError,
        RemoteAgentError,
        AgentTypeConflictError,
        SubscriptionError,
        CallTimeoutError,
        MessageTooLargeError,
        CallCancelledError,
        HostShuttingDownError,
        TooManyCallsError,
        PermissionDeniedError,
        ClusterUnavailableError,
    ],
)
def test_rpc_errors_derive_from_rpc_error(cls: type[Exception]) -> None:
    assert issubclass(cls, RpcError)


def test_connection_and_serialization_errors_are_not_rpc_errors() -> None:
    assert not issubclass(HostConnectionError, RpcError)
    assert not issubclass(SerializationError, RpcError)


def test_call_cancelled_error_is_not_asyncio_cancelled_error() -> None:
    # A remote cancellation must not look like cancellation of the caller's own task.
    assert not issubclass(CallCancelledError, asyncio.CancelledError)
    assert issubclass(CallCancelledError, Exception)


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        (-32001, AgentNotFoundError),
        (-32002, WorkerDisconnectedError),
        (-32003, RemoteAgentError),
        (-32004, AgentTypeConflictError),
        (-32005, SubscriptionError),
        (-32006, SubscriptionError),
        (-32007, CallTimeoutError),
        (-32008, MessageTooLargeError),
        (-32009, CallCancelledError),
        (-32010, HostShuttingDownError),
        (-32011, TooManyCallsError),
        (-32012, PermissionDeniedError),
        (-32013, ClusterUnavailableError),
        (-32700, ProtocolError),
        (-32600, ProtocolError),
        (-32601, ProtocolError),
        (-32602, ProtocolError),
        (-32603, ProtocolError),
        (-32768, ProtocolError),
        (-32000, RpcError),
        (-32014, RpcError),
        (1, RpcError),
    ],
)
def test_error_from_wire_maps_each_code(code: int, cls: type[RpcError]) -> None:
    error = error_from_wire(code, "the message", {"detail": 1})
    assert type(error) is cls
    assert (error.code, error.message, error.data) == (code, "the message", {"detail": 1})


def test_class_codes_match_the_wire_codes() -> None:
    for cls in EXCEPTIONS:
        if issubclass(cls, RpcError) and cls not in (RpcError, ProtocolError):
            assert type(error_from_wire(cls.code, "m")) is cls


def test_remote_agent_error_exposes_the_remote_failure() -> None:
    error = error_from_wire(
        -32003,
        "ValueError: kaboom",
        {"type": "ValueError", "message": "kaboom", "traceback": "Traceback ...\nValueError: kaboom\n"},
    )
    assert isinstance(error, RemoteAgentError)
    assert error.remote_type == "ValueError"
    assert error.remote_message == "kaboom"
    assert error.remote_traceback == "Traceback ...\nValueError: kaboom\n"
    assert str(error) == "ValueError: kaboom"


def test_remote_agent_error_without_details() -> None:
    error = RemoteAgentError("it failed")
    assert (error.remote_type, error.remote_message, error.remote_traceback) == (
        "Exception",
        "it failed",
        None,
    )
    assert error.code == -32003
    odd = RemoteAgentError("m", data={"type": "KeyError", "traceback": 42})
    assert (odd.remote_type, odd.remote_message, odd.remote_traceback) == ("KeyError", "m", None)


@pytest.mark.parametrize("code", [-32700, -32001, -32002, -32003, -32004, -32005, -32006, -32007, -32010, 7])
def test_rpc_errors_pickle_round_trip(code: int) -> None:
    error = error_from_wire(code, "why", {"type": "ValueError", "message": "m", "traceback": "tb"})
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert (copy.code, copy.message, copy.data, str(copy)) == (
        error.code,
        error.message,
        error.data,
        str(error),
    )
    if isinstance(error, RemoteAgentError):
        assert isinstance(copy, RemoteAgentError)
        assert (copy.remote_type, copy.remote_message, copy.remote_traceback) == ("ValueError", "m", "tb")


@pytest.mark.parametrize("cls", [HttpRuntimeError, HostConnectionError, SerializationError])
def test_other_exceptions_pickle_round_trip(cls: type[Exception]) -> None:
    copy = pickle.loads(pickle.dumps(cls("lost")))
    assert type(copy) is cls
    assert str(copy) == "lost"
