"""``manage.py import_skills URL`` fetches like a careful server: https only, public addresses only
(checked after resolving, for every redirect, connecting to the address that was checked), a size
cap counted while downloading, a total timeout, and no credential of the URL in any message.

The servers are real HTTP(S) servers on loopback; a test CA made here signs the https one.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from django.core.management import call_command
from django.core.management.base import CommandError

from hepgg.lib.download import address_problem, redact_url
from skills.models import Skill
from tests.skills.conftest import make_zip, skill_files
from tests.skills.test_import_forms import assert_served

PDF = skill_files("pdf-forms")
ARCHIVE = make_zip(PDF, prefix="pdf-forms/")
LOCAL = {"allow_http": True, "allow_private_network": True}


# -- servers -------------------------------------------------------------------------------------
@dataclass
class Site:
    url: str
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    sent: list[int] = field(default_factory=lambda: [0])  # body bytes written so far


Route = Callable[[BaseHTTPRequestHandler, Site], None]


def send_archive(handler: BaseHTTPRequestHandler, site: Site) -> None:
    handler.send_response(200)
    handler.send_header("Content-Length", str(len(ARCHIVE)))
    handler.end_headers()
    handler.wfile.write(ARCHIVE)


@contextmanager
def serve(
    route: Route = send_archive, *, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None
) -> Iterator[Site]:
    site = Site("")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            site.requests.append((self.path, dict(self.headers)))
            # The client may stop reading: what several tests want.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                route(self, site)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer((host, 0), Handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    scheme = "https" if tls else "http"
    site.url = f"{scheme}://{host}:{server.server_address[1]}"
    try:
        yield site
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class LocalCA:
    ca_file: Path
    server_context: ssl.SSLContext


@pytest.fixture(scope="module")
def test_ca(tmp_path_factory: pytest.TempPathFactory) -> LocalCA:
    """A CA and a certificate for ``localhost`` and 127.0.0.1 that it signed."""
    folder = tmp_path_factory.mktemp("ca")
    now = datetime.datetime.now(datetime.UTC)

    def certificate(subject: str, key, issuer: str, issuer_key, *, ca: bool, sans=()):
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if ca:
            builder = builder.add_extension(
                x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=True,
                    crl_sign=True, encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )  # fmt: skip
            builder = builder.add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
        else:
            builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
            builder = builder.add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                critical=False,
            )
        return builder.sign(issuer_key, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = certificate("hepgg test CA", ca_key, "hepgg test CA", ca_key, ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    sans = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = certificate("localhost", key, "hepgg test CA", ca_key, ca=False, sans=sans)

    ca_file = folder / "ca.pem"
    ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    chain = folder / "server.pem"
    chain.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        + cert.public_bytes(serialization.Encoding.PEM)
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(chain)
    return LocalCA(ca_file, context)


def import_url(url: str, publisher, **options: object) -> None:
    call_command("import_skills", url, account=publisher.account.email, **options)


# -- what works ----------------------------------------------------------------------------------
def test_an_https_url_imports_with_the_certificate_checked_against_the_name(
    publisher, client, capsys, test_ca: LocalCA
) -> None:
    with serve(tls=test_ca.server_context) as site:
        url = site.url.replace("127.0.0.1", "localhost") + "/pdf-forms.zip"
        import_url(url, publisher, allow_private_network=True, ca_file=str(test_ca.ca_file))

    assert "pdf-forms@1" in capsys.readouterr().out
    assert_served(client, "pdf-forms", PDF)
    assert site.requests[0][1]["Host"] == url.split("/")[2]  # the name, not the address


def test_an_http_url_on_loopback_imports_with_both_flags(publisher, client, capsys) -> None:
    with serve() as site:
        import_url(f"{site.url}/pdf-forms.zip", publisher, **LOCAL)

    assert "pdf-forms@1" in capsys.readouterr().out
    assert_served(client, "pdf-forms", PDF)


def test_a_certificate_from_an_unknown_ca_is_refused(publisher, test_ca: LocalCA) -> None:
    with serve(tls=test_ca.server_context) as site, pytest.raises(CommandError) as caught:
        import_url(f"{site.url}/pdf-forms.zip", publisher, allow_private_network=True)

    assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value)
    assert not Skill.objects.exists()


# -- refusals ------------------------------------------------------------------------------------
def test_http_is_refused_unless_allowed(publisher) -> None:
    with serve() as site, pytest.raises(CommandError) as caught:
        import_url(f"{site.url}/pdf-forms.zip", publisher, allow_private_network=True)

    assert "only https" in str(caught.value)
    assert site.requests == []


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_a_loopback_target_is_refused_unless_allowed(publisher, host: str, test_ca) -> None:
    with serve(tls=test_ca.server_context) as site, pytest.raises(CommandError) as caught:
        import_url(
            site.url.replace("127.0.0.1", host) + "/pdf-forms.zip",
            publisher,
            ca_file=str(test_ca.ca_file),
        )

    assert "a loopback address" in str(caught.value)
    assert site.requests == []  # refused after resolving, before connecting
    assert not Skill.objects.exists()


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "a loopback address"),
        ("::1", "a loopback address"),
        ("10.1.2.3", "a private address"),
        ("172.16.0.1", "a private address"),
        ("192.168.1.1", "a private address"),
        ("100.64.0.1", "a private address"),
        ("fd00::1", "a private address"),
        ("169.254.169.254", "a link-local address"),
        ("fe80::1", "a link-local address"),
        ("0.0.0.0", "an unspecified address"),
        ("::", "an unspecified address"),
        ("224.0.0.1", "a multicast address"),
        ("ff02::1", "a multicast address"),
        ("240.0.0.1", "a reserved address"),
        ("::ffff:127.0.0.1", "a loopback address"),
        ("::ffff:169.254.169.254", "a link-local address"),
        ("2002:a00:1::", "a private address"),  # 6to4 of 10.0.0.1
        ("64:ff9b::a9fe:a9fe", "a link-local address"),  # NAT64 of 169.254.169.254
    ],
)
def test_non_public_addresses_are_refused(address: str, kind: str) -> None:
    assert address_problem(address, allow_private=False) == kind


@pytest.mark.parametrize(
    "address", ["169.254.169.254", "::ffff:169.254.169.254", "224.0.0.1", "::"]
)
def test_the_private_network_flag_never_opens_link_local_multicast_or_unspecified(
    address: str,
) -> None:
    assert address_problem(address, allow_private=True) is not None


@pytest.mark.parametrize("address", ["1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_pass(address: str) -> None:
    assert address_problem(address, allow_private=False) is None


def redirect_to(location: str) -> Route:
    def route(handler: BaseHTTPRequestHandler, site: Site) -> None:
        handler.send_response(302)
        handler.send_header("Location", location)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    return route


@pytest.mark.parametrize(
    "location",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:169.254.169.254]/latest/meta-data/",
        "http://0.0.0.0:1/",
    ],
)
def test_a_redirect_to_a_forbidden_address_is_refused(publisher, location: str) -> None:
    with serve(redirect_to(location)) as site, pytest.raises(CommandError) as caught:
        import_url(f"{site.url}/pdf-forms.zip", publisher, **LOCAL)

    assert "resolves to" in str(caught.value)
    assert len(site.requests) == 1


def test_a_redirect_from_https_to_http_is_refused(publisher, test_ca: LocalCA) -> None:
    with (
        serve() as plain,
        serve(redirect_to(f"{plain.url}/pdf-forms.zip"), tls=test_ca.server_context) as site,
        pytest.raises(CommandError) as caught,
    ):
        import_url(
            f"{site.url}/pdf-forms.zip",
            publisher,
            allow_private_network=True,
            ca_file=str(test_ca.ca_file),
        )

    assert "only https" in str(caught.value)
    assert plain.requests == []


def test_redirects_are_followed_a_few_times_only(publisher) -> None:
    def loop(handler: BaseHTTPRequestHandler, site: Site) -> None:
        redirect_to(f"{site.url}/again{len(site.requests)}")(handler, site)

    with serve(loop) as site, pytest.raises(CommandError) as caught:
        import_url(f"{site.url}/start", publisher, **LOCAL)

    assert "more than 5 redirects" in str(caught.value)
    assert len(site.requests) == 6


def test_credentials_go_to_their_own_origin_only(publisher, client) -> None:
    with serve() as target, serve(redirect_to(f"{target.url}/pdf-forms.zip")) as first:
        url = first.url.replace("://", "://ada:s3cret@") + "/start"
        import_url(url, publisher, **LOCAL)

    assert first.requests[0][1]["Authorization"].startswith("Basic ")
    assert "Authorization" not in target.requests[0][1]
    assert_served(client, "pdf-forms", PDF)


def test_the_size_cap_is_counted_while_downloading(publisher, settings) -> None:
    settings.SKILLS_MAX_UPLOAD_BYTES = 100_000
    block = b"\0" * 65536

    def endless(handler: BaseHTTPRequestHandler, site: Site) -> None:
        handler.send_response(200)  # no Content-Length: the size shows only while reading
        handler.end_headers()
        for _ in range(800):  # 50 MiB if nobody stops it
            handler.wfile.write(block)
            site.sent[0] += len(block)

    with serve(endless) as site, pytest.raises(CommandError) as caught:
        import_url(f"{site.url}/big.zip", publisher, **LOCAL)
    assert "bigger than 100000 bytes" in str(caught.value)
    assert site.sent[0] < 800 * len(block)  # the download stopped early
    assert not Skill.objects.exists()


def test_a_declared_length_over_the_cap_is_refused_before_reading(publisher, settings) -> None:
    settings.SKILLS_MAX_UPLOAD_BYTES = 1000
    with serve() as site, pytest.raises(CommandError) as caught:
        import_url(f"{site.url}/pdf-forms.zip", publisher, **LOCAL)

    assert "bigger than 1000 bytes" in str(caught.value)


def test_a_server_that_drips_forever_meets_the_total_timeout(publisher) -> None:
    def drip(handler: BaseHTTPRequestHandler, site: Site) -> None:
        handler.send_response(200)
        handler.end_headers()
        for _ in range(100):  # 20 s, a byte every 0.2 s: no read ever times out on its own
            handler.wfile.write(b"x")
            handler.wfile.flush()
            time.sleep(0.2)

    started = time.monotonic()
    with serve(drip) as site, pytest.raises(CommandError) as caught:
        import_url(f"{site.url}/slow.zip", publisher, timeout=1.0, **LOCAL)

    assert "took longer than 1 s" in str(caught.value)
    assert time.monotonic() - started < 5


def test_the_name_is_resolved_once_and_the_checked_address_is_the_one_connected(
    publisher, client, monkeypatch
) -> None:
    """DNS rebinding: a name that answers a different address on its second lookup must not
    move the connection there."""
    real_getaddrinfo = socket.getaddrinfo
    lookups: list[str] = []

    with serve() as first, serve(host="127.0.0.2") as second:
        port = int(first.url.rsplit(":", 1)[1])
        second_port = int(second.url.rsplit(":", 1)[1])

        def rebinding(host, *args, **kwargs):
            if host != "rebind.test":
                return real_getaddrinfo(host, *args, **kwargs)
            lookups.append(host)
            if len(lookups) == 1:
                return real_getaddrinfo("127.0.0.1", port, *args[1:], **kwargs)
            return real_getaddrinfo("127.0.0.2", second_port, *args[1:], **kwargs)

        monkeypatch.setattr(socket, "getaddrinfo", rebinding)
        import_url(f"http://rebind.test:{port}/pdf-forms.zip", publisher, **LOCAL)

    assert lookups == ["rebind.test"]
    assert len(first.requests) == 1 and second.requests == []
    assert first.requests[0][1]["Host"] == f"rebind.test:{port}"
    assert_served(client, "pdf-forms", PDF)


# -- no credentials echoed -----------------------------------------------------------------------
def not_found(handler: BaseHTTPRequestHandler, site: Site) -> None:
    handler.send_response(404)
    handler.send_header("Content-Length", "0")
    handler.end_headers()


@pytest.mark.parametrize(
    "make_url",
    [
        lambda base: base.replace("://", "://ada:s3cret@") + "/missing.zip",
        lambda base: base + "/missing.zip?token=s3cret",
        lambda base: base.replace("://", "://s3cret@") + "/missing.zip?sig=s3cret&x=1",
    ],
)
def test_no_credential_of_the_url_appears_in_errors_or_output(
    publisher, capsys, make_url: Callable[[str], str]
) -> None:
    with serve(not_found) as site, pytest.raises(CommandError) as caught:
        import_url(make_url(site.url), publisher, **LOCAL)

    assert "answered 404" in str(caught.value)
    captured = capsys.readouterr()
    assert "s3cret" not in str(caught.value) + captured.out + captured.err


def test_refusals_before_any_request_do_not_echo_credentials_either(publisher) -> None:
    with pytest.raises(CommandError) as caught:
        import_url("http://ada:s3cret@127.0.0.1:9/x.zip?token=s3cret", publisher)

    assert "s3cret" not in str(caught.value)
    assert "http://***@127.0.0.1:9/x.zip?***" in str(caught.value)


def test_redact_url_keeps_scheme_host_port_and_path() -> None:
    assert redact_url("https://u:p@Example.com:8443/a/b.zip?t=1#f") == (
        "https://***@example.com:8443/a/b.zip?***"
    )
    assert redact_url("https://[::1]/x") == "https://[::1]/x"
