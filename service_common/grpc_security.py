"""Securing the calls between the services: TLS (optionally mutual) and a shared bearer token.

Both are off by default (plaintext on loopback, as in development and compose) and meant
to be on wherever the network is shared (the Kubernetes overlay). What each side reads:

- a server (`ServerSecurity`): `<PREFIX>TLS_CERT_FILE` and `<PREFIX>TLS_KEY_FILE` turn TLS
  on; `<PREFIX>TLS_CLIENT_CA_FILE` adds mutual TLS (a client must present a certificate
  signed by that CA); `<PREFIX>AUTH_TOKEN` makes every call to the application services
  carry `authorization: Bearer <token>` (`BearerTokenInterceptor`).
- a client (`ClientSecurity`): the CA that signed the servers' certificates, optionally its
  own certificate and key for mutual TLS, a server name to verify when the target's host
  is not the certificate's (an IP, a `dns:///` name of another form), and the token, sent
  as gRPC call credentials.

Decisions, and why:
- A token needs TLS, on both sides (the settings refuse one without it): a bearer token
  sent in clear text is readable by anyone on the path, and gRPC itself refuses call
  credentials on a plaintext channel.
- Health and reflection stay open: Kubernetes probes and `grpc_health_probe` carry no
  token, and neither reveals data (TLS still applies to them; with mutual TLS a probe needs
  the client certificate too, or an exec probe that has it).
- The token is compared in constant time, as SHA-256 digests, so that neither its content
  nor its length leaks through timing; it is never logged nor shown in an error.
- Certificate files are read again when they change (checked at each TLS handshake, which
  gRPC asks for through `dynamic_ssl_server_credentials`), so a certificate rotated on disk
  (cert-manager, a projected Secret) is served without a restart. A client's channel keeps
  what it read at start (gRPC Python cannot reload channel credentials).
- PEM files are checked at start with the standard `ssl` module (a key that does not match
  its certificate, a CA file with no certificate), so that a mistake stops the service with
  the variable's name instead of failing every handshake later.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2
from pydantic import SecretStr

from service_common.grpc_wrapping import WrappingInterceptor, behaviour_field

log = logging.getLogger(__name__)

# Callable without a token: probes and tools (grpcurl, grpc_health_probe) carry none.
OPEN_SERVICES: tuple[str, ...] = (
    health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection",
)
AUTHORIZATION = "authorization"
# At most one warning about refused calls per this many seconds: a misconfigured client
# would otherwise write one line per call.
REFUSAL_LOG_INTERVAL_S = 30.0


class SecurityConfigError(ValueError):
    """A certificate, key or CA file cannot be used; the message names its variable."""


# --- rules for the settings classes (their model validators call these)


def token_problem(variable: str, token: SecretStr | None) -> str | None:
    """Why `token` cannot be sent as gRPC metadata, or None. Never quotes the token."""
    if token is None:
        return None
    value = token.get_secret_value()
    # gRPC metadata values are printable ASCII; a space would split "Bearer <token>".
    if not value or not all("!" <= char <= "~" for char in value):
        return f"{variable} must be printable ASCII without spaces (the value is not shown: it is a secret)"
    return None


def server_problem(
    prefix: str, cert: Path | None, key: Path | None, client_ca: Path | None, token: SecretStr | None
) -> str | None:
    """The first rule between a server's security settings that they break, or None."""
    if (cert is None) != (key is None):
        return f"{prefix}TLS_CERT_FILE and {prefix}TLS_KEY_FILE must be set together"
    if client_ca is not None and cert is None:
        return f"{prefix}TLS_CLIENT_CA_FILE (mutual TLS) needs {prefix}TLS_CERT_FILE and {prefix}TLS_KEY_FILE"
    if token is not None and cert is None:
        return (f"{prefix}AUTH_TOKEN needs {prefix}TLS_CERT_FILE and {prefix}TLS_KEY_FILE:"
                " a bearer token sent in clear text can be read by anyone on the network")
    return token_problem(f"{prefix}AUTH_TOKEN", token)


def client_problem(
    prefix: str, ca: Path | None, cert: Path | None, key: Path | None, server_name: str,
    tokens: Sequence[tuple[str, SecretStr | None]],
) -> str | None:
    """The first rule between a client's security settings that they break, or None.
    `tokens`: (variable, value) of each backend's token."""
    if (cert is None) != (key is None):
        return f"{prefix}GRPC_TLS_CERT_FILE and {prefix}GRPC_TLS_KEY_FILE must be set together"
    if ca is None:
        if cert is not None:
            return f"{prefix}GRPC_TLS_CERT_FILE (mutual TLS) needs {prefix}GRPC_TLS_CA_FILE"
        if server_name:
            return f"{prefix}GRPC_TLS_SERVER_NAME needs {prefix}GRPC_TLS_CA_FILE"
        for variable, token in tokens:
            if token is not None:
                return (f"{variable} needs {prefix}GRPC_TLS_CA_FILE: a bearer token sent in clear text"
                        " can be read by anyone on the network")
    for variable, token in tokens:
        problem = token_problem(variable, token)
        if problem:
            return problem
    return None


# --- reading PEM files


def _read(path: Path, variable: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SecurityConfigError(f"{variable}={str(path)!r} cannot be read: {exc.strerror or exc}") from None


def _check_pair(cert: Path, key: Path, cert_variable: str, key_variable: str) -> None:
    _read(cert, cert_variable)  # a missing file is named as such, before ssl's vaguer error
    _read(key, key_variable)
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        raise SecurityConfigError(
            f"{cert_variable}={str(cert)!r} and {key_variable}={str(key)!r} are not a PEM certificate and its"
            f" unencrypted private key ({exc.reason or exc})") from None


def _check_ca(ca: Path, variable: str) -> None:
    _read(ca, variable)
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=ca)
    except ssl.SSLError as exc:
        raise SecurityConfigError(f"{variable}={str(ca)!r} holds no PEM CA certificate ({exc.reason or exc})") from None


@dataclass(frozen=True)
class _Files:
    """A set of PEM files, remembered with their modification times to notice rotation."""

    paths: tuple[Path, ...]
    stamps: tuple[int, ...]

    @classmethod
    def of(cls, paths: Sequence[Path]) -> _Files:
        return cls(tuple(paths), tuple(_stamp(path) for path in paths))

    def changed(self) -> bool:
        return tuple(_stamp(path) for path in self.paths) != self.stamps


def _stamp(path: Path) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return -1  # gone for a moment (a Secret being swapped): keep serving what was read


# --- the server side


@dataclass(frozen=True)
class ServerSecurity:
    """A server's TLS files and token; all None means plaintext without a token."""

    env_prefix: str
    cert_file: Path | None = None
    key_file: Path | None = None
    client_ca_file: Path | None = None
    token: SecretStr | None = None

    def __post_init__(self) -> None:
        problem = server_problem(self.env_prefix, self.cert_file, self.key_file, self.client_ca_file, self.token)
        if problem:
            raise SecurityConfigError(problem)

    @property
    def tls(self) -> bool:
        return self.cert_file is not None

    def describe(self) -> str:
        """For the start-up log line; never the token itself."""
        transport = ("mutual TLS" if self.client_ca_file else "TLS") if self.tls else "plaintext"
        return f"{transport}, {'bearer token required' if self.token else 'no token'}"

    def credentials(self) -> grpc.ServerCredentials | None:
        """TLS credentials that follow the files on disk, or None for plaintext. Raises
        `SecurityConfigError` naming the variable when a file cannot be used."""
        if self.cert_file is None or self.key_file is None:
            return None
        return _ReloadingServerCertificate(self).credentials()

    def interceptors(self) -> list[grpc.aio.ServerInterceptor]:
        return [] if self.token is None else [BearerTokenInterceptor(self.token, f"{self.env_prefix}AUTH_TOKEN")]


class _ReloadingServerCertificate:
    """gRPC asks `fetch()` at each handshake whether the certificate changed; it reads the
    files again only when their modification times did (a stat per handshake, and
    handshakes are rare: channels are long-lived)."""

    def __init__(self, security: ServerSecurity) -> None:
        assert security.cert_file is not None and security.key_file is not None
        self._security = security
        paths = [security.cert_file, security.key_file]
        if security.client_ca_file is not None:
            paths.append(security.client_ca_file)
        self._files = _Files.of(paths)
        self._initial = self._load()

    def _load(self) -> Any:
        s, prefix = self._security, self._security.env_prefix
        assert s.cert_file is not None and s.key_file is not None
        _check_pair(s.cert_file, s.key_file, f"{prefix}TLS_CERT_FILE", f"{prefix}TLS_KEY_FILE")
        pair = (_read(s.key_file, f"{prefix}TLS_KEY_FILE"), _read(s.cert_file, f"{prefix}TLS_CERT_FILE"))
        client_ca = None
        if s.client_ca_file is not None:
            _check_ca(s.client_ca_file, f"{prefix}TLS_CLIENT_CA_FILE")
            client_ca = _read(s.client_ca_file, f"{prefix}TLS_CLIENT_CA_FILE")
        return grpc.ssl_server_certificate_configuration([pair], root_certificates=client_ca)

    def fetch(self) -> Any:
        if not self._files.changed():
            return None  # gRPC keeps the configuration it has
        files = _Files.of(self._files.paths)
        try:
            configuration = self._load()
        except SecurityConfigError as exc:
            # Half-written files (the key replaced before the certificate): the old pair
            # serves until both are consistent; a stat later tells when to try again.
            log.warning("TLS files changed but cannot be used yet, keeping the previous certificate: %s", exc)
            return None
        self._files = files
        log.info("TLS certificate reloaded from %s", self._security.cert_file)
        return configuration

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(
            self._initial, self.fetch, require_client_authentication=self._security.client_ca_file is not None)


class BearerTokenInterceptor(WrappingInterceptor):
    """Refuses a call to an application service UNAUTHENTICATED unless its metadata says
    `authorization: Bearer <token>`; health and reflection (`OPEN_SERVICES`) pass.

    The check runs on each call's metadata before the handler is chosen (`wraps_call`), so
    a refused call gets the refusing handler, which never decodes the request: a caller
    without the token learns nothing about the message."""

    def __init__(self, token: SecretStr, variable: str, *, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._digest = hashlib.sha256(token.get_secret_value().encode()).digest()
        self._variable = variable
        self._open = tuple(f"/{name}/" for name in OPEN_SERVICES)
        self._clock = clock
        self._refused_since_log = 0
        self._last_log = float("-inf")

    def accepts(self, metadata: Sequence[tuple[str, str | bytes]] | None) -> str | None:
        """None when `metadata` carries the token, else why not (a sentence for the caller)."""
        values = [value for key, value in metadata or () if key == AUTHORIZATION]
        if not values:
            return (f"this service needs a bearer token: send the metadata '{AUTHORIZATION}: Bearer <token>'"
                    f" with the token set in {self._variable} on the server")
        value = values[0]
        text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
        scheme, _, presented = text.strip().partition(" ")
        # Hashing first makes the comparison's time independent of the token's length too.
        digest = hashlib.sha256(presented.strip().encode()).digest()
        if scheme.lower() != "bearer" or not hmac.compare_digest(digest, self._digest):
            return f"the bearer token was not accepted: it does not match the server's {self._variable}"
        return None

    def wraps(self, method: str, handler: grpc.RpcMethodHandler) -> bool:
        return not method.startswith(self._open)

    def wraps_call(self, details: grpc.HandlerCallDetails, handler: grpc.RpcMethodHandler) -> bool:
        # Only a refused call is wrapped: one with the token runs its handler untouched.
        return self.wraps(details.method, handler) and self.accepts(details.invocation_metadata) is not None

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """`handler` of the same kind whose behaviour only aborts UNAUTHENTICATED, saying why
        (read again from the call's metadata: this handler serves every refused call of `method`)."""

        async def refuse(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            self._note_refusal(method, context.peer())
            problem = self.accepts(tuple(context.invocation_metadata() or ()))
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, problem or "the bearer token was not accepted")

        kind = behaviour_field(handler)
        return handler._replace(request_deserializer=None, **{kind: refuse})  # type: ignore[attr-defined,no-any-return]

    def _note_refusal(self, method: str, peer: str) -> None:
        self._refused_since_log += 1
        now = self._clock()
        if now - self._last_log >= REFUSAL_LOG_INTERVAL_S:
            log.warning("refused %d call(s) without the right bearer token (latest: %s from %s)",
                        self._refused_since_log, method, peer)
            self._refused_since_log = 0
            self._last_log = now


# --- the client side


@dataclass(frozen=True)
class ClientSecurity:
    """How a client reaches a server: the CA to verify it (None: plaintext), its own
    certificate and key for mutual TLS, a server name override, and the bearer token."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    server_name: str = ""
    token: SecretStr | None = field(default=None, repr=False)
    # Variable names for error messages (the gateway's are GATEWAY_GRPC_TLS_*).
    env_prefix: str = ""
    token_variable: str = "token"

    def __post_init__(self) -> None:
        problem = client_problem(self.env_prefix, self.ca_file, self.cert_file, self.key_file, self.server_name,
                                 [(self.token_variable, self.token)])
        if problem:
            raise SecurityConfigError(problem)

    @property
    def tls(self) -> bool:
        return self.ca_file is not None

    def credentials(self) -> grpc.ChannelCredentials | None:
        """Channel credentials (TLS, plus the token as call credentials), or None for a
        plaintext channel. Raises `SecurityConfigError` naming the variable."""
        if self.ca_file is None:
            return None
        prefix = self.env_prefix
        _check_ca(self.ca_file, f"{prefix}GRPC_TLS_CA_FILE")
        key = cert = None
        if self.cert_file is not None and self.key_file is not None:
            _check_pair(self.cert_file, self.key_file, f"{prefix}GRPC_TLS_CERT_FILE", f"{prefix}GRPC_TLS_KEY_FILE")
            key = _read(self.key_file, f"{prefix}GRPC_TLS_KEY_FILE")
            cert = _read(self.cert_file, f"{prefix}GRPC_TLS_CERT_FILE")
        channel = grpc.ssl_channel_credentials(_read(self.ca_file, f"{prefix}GRPC_TLS_CA_FILE"), key, cert)
        if self.token is None:
            return channel
        # gRPC's own access-token credentials: "authorization: Bearer <token>" on every call,
        # added in C, and only ever on a TLS channel.
        return grpc.composite_channel_credentials(channel, grpc.access_token_call_credentials(
            self.token.get_secret_value()))

    def options(self) -> list[tuple[str, str]]:
        """Channel options that go with the credentials."""
        return [("grpc.ssl_target_name_override", self.server_name)] if self.tls and self.server_name else []

    def describe(self) -> str:
        transport = ("mutual TLS" if self.cert_file else "TLS") if self.tls else "plaintext"
        return f"{transport}{', bearer token' if self.token else ''}"


PLAINTEXT = ClientSecurity()

ChannelOptions = Sequence[tuple[str, Any]]


def aio_channel(target: str, security: ClientSecurity = PLAINTEXT, options: ChannelOptions = ()) -> grpc.aio.Channel:
    """An asyncio channel to `target`, secured as `security` says."""
    credentials = security.credentials()
    all_options = [*options, *security.options()]
    if credentials is None:
        return grpc.aio.insecure_channel(target, options=all_options)
    return grpc.aio.secure_channel(target, credentials, options=all_options)


def sync_channel(target: str, security: ClientSecurity = PLAINTEXT, options: ChannelOptions = ()) -> grpc.Channel:
    """A blocking channel to `target` (command-line clients, benchmarks), secured alike."""
    credentials = security.credentials()
    all_options = [*options, *security.options()]
    if credentials is None:
        return grpc.insecure_channel(target, options=all_options)
    return grpc.secure_channel(target, credentials, options=all_options)

