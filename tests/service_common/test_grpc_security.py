"""TLS, mutual TLS and the bearer token between the services (service_common/grpc_security.py),
with certificates this test makes: real servers (the scraper over a catalog, the tiny embed
server, the gateway) on loopback, real TLS handshakes, real calls."""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from pydantic import SecretStr

from embed_server.config import EmbedSettings
from scraper_service.config import ScraperSettings
from search_gateway.config import GatewaySettings
from service_common.grpc_security import (
    ClientSecurity,
    SecurityConfigError,
    ServerSecurity,
    sync_channel,
)
from tattoo_search.v1 import scraper_pb2, scraper_pb2_grpc
from tests.support.background import BackgroundServer, wait_for_health
from tests.support.gateway_stack import gateway_settings, image_form
from tests.support.gateway_support import (
    Hits,
    embed_server,
    image_site_app,
    run_gateway,
    scraper_server,
    serve_aiohttp,
    write_catalog,
)
from tests.support.images import jpeg

TOKEN = "s3cret-token-for-tests_0123456789"
SERVING = health_pb2.HealthCheckResponse.SERVING


# --- certificates, made here


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


@dataclass
class Issued:
    cert: Path
    key: Path


class Authority:
    """A CA that issues certificates into `folder` as PEM files."""

    def __init__(self, folder: Path, name: str) -> None:
        self.folder = folder
        self.name = name
        self._key = ec.generate_private_key(ec.SECP256R1())
        self.certificate = self._sign(name, self._key, ca=True)
        self.pem = folder / f"{name}.pem"
        self.pem.write_bytes(self.certificate.public_bytes(serialization.Encoding.PEM))

    def _sign(self, subject: str, key: ec.EllipticCurvePrivateKey, *, ca: bool = False,
              sans: list[x509.GeneralName] | None = None) -> x509.Certificate:
        now = datetime.datetime.now(datetime.UTC)
        builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(self.name))
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return builder.sign(self._key, hashes.SHA256())

    def issue(self, name: str, *, hosts: tuple[str, ...] = (), into: str | None = None) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        sans: list[x509.GeneralName] = []
        for host in hosts:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                sans.append(x509.DNSName(host))
        cert = self._sign(name, key, sans=sans or [x509.DNSName(name)])
        stem = into or name
        issued = Issued(self.folder / f"{stem}.crt", self.folder / f"{stem}.key")
        issued.key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                 serialization.NoEncryption()))
        issued.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return issued


@dataclass
class Pki:
    ca: Authority
    server: Issued  # for 127.0.0.1 and "scraper.internal"
    client: Issued
    stranger: Issued  # a client certificate from another CA


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca, other = Authority(folder, "test-ca"), Authority(folder, "other-ca")
    return Pki(ca, ca.issue("server", hosts=("127.0.0.1", "scraper.internal")), ca.issue("gateway"),
               other.issue("intruder"))


# --- a scraper served with TLS (and a token, and mutual TLS as asked)


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("catalog")
    return write_catalog(folder / "catalog.jsonl", [f"https://images.example/{i}.jpg" for i in range(3)])


def _tls_scraper(pki: Pki, catalog: Path, *, token: str | None = TOKEN, mutual: bool = False,
                 cert: Issued | None = None) -> BackgroundServer:
    cert = cert or pki.server
    return scraper_server(catalog, tls_cert_file=cert.cert, tls_key_file=cert.key,
                          tls_client_ca_file=pki.ca.pem if mutual else None,
                          auth_token=SecretStr(token) if token else None)


@pytest.fixture(scope="module")
def tls_scraper(pki: Pki, catalog: Path) -> Iterator[BackgroundServer]:
    with _tls_scraper(pki, catalog) as server:
        yield server


def _client(pki: Pki, *, token: str | None = None, cert: Issued | None = None, server_name: str = "") -> ClientSecurity:
    return ClientSecurity(ca_file=pki.ca.pem, cert_file=cert.cert if cert else None, key_file=cert.key if cert else None,
                          server_name=server_name, token=SecretStr(token) if token else None)


def _search(channel: grpc.Channel, metadata: tuple[tuple[str, str], ...] | None = None) -> list[str]:
    stub = scraper_pb2_grpc.ScraperServiceStub(channel)
    replies = stub.Search(scraper_pb2.SearchRequest(query="wolf", max_results=3), timeout=10, metadata=metadata)
    return [reply.image_url for reply in replies]


def _refusal(call: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()  # type: ignore[operator]
    return caught.value


# --- the token


def test_the_right_token_passes(pki: Pki, tls_scraper: BackgroundServer) -> None:
    with sync_channel(tls_scraper.target, _client(pki, token=TOKEN)) as channel:
        assert len(_search(channel)) == 3


def test_a_missing_token_is_unauthenticated_with_a_sentence(pki: Pki, tls_scraper: BackgroundServer) -> None:
    with sync_channel(tls_scraper.target, _client(pki)) as channel:
        error = _refusal(lambda: _search(channel))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED  # type: ignore[attr-defined]
    details = error.details() or ""  # type: ignore[attr-defined]
    assert "needs a bearer token" in details and "SCRAPER_AUTH_TOKEN" in details


@pytest.mark.parametrize("header", [f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", "Bearer ", f"Basic {TOKEN}", TOKEN])
def test_a_wrong_token_is_unauthenticated_and_never_echoed(pki: Pki, tls_scraper: BackgroundServer, header: str) -> None:
    with sync_channel(tls_scraper.target, _client(pki)) as channel:
        error = _refusal(lambda: _search(channel, metadata=(("authorization", header),)))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED  # type: ignore[attr-defined]
    details = error.details() or ""  # type: ignore[attr-defined]
    assert "was not accepted" in details and TOKEN[:8] not in details


def test_the_scheme_is_read_without_regard_to_case(pki: Pki, tls_scraper: BackgroundServer) -> None:
    with sync_channel(tls_scraper.target, _client(pki)) as channel:
        assert len(_search(channel, metadata=(("authorization", f"bearer {TOKEN}"),))) == 3


def test_health_and_reflection_answer_without_a_token(pki: Pki, tls_scraper: BackgroundServer) -> None:
    with sync_channel(tls_scraper.target, _client(pki)) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
        assert reply.status == SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        answers = list(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                                 timeout=10))
        names = {service.name for service in answers[0].list_services_response.service}
        assert "tattoo_search.v1.ScraperService" in names


# --- TLS itself


def test_a_plaintext_client_against_the_tls_server_fails_unavailable_without_hanging(
    tls_scraper: BackgroundServer,
) -> None:
    with grpc.insecure_channel(tls_scraper.target) as channel:
        # The deadline is a bound, not the expectation: the handshake fails at once.
        error = _refusal(lambda: health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=30))
    assert error.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]


def test_a_client_that_does_not_trust_the_servers_ca_is_refused(pki: Pki, tls_scraper: BackgroundServer) -> None:
    stranger_ca = ClientSecurity(ca_file=pki.stranger.cert.parent / "other-ca.pem", token=SecretStr(TOKEN))
    with sync_channel(tls_scraper.target, stranger_ca) as channel:
        error = _refusal(lambda: _search(channel))
    assert error.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]


def test_a_server_name_override_verifies_another_name_in_the_certificate(pki: Pki, catalog: Path) -> None:
    # Served with a certificate for scraper.internal only, reached by its address.
    named = pki.ca.issue("scraper.internal", into="named")
    with _tls_scraper(pki, catalog, cert=named) as server:
        with sync_channel(server.target, _client(pki, token=TOKEN)) as channel:
            assert _refusal(lambda: _search(channel)).code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
        with sync_channel(server.target, _client(pki, token=TOKEN, server_name="scraper.internal")) as channel:
            assert len(_search(channel)) == 3


# --- mutual TLS


def test_mutual_tls_refuses_a_client_without_a_certificate_or_with_a_strangers(pki: Pki, catalog: Path) -> None:
    with _tls_scraper(pki, catalog, mutual=True) as server:
        for cert in (None, pki.stranger):
            with sync_channel(server.target, _client(pki, token=TOKEN, cert=cert)) as channel:
                error = _refusal(lambda: _search(channel))
            assert error.code() == grpc.StatusCode.UNAVAILABLE, cert  # type: ignore[attr-defined]
        with sync_channel(server.target, _client(pki, token=TOKEN, cert=pki.client)) as channel:
            assert len(_search(channel)) == 3
            # The token is still needed with a client certificate.
        with sync_channel(server.target, _client(pki, cert=pki.client)) as channel:
            assert _refusal(lambda: _search(channel)).code() == grpc.StatusCode.UNAUTHENTICATED  # type: ignore[attr-defined]


# --- certificate rotation


def test_a_certificate_replaced_on_disk_is_served_to_new_connections_without_a_restart(
    pki: Pki, catalog: Path, tmp_path: Path
) -> None:
    first = pki.ca.issue("127.0.0.1", hosts=("127.0.0.1",), into="rotating")
    with _tls_scraper(pki, catalog, cert=first) as server:
        with sync_channel(server.target, _client(pki, token=TOKEN)) as channel:
            assert len(_search(channel)) == 3
        # A new CA's certificate, written where the old one was (as cert-manager renews it).
        renewed_ca = Authority(tmp_path, "renewed-ca")
        renewed = renewed_ca.issue("127.0.0.1", hosts=("127.0.0.1",), into="renewed")
        for source, target in ((renewed.key, first.key), (renewed.cert, first.cert)):
            target.write_bytes(source.read_bytes())
            stat = target.stat()
            os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # a visible change
        renewed_client = ClientSecurity(ca_file=renewed_ca.pem, token=SecretStr(TOKEN))
        with sync_channel(server.target, renewed_client) as channel:
            assert len(_search(channel)) == 3
        with sync_channel(server.target, _client(pki, token=TOKEN)) as channel:  # the old CA no longer matches
            assert _refusal(lambda: _search(channel)).code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]


# --- settings and files: refused at start, naming the variable, never showing the token


@pytest.mark.parametrize(("env", "sentence"), [
    ({"EMBED_AUTH_TOKEN": TOKEN}, "EMBED_AUTH_TOKEN needs EMBED_TLS_CERT_FILE and EMBED_TLS_KEY_FILE"),
    ({"EMBED_TLS_CERT_FILE": "a.crt"}, "EMBED_TLS_CERT_FILE and EMBED_TLS_KEY_FILE must be set together"),
    ({"EMBED_TLS_CLIENT_CA_FILE": "ca.pem"}, "EMBED_TLS_CLIENT_CA_FILE (mutual TLS) needs EMBED_TLS_CERT_FILE"),
    ({"EMBED_TLS_CERT_FILE": "a", "EMBED_TLS_KEY_FILE": "b", "EMBED_AUTH_TOKEN": f"{TOKEN} x"},
     "EMBED_AUTH_TOKEN must be printable ASCII without spaces"),
])
def test_embed_security_settings_are_checked_at_start(env: dict[str, str], sentence: str) -> None:
    with pytest.raises(ValueError) as caught:
        EmbedSettings.from_env(env)
    assert sentence in str(caught.value) and TOKEN not in str(caught.value)


@pytest.mark.parametrize(("env", "sentence"), [
    ({"SCRAPER_AUTH_TOKEN": TOKEN}, "SCRAPER_AUTH_TOKEN needs SCRAPER_TLS_CERT_FILE"),
    ({"SCRAPER_TLS_KEY_FILE": "a.key"}, "SCRAPER_TLS_CERT_FILE and SCRAPER_TLS_KEY_FILE must be set together"),
])
def test_scraper_security_settings_are_checked_at_start(env: dict[str, str], sentence: str) -> None:
    with pytest.raises(ValueError, match=sentence):
        ScraperSettings.from_env(env)


@pytest.mark.parametrize(("env", "sentence"), [
    ({"GATEWAY_EMBED_AUTH_TOKEN": TOKEN}, "GATEWAY_EMBED_AUTH_TOKEN needs GATEWAY_GRPC_TLS_CA_FILE"),
    ({"GATEWAY_SCRAPER_AUTH_TOKEN": TOKEN}, "GATEWAY_SCRAPER_AUTH_TOKEN needs GATEWAY_GRPC_TLS_CA_FILE"),
    ({"GATEWAY_GRPC_TLS_CA_FILE": "ca", "GATEWAY_GRPC_TLS_CERT_FILE": "c"},
     "GATEWAY_GRPC_TLS_CERT_FILE and GATEWAY_GRPC_TLS_KEY_FILE must be set together"),
    ({"GATEWAY_GRPC_TLS_CERT_FILE": "c", "GATEWAY_GRPC_TLS_KEY_FILE": "k"},
     "GATEWAY_GRPC_TLS_CERT_FILE (mutual TLS) needs GATEWAY_GRPC_TLS_CA_FILE"),
    ({"GATEWAY_GRPC_TLS_SERVER_NAME": "embed"}, "GATEWAY_GRPC_TLS_SERVER_NAME needs GATEWAY_GRPC_TLS_CA_FILE"),
])
def test_gateway_security_settings_are_checked_at_start(env: dict[str, str], sentence: str) -> None:
    with pytest.raises(ValueError) as caught:
        GatewaySettings.from_env(env)
    assert sentence in str(caught.value) and TOKEN not in str(caught.value)


def test_the_token_is_kept_out_of_the_settings_repr() -> None:
    settings = EmbedSettings.from_env({"EMBED_TLS_CERT_FILE": "a", "EMBED_TLS_KEY_FILE": "b", "EMBED_AUTH_TOKEN": TOKEN})
    assert TOKEN not in repr(settings) and TOKEN not in repr(settings.security)
    assert settings.security.describe() == "TLS, bearer token required"


def test_unusable_pem_files_are_refused_naming_the_variable(pki: Pki, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    mismatched = ServerSecurity("EMBED_", pki.server.cert, pki.client.key)
    with pytest.raises(SecurityConfigError, match="EMBED_TLS_CERT_FILE=.* and EMBED_TLS_KEY_FILE=.* are not a PEM"):
        mismatched.credentials()
    with pytest.raises(SecurityConfigError, match="EMBED_TLS_CLIENT_CA_FILE=.* holds no PEM CA certificate"):
        ServerSecurity("EMBED_", pki.server.cert, pki.server.key, garbage).credentials()
    with pytest.raises(SecurityConfigError, match="GATEWAY_GRPC_TLS_CA_FILE=.*cannot be read: No such file"):
        ClientSecurity(ca_file=tmp_path / "missing.pem", env_prefix="GATEWAY_").credentials()


# --- the gateway end to end


async def test_the_gateway_searches_against_tls_and_token_backends(pki: Pki, tmp_path: Path) -> None:
    embed_token, scraper_token = "embed-token-0123456789", "scraper-token-9876543210"
    async with serve_aiohttp(image_site_app(Hits(), 1, images=6)) as site_port:
        urls = [f"http://127.0.0.1:{site_port}/img/{i}.jpg" for i in range(6)]
        await _search_through_a_secured_gateway(pki, write_catalog(tmp_path / "catalog.jsonl", urls), site_port,
                                                embed_token, scraper_token)


async def _search_through_a_secured_gateway(pki: Pki, catalog_file: Path, site_port: int, embed_token: str,
                                            scraper_token: str) -> None:
    tls = {"EMBED_TLS_CERT_FILE": str(pki.server.cert), "EMBED_TLS_KEY_FILE": str(pki.server.key),
           "EMBED_TLS_CLIENT_CA_FILE": str(pki.ca.pem), "EMBED_AUTH_TOKEN": embed_token, "EMBED_MODELS": "clip"}
    with embed_server(0, **tls) as embed, scraper_server(
        catalog_file, tls_cert_file=pki.server.cert, tls_key_file=pki.server.key, tls_client_ca_file=pki.ca.pem,
        auth_token=SecretStr(scraper_token),
    ) as scraper:
        probe = ClientSecurity(ca_file=pki.ca.pem, cert_file=pki.client.cert, key_file=pki.client.key)
        with sync_channel(embed.target, probe) as channel:  # health needs no token
            assert wait_for_health(channel, timeout=120) == SERVING
        secured = gateway_settings(
            embed.target, scraper.target, None, fetch_allow=(f"127.0.0.1:{site_port}",),
            grpc_tls_ca_file=pki.ca.pem, grpc_tls_cert_file=pki.client.cert, grpc_tls_key_file=pki.client.key,
            embed_auth_token=SecretStr(embed_token), scraper_auth_token=SecretStr(scraper_token),
        )
        async with run_gateway(secured) as gateway, aiohttp.ClientSession() as http:
            async with http.post(f"{gateway.url}/search", data=image_form(jpeg(501))) as response:
                body = await response.json()
            assert response.status == 200, body
            assert len(body["results"]) == 6 and body["stats"]["failed"] == 0, body["stats"]
            async with http.get(f"{gateway.url}/ready") as response:
                assert response.status == 200, await response.text()
        # The same gateway with the embed server's token wrong: a clear 503, not a hang.
        wrong = secured.replace(embed_auth_token=SecretStr("not-the-token"))
        async with (run_gateway(wrong) as gateway, aiohttp.ClientSession() as http,
                    http.post(f"{gateway.url}/search", data=image_form(jpeg(502))) as response):
            assert response.status == 503, await response.text()
