"""Who a connection to the broker is, and how it is protected: credentials and TLS, carried in the
broker URL so that every client made from it (nodes, carriers, hosts, the bench's counters) is
secured alike.

``mqtt://HOST:PORT`` or ``mqtts://HOST:PORT`` (TLS; port 8883 by default) with query parameters:

=================  ===========================================================================
``username``       the MQTT user name (a host's role, e.g. ``fleet-host``)
``password_file``  a file whose first line is that user's password (read at every connect, so a
                   changed file takes effect at the next reconnect)
``node_secret``    a file holding the fleet's node secret: each node connects as its own client
                   id with the password :func:`node_password` derives from it, so that the
                   broker's ACL can give every node its own topics and nothing else
``cafile``         CA certificate(s) the broker's certificate must chain to (``mqtts``)
``cert``, ``key``  this client's certificate and key, where the broker asks for one; with
                   ``{client_id}`` in both (``certs/{client_id}.crt``), each connection presents
                   its own: a node ``mcm-<fleet>-<id>``, a carrier its control connection's id
                   (``mcm-<fleet>-link-<first>-<last>``) and its telemetry's (that, ``-tlm``)
=================  ===========================================================================

``mcm-emu`` commands take ``--username``, ``--password-file``, ``--node-secret``, ``--cafile``,
``--cert`` and ``--key``, which add these parameters. No I/O here but reading the named files.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import ssl
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

PARAMS = ("username", "password_file", "node_secret", "cafile", "cert", "key")
CLIENT_ID = "{client_id}"
"""In ``cert`` and ``key``: each connection's own client id (a certificate per node)."""
TLS_PORT = 8883
MAX_PACKET = 66_000
"""The largest MQTT packet a node or a carrier's control connection takes whole: the largest frame
(27 + 65,535 bytes, with an authentication trailer 21 more) with its topic and MQTT header fits.
Mosquitto's ``max_packet_size`` as ``broker-config`` writes it (the broker drops a larger packet's
sender before any node sees it); on any broker, a larger packet is skipped unread by the clients
(:mod:`.mqtt`, :mod:`.mqtt_raw`) and counted by the node it was for."""
_NODE_ID = re.compile(r"mcm-.+-\d+")


@dataclass(frozen=True)
class BrokerSecurity:
    """The credentials and TLS settings of one broker URL (all optional)."""

    tls: bool = False
    username: str | None = None
    password_file: str | None = None
    node_secret: str | None = None
    cafile: str | None = None
    cert: str | None = None
    key: str | None = None

    @property
    def any(self) -> bool:
        return self.tls or bool(self.username or self.node_secret)

    def credentials(self, client_id: str) -> tuple[str | None, str | None]:
        """(user name, password) for a client: a node's own (from the node secret) when the URL
        has a node secret and ``client_id`` is a node's (``mcm-<fleet>-<id>``), else the URL's
        user (hosts, and a run's own checks), else none."""
        if self.node_secret and is_node_client_id(client_id):
            return client_id, node_password(read_secret(self.node_secret), client_id)
        if self.username:
            password = read_secret(self.password_file).decode() if self.password_file else None
            return self.username, password
        return None, None

    @property
    def per_client(self) -> bool:
        """The certificate and key are named per client id (``{client_id}`` in them)."""
        return bool(self.cert and CLIENT_ID in self.cert)

    def identity(self, client_id: str) -> str:
        """Whose certificate a connection presents with ``{client_id}``: a node's or a carrier's
        connection its own client id; any other client (ctl, monitor, a run's own checks) connects in
        the host role, as the URL's user name when it has one (else as its client id)."""
        if is_node_client_id(client_id) or "-link-" in client_id or not self.username:
            return client_id
        return self.username

    def for_client(self, client_id: str) -> BrokerSecurity:
        """These settings with ``{client_id}`` in the certificate and key replaced by the
        connection's :meth:`identity`."""
        if not self.per_client:
            return self
        who = self.identity(client_id)
        return replace(
            self, cert=(self.cert or "").replace(CLIENT_ID, who), key=(self.key or "").replace(CLIENT_ID, who)
        )

    def ssl_context(self, client_id: str | None = None) -> ssl.SSLContext | None:
        """The TLS context of client ``client_id`` (certificate and host name checked), or None
        without TLS. ValueError names a certificate or key that is missing, unreadable or not a
        pair, and whose it is."""
        if not self.tls:
            return None
        sec = self
        if self.per_client:
            if client_id is None:
                raise ValueError(f"client certificate {self.cert}: names {CLIENT_ID}, and no client id was given")
            sec = self.for_client(client_id)
        try:
            ctx = ssl.create_default_context(cafile=sec.cafile)
        except (OSError, ssl.SSLError) as e:
            raise ValueError(f"CA file {sec.cafile}: {getattr(e, 'strerror', None) or e}") from None
        if sec.cert:
            _load_chain(ctx, sec, self.identity(client_id) if client_id else None)
        return ctx


def _load_chain(ctx: ssl.SSLContext, sec: BrokerSecurity, whose: str | None) -> None:
    """Load ``sec``'s certificate and key into ``ctx``; ValueError names the file that is missing
    or unreadable, or a key that is not the certificate's, and whose they are."""
    of = f" of {whose}" if whose else ""
    for what, path in (("certificate", sec.cert or ""), ("key", sec.key or "")):
        if not os.path.isfile(path):
            raise ValueError(f"client {what}{of}: {path}: no such file")
    try:
        ctx.load_cert_chain(sec.cert or "", sec.key)
    except ssl.SSLError as e:
        if "KEY_VALUES_MISMATCH" in str(e):
            why = "the key is not the certificate's"
        else:
            why = f"not a PEM certificate and its private key ({e.reason or e})"
        raise ValueError(f"client certificate{of} {sec.cert} with key {sec.key}: {why}") from None
    except OSError as e:
        raise ValueError(f"client certificate{of} {sec.cert}: {e.strerror or e}") from None


def check_client_certificates(url: str, client_ids: list[str]) -> None:
    """With ``{client_id}`` in the URL's ``cert`` and ``key``: that each of these clients' own
    certificate and key are there and a pair (ValueError names the first that is not), so that a run
    refuses to start rather than leave a node retrying a connection it cannot make."""
    sec = security_of(url)
    if not (sec.tls and sec.per_client):
        return
    for cid in client_ids:
        _load_chain(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), sec.for_client(cid), sec.identity(cid))


def is_node_client_id(client_id: str) -> bool:
    """``mcm-<fleet>-<node id>``, as a node connects (a carrier's ``mcm-<fleet>-link-...`` is not)."""
    return bool(_NODE_ID.fullmatch(client_id)) and "-link-" not in client_id


def read_secret(path: str | None) -> bytes:
    """The first line of a secret file, without its line end; ValueError names a missing or empty
    file (the files are the operator's: their permissions are checked by nobody but them)."""
    if not path:
        raise ValueError("no secret file given")
    try:
        text = Path(path).read_bytes()
    except OSError as e:
        raise ValueError(f"secret file {path}: {e.strerror or e}") from None
    line = text.splitlines()[0].strip() if text.strip() else b""
    if not line:
        raise ValueError(f"secret file {path} is empty")
    return line


def node_password(secret: bytes, client_id: str) -> str:
    """A node's broker password: HMAC-SHA256 of its client id under the fleet's node secret, in
    base64url without padding (43 characters). One secret provisions a whole fleet; knowing one
    node's password tells nothing of another's."""
    digest = hmac.new(secret, client_id.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def mosquitto_hash(password: str, *, salt: bytes | None = None, iterations: int = 101) -> str:
    """A password as Mosquitto 2's password file stores it (what ``mosquitto_passwd`` writes):
    ``$7$ITERATIONS$base64(salt)$base64(PBKDF2-HMAC-SHA512)``, a 12-byte random salt."""
    salt = os.urandom(12) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def security_of(url: str) -> BrokerSecurity:
    """The security parameters of a broker URL; ValueError names an unknown or repeated one."""
    parts = urlsplit(url)
    query = parse_qs(parts.query, keep_blank_values=True, strict_parsing=False) if parts.query else {}
    unknown = sorted(set(query) - set(PARAMS))
    if unknown:
        raise ValueError(f"broker URL {url!r}: unknown parameter(s) {', '.join(unknown)} (known: {', '.join(PARAMS)})")
    for name, given in query.items():
        if len(given) > 1 or not given[0]:
            raise ValueError(f"broker URL {url!r}: {name} must be given once, with a value")
    one = {k: v[0] for k, v in query.items()}
    sec = BrokerSecurity(
        tls=parts.scheme == "mqtts",
        username=one.get("username"),
        password_file=one.get("password_file"),
        node_secret=one.get("node_secret"),
        cafile=one.get("cafile"),
        cert=one.get("cert"),
        key=one.get("key"),
    )
    if (sec.cafile or sec.cert or sec.key) and not sec.tls:
        raise ValueError(f"broker URL {url!r}: cafile, cert and key are for mqtts:// (TLS)")
    if bool(sec.cert) != bool(sec.key):
        raise ValueError(f"broker URL {url!r}: cert and key go together")
    for name, value in (("cert", sec.cert), ("key", sec.key)):
        rest = (value or "").replace(CLIENT_ID, "")
        if "{" in rest or "}" in rest:
            raise ValueError(f"broker URL {url!r}: {name} {value!r}: the only placeholder is {CLIENT_ID}")
    if (CLIENT_ID in (sec.cert or "")) != (CLIENT_ID in (sec.key or "")):
        raise ValueError(f"broker URL {url!r}: cert and key both name {CLIENT_ID}, or neither does")
    if sec.password_file and not sec.username:
        raise ValueError(f"broker URL {url!r}: password_file needs a username")
    return sec


def with_security(url: str, **params: str | None) -> str:
    """``url`` with the given parameters added (None values left out); the command-line options
    ``--username`` ... become these."""
    given = {k: v for k, v in params.items() if v is not None}
    if not given:
        return url
    parts = urlsplit(url)
    query = parse_qs(parts.query) if parts.query else {}
    for k, v in given.items():
        query[k] = [v]
    flat = {k: v[0] for k, v in query.items()}
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(flat), parts.fragment))
