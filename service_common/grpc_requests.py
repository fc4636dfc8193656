"""Undecodable requests answered INVALID_ARGUMENT instead of UNKNOWN.

gRPC decodes a request with the method's `request_deserializer` before any servicer
code runs; when the bytes are not a valid protobuf message (garbage, a truncated
frame, another message type) the aio server answers UNKNOWN "Unexpected <class
DecodeError>", which tells the caller neither that the fault is theirs nor what was
wrong. This interceptor takes the decoding over: the handler it returns receives the
raw bytes, decodes them itself and, on failure, aborts with INVALID_ARGUMENT and a
sentence naming the message type. Unary and streaming requests alike.

Limit: a request-streaming handler must read its requests through the request
iterator (as generated servicers do), not `context.read()`, which would see raw bytes.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from service_common.grpc_wrapping import WrappingInterceptor, behaviour_field

Deserializer = Callable[[bytes], Any]


class RequestDecodingInterceptor(WrappingInterceptor):
    """Install with `grpc.aio.server(interceptors=[RequestDecodingInterceptor()])`."""

    def wraps(self, method: str, handler: grpc.RpcMethodHandler) -> bool:
        return handler.request_deserializer is not None

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        return decoding_handler(handler, method)


def decoding_handler(handler: grpc.RpcMethodHandler, method: str = "") -> grpc.RpcMethodHandler:
    """`handler` taking raw bytes and decoding them itself, or `handler` unchanged when
    its behaviour is of a kind this module does not wrap (a synchronous one)."""
    # No deserializer means gRPC hands the handler the bytes as they came.
    deserialize: Deserializer = handler.request_deserializer or (lambda raw: raw)
    name = message_name(deserialize, method)

    async def decode(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
        try:
            return deserialize(raw)
        except Exception:  # DecodeError, or whatever a non-protobuf deserializer raises
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"the request is not a valid {name} message (its bytes are not a complete protobuf "
                f"encoding of it: truncated, corrupt or another message type)",
            )
            raise AssertionError("unreachable: abort raises") from None

    adapt: Callable[[Any, grpc.aio.ServicerContext], Any] | None = None
    if handler.request_streaming:
        behaviour = handler.stream_stream if handler.response_streaming else handler.stream_unary

        async def requests(iterator: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            async for raw in iterator:
                yield await decode(raw, context)

        def adapt_requests(iterator: Any, context: grpc.aio.ServicerContext) -> Any:
            return iterator if iterator is None else requests(iterator, context)

        adapt = adapt_requests
    else:
        behaviour = handler.unary_stream if handler.response_streaming else handler.unary_unary

    if inspect.isasyncgenfunction(behaviour):

        async def streaming(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            decoded = adapt(request, context) if adapt else await decode(request, context)
            async for response in behaviour(decoded, context):
                yield response

        new_behaviour: Callable[..., Any] = streaming
    elif inspect.iscoroutinefunction(behaviour):

        async def single(request: Any, context: grpc.aio.ServicerContext) -> Any:
            decoded = adapt(request, context) if adapt else await decode(request, context)
            return await behaviour(decoded, context)

        new_behaviour = single
    else:
        return handler

    return handler._replace(request_deserializer=None, **{behaviour_field(handler): new_behaviour})  # type: ignore[attr-defined,no-any-return]  # a namedtuple at run time


def message_name(deserialize: Deserializer, method: str = "") -> str:
    """`EmbedRequest` for `EmbedRequest.FromString`; the method's request otherwise."""
    owner = getattr(deserialize, "__self__", None)
    descriptor = getattr(owner, "DESCRIPTOR", None)
    if descriptor is not None:
        return str(descriptor.name)
    return f"{method.rsplit('/', 1)[-1] or 'request'} request"
