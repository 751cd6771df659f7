"""TLS, HTTP/2 and the HTTPS redirect, against the real binary with certificates made here.

One porch serves four listeners from a porch.toml written by the test:
  tls    TLS with two certificates chosen by SNI (RSA for a.porch.test and localhost,
         ECDSA for b.porch.test and *.b.porch.test), HSTS, a static route and the app
  h2c    plain HTTP with cleartext HTTP/2 (prior knowledge) allowed
  plain  plain HTTP/1.1 only
  redir  plain, every request redirected to the TLS port; redir443 redirects to 443

Clients are real: curl (built with nghttp2) and Python's ssl module.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest

from conftest import PORCH_BIN, APPS, Porch, free_port, raw_request, wait_for_port, wait_until

A_NAMES = ["a.porch.test", "localhost"]
B_NAMES = ["b.porch.test", "*.b.porch.test"]


def make_cert(dir: Path, name: str, sans: list[str], kind: str) -> tuple[Path, Path]:
    """A self-signed certificate and its key (PEM) valid for `sans`."""
    cert, key = dir / f"{name}.crt", dir / f"{name}.key"
    newkey = ["-newkey", "rsa:2048"] if kind == "rsa" else [
        "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
    alt = ",".join(f"DNS:{n}" for n in sans)
    subprocess.run(
        ["openssl", "req", "-x509", *newkey, "-nodes", "-days", "2",
         "-keyout", str(key), "-out", str(cert), "-subj", f"/CN={sans[0]}",
         "-addext", f"subjectAltName={alt}"],
        check=True, capture_output=True, timeout=60,
    )
    if kind == "ec-sec1":
        # The traditional `EC PRIVATE KEY` form, as older tools write it.
        subprocess.run(["openssl", "ec", "-in", str(key), "-out", str(key)],
                       check=True, capture_output=True, timeout=30)
        assert "BEGIN EC PRIVATE KEY" in key.read_text()
    return cert, key


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    d = tmp_path_factory.mktemp("certs")
    return {
        "a": make_cert(d, "a", A_NAMES, "rsa"),
        "b": make_cert(d, "b", B_NAMES, "ec-sec1"),
    }


@pytest.fixture(scope="module")
def static_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("static")
    (d / "hello.txt").write_text("hello over TLS\n")
    # Larger than HTTP/2's initial 64 KiB flow-control window.
    (d / "big.bin").write_bytes(bytes(range(256)) * 2048 + b"end")
    return d


def porch_toml(ports: dict, certs: dict, static_dir: Path, extra: str = "") -> str:
    (a_cert, a_key), (b_cert, b_key) = certs["a"], certs["b"]
    return f"""
workers = 1
graceful_timeout = 20
{extra}

[[listener]]
bind = "127.0.0.1:{ports['tls']}"
tls = {{ certs = [{{ cert = "{a_cert}", key = "{a_key}" }},
                  {{ cert = "{b_cert}", key = "{b_key}" }}], hsts_max_age = 600 }}
[[listener.route]]
path = "/static/"
static = "{static_dir}"
[[listener.route]]
path = "/"
app = true

[[listener]]
bind = "127.0.0.1:{ports['h2c']}"
h2c = true
[[listener.route]]
path = "/static/"
static = "{static_dir}"
[[listener.route]]
path = "/"
app = true

[[listener]]
bind = "127.0.0.1:{ports['plain']}"
[[listener.route]]
path = "/"
app = true

[[listener]]
bind = "127.0.0.1:{ports['redir']}"
redirect_https = {ports['tls']}
[[listener.route]]
path = "/"
app = true

[[listener]]
bind = "127.0.0.1:{ports['redir443']}"
redirect_https = 443
[[listener.route]]
path = "/"
app = true
"""


def start(factory, tmp: Path, certs, static_dir) -> tuple[Porch, dict]:
    ports = {k: free_port() for k in ("tls", "h2c", "plain", "redir", "redir443")}
    cfg = tmp / "porch.toml"
    cfg.write_text(porch_toml(ports, certs, static_dir))
    p = factory("-c", cfg, "tls_app:application", bind=False)
    try:
        for port in ports.values():
            wait_for_port(port, p.proc, 30)
    except Exception:
        raise RuntimeError(f"porch did not start:\n{p.log()}")
    return p, ports


@pytest.fixture(scope="module")
def server(porch_module, tmp_path_factory, certs, static_dir):
    return start(porch_module, tmp_path_factory.mktemp("cfg"), certs, static_dir)


class Curl:
    def __init__(self, version: str, status: int, headers: dict, body: bytes, verbose: str):
        self.version, self.status, self.headers = version, status, headers
        self.body, self.verbose = body, verbose

    def json(self):
        return json.loads(self.body)


def curl(tmp: Path, url: str, *args: str, host: str | None = None, port: int | None = None,
         cacert: Path | None = None) -> Curl:
    """One request with curl; `host` is resolved to 127.0.0.1 (for SNI and Host)."""
    hdr, body = tmp / "curl-headers", tmp / "curl-body"
    cmd = ["curl", "-sS", "-v", "--max-time", "15", "-D", str(hdr), "-o", str(body),
           "-w", "%{http_version} %{http_code}"]
    if host:
        cmd += ["--resolve", f"{host}:{port}:127.0.0.1"]
    if cacert:
        cmd += ["--cacert", str(cacert)]
    r = subprocess.run([*cmd, *args, url], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, f"curl failed ({r.returncode}): {r.stderr}"
    version, status = r.stdout.split()
    headers = {}
    # With a redirect or 100-continue there can be several heads: keep the last one.
    for line in hdr.read_text(errors="replace").splitlines():
        if line.startswith("HTTP/"):
            headers = {}
        elif ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    return Curl(version, int(status), headers, body.read_bytes(), r.stderr)


def handshake(port: int, server_name: str | None, *, alpn=None, cafile=None):
    """TLS handshake with porch; returns (peer certificate DER, negotiated ALPN)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if cafile:
        ctx.load_verify_locations(cafile)
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(alpn)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        with ctx.wrap_socket(s, server_hostname=server_name) as t:
            return t.getpeercert(binary_form=True), t.selected_alpn_protocol()


def der(cert: Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(cert.read_text())


# --- HTTPS and HTTP/2 ----------------------------------------------------------------------


def test_https_request_reaches_the_app_as_https(server, certs, tmp_path):
    p, ports = server
    import http.client

    ctx = ssl.create_default_context(cafile=str(certs["a"][0]))
    conn = http.client.HTTPSConnection("localhost", ports["tls"], context=ctx, timeout=10)
    try:
        conn.request("GET", "/where?x=1")
        r = conn.getresponse()
        body = json.loads(r.read())
    finally:
        conn.close()
    assert r.status == 200
    assert r.version == 11
    assert body["url_scheme"] == "https"
    assert body["protocol"] == "HTTP/1.1"
    assert body["path"] == "/where" and body["query"] == "x=1"
    assert r.getheader("Strict-Transport-Security") == "max-age=600"


def test_http2_is_negotiated_by_alpn(server, certs, tmp_path):
    p, ports = server
    r = curl(tmp_path, f"https://a.porch.test:{ports['tls']}/", "--http2",
             host="a.porch.test", port=ports["tls"], cacert=certs["a"][0])
    assert r.version == "2" and r.status == 200, r.verbose
    assert "HTTP/2 200" in r.verbose
    body = r.json()
    assert body["url_scheme"] == "https"
    assert body["protocol"] == "HTTP/2"
    assert body["host"] == f"a.porch.test:{ports['tls']}"
    assert (body["server_name"], body["server_port"]) == ("a.porch.test", str(ports["tls"]))
    assert r.headers["strict-transport-security"] == "max-age=600"


def test_alpn_offers_h2_and_http11(server):
    p, ports = server
    assert handshake(ports["tls"], "a.porch.test", alpn=["h2", "http/1.1"])[1] == "h2"
    assert handshake(ports["tls"], "a.porch.test", alpn=["http/1.1"])[1] == "http/1.1"
    assert handshake(ports["tls"], "a.porch.test", alpn=None)[1] is None


def test_http11_over_tls_when_the_client_asks_for_it(server, certs, tmp_path):
    p, ports = server
    r = curl(tmp_path, f"https://a.porch.test:{ports['tls']}/", "--http1.1",
             host="a.porch.test", port=ports["tls"], cacert=certs["a"][0])
    assert (r.version, r.status) == ("1.1", 200)
    assert r.json()["url_scheme"] == "https"
    assert r.json()["protocol"] == "HTTP/1.1"


def test_sni_chooses_the_certificate(server, certs):
    p, ports = server
    a, b = der(certs["a"][0]), der(certs["b"][0])
    assert a != b
    assert handshake(ports["tls"], "a.porch.test")[0] == a
    assert handshake(ports["tls"], "localhost")[0] == a
    assert handshake(ports["tls"], "b.porch.test")[0] == b
    assert handshake(ports["tls"], "B.Porch.Test")[0] == b
    assert handshake(ports["tls"], "api.b.porch.test")[0] == b
    # Unknown names, names past the wildcard's one label, and no SNI: the first certificate.
    assert handshake(ports["tls"], "other.test")[0] == a
    assert handshake(ports["tls"], "x.api.b.porch.test")[0] == a
    assert handshake(ports["tls"], None)[0] == a


def test_each_name_verifies_against_its_own_certificate(server, certs, tmp_path):
    p, ports = server
    # A client trusting only b's certificate completes the handshake for b's names.
    handshake(ports["tls"], "b.porch.test", cafile=str(certs["b"][0]))
    handshake(ports["tls"], "www.b.porch.test", cafile=str(certs["b"][0]))
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(ports["tls"], "a.porch.test", cafile=str(certs["b"][0]))
    r = curl(tmp_path, f"https://www.b.porch.test:{ports['tls']}/", "--http2",
             host="www.b.porch.test", port=ports["tls"], cacert=certs["b"][0])
    assert (r.version, r.status) == ("2", 200)
    assert r.json()["url_scheme"] == "https"


def test_the_apps_own_hsts_header_is_kept(server, certs, tmp_path):
    p, ports = server
    r = curl(tmp_path, f"https://a.porch.test:{ports['tls']}/hsts", "--http2",
             host="a.porch.test", port=ports["tls"], cacert=certs["a"][0])
    assert r.status == 200
    assert r.headers["strict-transport-security"] == "max-age=1; includeSubDomains"


def test_static_files_over_http2(server, certs, static_dir, tmp_path):
    p, ports = server
    base = f"https://a.porch.test:{ports['tls']}/static"
    kw = dict(host="a.porch.test", port=ports["tls"], cacert=certs["a"][0])
    r = curl(tmp_path, f"{base}/hello.txt", "--http2", **kw)
    assert (r.version, r.status) == ("2", 200)
    assert r.body == b"hello over TLS\n"
    assert r.headers["strict-transport-security"] == "max-age=600"
    etag = r.headers["etag"]

    big = (static_dir / "big.bin").read_bytes()
    r = curl(tmp_path, f"{base}/big.bin", "--http2", **kw)
    assert (r.version, r.status) == ("2", 200)
    assert hashlib.sha256(r.body).hexdigest() == hashlib.sha256(big).hexdigest()

    r = curl(tmp_path, f"{base}/big.bin", "--http2", "-r", "100-199", **kw)
    assert (r.version, r.status) == ("2", 206)
    assert r.body == big[100:200]

    r = curl(tmp_path, f"{base}/hello.txt", "--http2", "-H", f"If-None-Match: {etag}", **kw)
    assert (r.version, r.status) == ("2", 304)


# --- cleartext HTTP/2 and plain listeners ----------------------------------------------------


def test_h2c_prior_knowledge(server, static_dir, tmp_path):
    p, ports = server
    r = curl(tmp_path, f"http://127.0.0.1:{ports['h2c']}/", "--http2-prior-knowledge")
    assert (r.version, r.status) == ("2", 200), r.verbose
    assert r.json()["url_scheme"] == "http"
    assert r.json()["protocol"] == "HTTP/2"
    assert "strict-transport-security" not in r.headers
    r = curl(tmp_path, f"http://127.0.0.1:{ports['h2c']}/static/big.bin",
             "--http2-prior-knowledge")
    assert (r.version, r.status) == ("2", 200)
    assert r.body == (static_dir / "big.bin").read_bytes()
    # HTTP/1.1 still works on the same listener.
    r = curl(tmp_path, f"http://127.0.0.1:{ports['h2c']}/", "--http1.1")
    assert (r.version, r.status) == ("1.1", 200)
    assert r.json()["protocol"] == "HTTP/1.1"


def test_a_trusted_proxy_can_still_say_https_on_a_plain_listener(server, tmp_path):
    p, ports = server
    r = curl(tmp_path, f"http://127.0.0.1:{ports['plain']}/", "-H", "X-Forwarded-Proto: https")
    assert r.json()["url_scheme"] == "https"
    r = curl(tmp_path, f"http://127.0.0.1:{ports['plain']}/")
    assert r.json()["url_scheme"] == "http"


H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def test_plain_listener_without_h2c_speaks_only_http1(server):
    p, ports = server
    reply = raw_request(ports["plain"], H2_PREFACE, timeout=5)
    # No HTTP/2 SETTINGS frame (type 4) comes back: an HTTP/1 error or a closed connection.
    assert reply == b"" or reply.startswith(b"HTTP/1.1 "), reply[:64]
    # The h2c listener answers the same bytes with HTTP/2 settings.
    reply = raw_request(ports["h2c"], H2_PREFACE, timeout=2, read_until_close=False)
    assert len(reply) >= 9 and reply[3] == 4, reply[:64]


# --- redirect to HTTPS -----------------------------------------------------------------------


def test_plain_http_is_redirected_to_https(server):
    p, ports = server
    reply = raw_request(
        ports["redir"],
        b"GET /some/path?a=1&b=2 HTTP/1.1\r\nHost: a.porch.test:8080\r\nConnection: close\r\n\r\n",
    )
    head = reply.split(b"\r\n\r\n", 1)[0].decode()
    assert head.startswith("HTTP/1.1 301"), head
    assert f"location: https://a.porch.test:{ports['tls']}/some/path?a=1&b=2" in head.lower()
    assert "strict-transport-security" not in head.lower()

    reply = raw_request(
        ports["redir443"],
        b"POST /form HTTP/1.1\r\nHost: a.porch.test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    head = reply.split(b"\r\n\r\n", 1)[0].decode().lower()
    assert head.startswith("http/1.1 301"), head
    assert "location: https://a.porch.test/form\r\n" in head + "\r\n"


def test_curl_follows_the_redirect_to_http2_over_tls(server, certs, tmp_path):
    p, ports = server
    r = curl(tmp_path, f"http://a.porch.test:{ports['redir']}/x?y=z", "-L", "--http2",
             "--resolve", f"a.porch.test:{ports['tls']}:127.0.0.1",
             host="a.porch.test", port=ports["redir"], cacert=certs["a"][0])
    assert (r.version, r.status) == ("2", 200), r.verbose
    body = r.json()
    assert body["url_scheme"] == "https"
    assert (body["path"], body["query"]) == ("/x", "y=z")


def test_redirect_keeps_an_ipv6_host_and_refuses_a_bad_one(server):
    p, ports = server
    reply = raw_request(ports["redir"], b"GET / HTTP/1.1\r\nHost: [::1]:81\r\nConnection: close\r\n\r\n")
    head = reply.split(b"\r\n\r\n", 1)[0].decode().lower()
    assert f"location: https://[::1]:{ports['tls']}/" in head, head
    reply = raw_request(ports["redir"], b"GET / HTTP/1.1\r\nHost: a b\r\nConnection: close\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 400"), reply[:64]


# --- graceful shutdown ---------------------------------------------------------------------


@pytest.mark.parametrize("http", ["--http1.1", "--http2"])
def test_term_lets_an_https_request_in_flight_finish(porch, tmp_path, certs, static_dir, http):
    p, ports = start(porch, tmp_path, certs, static_dir)
    marker = tmp_path / "inside"
    url = f"https://a.porch.test:{ports['tls']}/sleep?s=1.5&marker={marker}"
    client = subprocess.Popen(
        ["curl", "-sS", "--max-time", "20", http, "--cacert", str(certs["a"][0]),
         "--resolve", f"a.porch.test:{ports['tls']}:127.0.0.1", "-w", " %{http_version} %{http_code}",
         url],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert wait_until(marker.exists, 15), p.log()
        p.signal(signal.SIGTERM)
        out, err = client.communicate(timeout=25)
    finally:
        if client.poll() is None:
            client.kill()
    assert client.returncode == 0, err
    want = "2" if http == "--http2" else "1.1"
    assert out == f"slept {want} 200", out
    assert p.wait(25) == 0, p.log()


# --- bad certificates ----------------------------------------------------------------------


def bad_config(tmp_path: Path, cert: Path, key: Path) -> Path:
    cfg = tmp_path / "bad.toml"
    cfg.write_text(f"""
workers = 1
[[listener]]
bind = "127.0.0.1:{free_port()}"
tls = {{ cert = "{cert}", key = "{key}" }}
[[listener.route]]
path = "/"
app = true
""")
    return cfg


def run_porch(args, timeout=30):
    env = dict(os.environ, PYTHONPATH=str(APPS))
    env.pop("VIRTUAL_ENV", None)
    return subprocess.run([str(PORCH_BIN), *map(str, args)], cwd=APPS, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_a_missing_certificate_stops_startup_naming_the_file(tmp_path, certs):
    missing = tmp_path / "nowhere" / "site.crt"
    cfg = bad_config(tmp_path, missing, certs["a"][1])
    for args in (["-c", cfg], ["--check-config", "-c", cfg]):
        r = run_porch([*args, "tls_app:application"])
        assert r.returncode != 0, r.stdout + r.stderr
        err = r.stdout + r.stderr
        assert str(missing) in err, err
        assert "listener[0].tls" in err, err


@pytest.mark.parametrize("case", ["key-of-another-cert", "key-as-cert", "cert-as-key", "garbage"])
def test_unusable_certificates_are_explained(tmp_path, certs, case):
    (a_cert, a_key), (b_cert, b_key) = certs["a"], certs["b"]
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n")
    cert, key, culprit, why = {
        "key-of-another-cert": (a_cert, b_key, b_key, "does not belong"),
        "key-as-cert": (a_key, a_key, a_key, "no certificate"),
        "cert-as-key": (a_cert, a_cert, a_cert, "no private key"),
        "garbage": (garbage, a_key, garbage, "not a valid PEM"),
    }[case]
    r = run_porch(["--check-config", "-c", bad_config(tmp_path, cert, key), "tls_app:application"])
    err = r.stdout + r.stderr
    assert r.returncode != 0, err
    assert str(culprit) in err and why in err, err


def test_startup_lines_name_each_listeners_scheme(server):
    p, ports = server
    log = p.log()
    assert f"listening on https://127.0.0.1:{ports['tls']} (HTTP/2 and HTTP/1.1)" in log, log
    assert f"listening on http://127.0.0.1:{ports['h2c']} (HTTP/1.1 and cleartext HTTP/2)" in log, log
    assert f"http://127.0.0.1:{ports['tls']}" not in log, log


def test_http2_is_held_to_the_header_field_limit_too(server, tmp_path):
    """HTTP/1 heads are counted by the strict layer; HTTP/2's decoded fields are counted
    before routing: 431 on every protocol past limit_request_fields (default 100)."""
    p, ports = server
    many = [a for i in range(150) for a in ("-H", f"X-Field-{i}: v")]
    r = curl(tmp_path, f"http://127.0.0.1:{ports['h2c']}/", "--http2-prior-knowledge", *many)
    assert (r.version, r.status) == ("2", 431), r.verbose
    few = [a for i in range(50) for a in ("-H", f"X-Field-{i}: v")]
    r = curl(tmp_path, f"http://127.0.0.1:{ports['h2c']}/", "--http2-prior-knowledge", *few)
    assert (r.version, r.status) == ("2", 200), r.verbose


def test_a_malformed_head_on_a_redirecting_listener_is_400_not_a_redirect(server):
    p, ports = server
    with socket.create_connection(("127.0.0.1", ports["redir"]), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.1\nHost: example.com\n\n")
        s.settimeout(10)
        reply = b""
        try:
            while chunk := s.recv(65536):
                reply += chunk
        except socket.timeout:
            pass
    assert reply.startswith(b"HTTP/1.1 400 "), reply[:200]


def test_half_done_handshakes_from_one_address_cannot_fill_the_listener(porch, tmp_path, certs):
    """One address opening connection after connection with half a ClientHello holds at
    most `limit_handshakes_per_ip` of the listener's `limit_connections` slots; clients
    from elsewhere keep completing their handshakes and requests."""
    port = free_port()
    cert, key = certs["a"]
    cfg = tmp_path / "porch.toml"
    cfg.write_text(f"""
workers = 1
limit_connections = 40
limit_handshakes_per_ip = 8

[[listener]]
bind = "127.0.0.1:{port}"
tls = {{ certs = [{{ cert = "{cert}", key = "{key}" }}] }}
[[listener.route]]
path = "/"
app = true
""")
    p = porch("-c", cfg, "tls_app:application", bind=False)
    wait_for_port(port, p.proc, 30)
    # The first 5 bytes of a TLS handshake record, and nothing more: porch waits for the rest.
    half_hello = b"\x16\x03\x01\x02\x00"
    stalled = []
    try:
        for _ in range(60):
            s = socket.socket()
            s.settimeout(5)
            s.bind(("127.0.0.2", 0))
            s.connect(("127.0.0.1", port))
            s.sendall(half_hello)
            stalled.append(s)
        time.sleep(0.3)
        still_open = 0
        for s in stalled:
            s.settimeout(0.05)
            try:
                still_open += s.recv(1) != b""
            except socket.timeout:
                still_open += 1
            except OSError:
                pass
        assert still_open <= 8, f"{still_open} half-done handshakes from one address held"
        ctx = ssl.create_default_context(cafile=str(cert))
        import http.client

        for i in range(5):
            conn = http.client.HTTPSConnection("localhost", port, context=ctx, timeout=10)
            try:
                conn.request("GET", f"/where?i={i}")
                assert conn.getresponse().status == 200
            finally:
                conn.close()
    finally:
        for s in stalled:
            s.close()
