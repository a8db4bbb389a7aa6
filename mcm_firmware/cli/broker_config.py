"""``mcm-emu broker-config``: the broker's side of a secured fleet, for Eclipse Mosquitto 2.

Writes into ``--out DIR``:

- ``passwords``, the node listener's: every node as its own user (its client id
  ``mcm-<fleet>-<id>``, the password :func:`~mcm_firmware.transport.security.node_password` derives
  from the fleet's node secret) and the host user (a run's own checks), hashed as
  ``mosquitto_passwd`` does;
- ``host-passwords``, the host listener's: the host user only, so that no node's credentials connect
  there (the host listener cannot tie client ids to user names: a node that connected there could
  take any client id, another node's too, and knock that node off);
- ``acl``: node N may publish only its own ``state``, ``tlm``, ``evt`` and ``rsp`` topics and read
  only its own ``cmd``; the host user reads and writes the fleet's topics;
- ``mosquitto.conf``: a listener for the nodes on which the user name is the client id (so that
  nobody can connect under a node's client id without that node's password, and no node under
  another's), a listener for hosts which only the host user passes, anonymous access denied on
  both, packets above the largest frame refused, a second of the fleet's telemetry held for a
  consumer that is behind (:func:`queued_for_consumer`), TLS where certificates are given;
- ``certs/`` with ``--tls-ca-cert``: a certificate and key per node (``mcm-<fleet>-<id>.crt``), for
  the host user, for the Redfish service (``redfish.crt``: 127.0.0.1, localhost and each
  ``--redfish-host``) and, without ``--tls-cert``, for the broker, issued by the fleet's CA; on the
  node listener a certificate's name is then its user name; on the host listener a node's
  certificate passes the handshake (the same CA) and ``host-passwords`` refuses it. See
  docs/security.md.
"""

from __future__ import annotations

import argparse
import os
import secrets
from pathlib import Path
from typing import Any

from ..transport.security import MAX_PACKET
from .common import EXIT_OK, U32_MAX, BadInput, bounded, fleet_name

CHANNELS_OUT = ("state", "tlm", "evt", "rsp")
# Mosquitto's max_packet_size is MAX_PACKET: the bound the nodes' own clients hold on any broker


def queued_for_consumer(nodes: int, telemetry_hz: float = 10.0) -> int:
    """Mosquitto's ``max_queued_messages`` for a fleet of ``nodes``: a second of its telemetry,
    at least Mosquitto's default. Mosquitto 2.0 drops a QoS 0 message for a subscriber once that
    many wait for its socket, so a consumer of the whole fleet's telemetry (fleet software, an
    exporter) that stalls for longer than this loses frames the broker had accepted."""
    return max(1000, round(nodes * telemetry_hz))


def add_parser(sub: Any) -> None:
    b = sub.add_parser(
        "broker-config",
        help="write a Mosquitto password file, ACL and configuration for a secured fleet",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    b.add_argument("--fleet", type=fleet_name, default="default", help="fleet name (default: default)")
    b.add_argument("--nodes", type=bounded(int, 1, 1_000_000, "--nodes"), required=True, help="nodes in the fleet")
    b.add_argument(
        "--first-id", type=bounded(int, 0, U32_MAX, "--first-id"), default=0, help="first node id (default 0)"
    )
    b.add_argument(
        "--node-secret",
        required=True,
        metavar="FILE",
        help="the fleet's node secret (created, 32 random bytes in hex, mode 0600, when FILE does not exist)",
    )
    b.add_argument("--host-user", default="fleet-host", help="the hosts' user name (default fleet-host)")
    b.add_argument("--host-password-file", required=True, metavar="FILE", help="file holding the hosts' password")
    b.add_argument(
        "--out", required=True, metavar="DIR", help="directory to write passwords, host-passwords, acl, mosquitto.conf"
    )
    b.add_argument("--port", type=bounded(int, 1, 65535, "--port"), default=1883, help="node listener (default 1883)")
    b.add_argument(
        "--host-port", type=bounded(int, 1, 65535, "--host-port"), default=1884, help="host listener (default 1884)"
    )
    b.add_argument("--address", default="127.0.0.1", help="address the listeners bind (default 127.0.0.1)")
    b.add_argument(
        "--broker-user",
        default="mosquitto",
        help="the user Mosquitto runs as once started (its 'user' option; default mosquitto): it must read the "
        "password file and ACL, which are handed to it when broker-config runs as root",
    )
    b.add_argument("--tls-cert", metavar="FILE", default=None, help="the broker's certificate (TLS on both listeners)")
    b.add_argument("--tls-key", metavar="FILE", default=None, help="the broker's private key")
    b.add_argument("--tls-cafile", metavar="FILE", default=None, help="CA of client certificates (then required)")
    b.add_argument(
        "--tls-ca-cert",
        metavar="FILE",
        default=None,
        help="the fleet's CA certificate (created with --tls-ca-key when neither file exists): every node and the "
        "host user get a certificate of their own from it in DIR/certs/, required on both listeners; on the node "
        "listener a certificate's name is its user name (use_identity_as_username)",
    )
    b.add_argument("--tls-ca-key", metavar="FILE", default=None, help="the fleet CA's private key (mode 0600)")
    b.add_argument(
        "--redfish-host",
        action="append",
        default=[],
        metavar="NAME",
        help="with --tls-ca-cert: a host name or IP address the Redfish service (mcm-emu redfish --https-cert) is "
        "reached at, besides 127.0.0.1 and localhost, named in its certificate DIR/certs/redfish.crt (repeatable)",
    )
    b.set_defaults(func=cmd_broker_config)


def _hand_over(paths: list[Path], user: str) -> None:
    """Make ``paths`` the broker user's (only root can; as anyone else the files stay the caller's)."""
    if os.geteuid() != 0:
        return
    import pwd

    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise BadInput(f"--broker-user {user!r}: no such user on this machine") from None
    for p in paths:
        os.chown(p, entry.pw_uid, entry.pw_gid)


def cmd_broker_config(args: argparse.Namespace) -> int:
    from ..transport.security import is_node_client_id, mosquitto_hash, node_password, read_secret

    if args.port == args.host_port:
        raise BadInput("--port and --host-port must differ: nodes and hosts have listeners of their own")
    if bool(args.tls_cert) != bool(args.tls_key):
        raise BadInput("--tls-cert and --tls-key go together")
    if bool(args.tls_ca_cert) != bool(args.tls_ca_key):
        raise BadInput("--tls-ca-cert and --tls-ca-key go together")
    if args.tls_ca_cert and args.tls_cafile:
        raise BadInput("--tls-ca-cert issues the client certificates and is their CA: it does not go with --tls-cafile")
    if args.tls_cafile and not args.tls_cert:
        raise BadInput("--tls-cafile (client certificates) needs --tls-cert and --tls-key")
    if args.redfish_host and not args.tls_ca_cert:
        raise BadInput("--redfish-host names the Redfish service in the certificate --tls-ca-cert issues: give it too")
    if not args.host_user or ":" in args.host_user:
        raise BadInput(f"--host-user {args.host_user!r}: a user name without ':'")
    if is_node_client_id(args.host_user):
        # on the node listener a user name is the client id: the host user's connections there
        # would take that node's client id (and knock it off), and the two would share a user name
        raise BadInput(f"--host-user {args.host_user!r} is named as a node's client id (mcm-<fleet>-<id>)")
    secret_path = Path(args.node_secret)
    if not secret_path.exists():
        fd = os.open(secret_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
        print(f"broker-config: new node secret in {secret_path}")
    try:
        secret = read_secret(str(secret_path))
        host_password = read_secret(args.host_password_file).decode()
    except ValueError as e:
        raise BadInput(str(e)) from None
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BadInput(f"--out {out}: {e.strerror or e}") from None
    ids = range(args.first_id, args.first_id + args.nodes)
    fleet = args.fleet
    users = [f"{args.host_user}:{mosquitto_hash(host_password)}"]
    acl = [
        f"# mcm-emu broker-config: fleet {fleet!r}, nodes {ids[0]}..{ids[-1]}",
        "",
        "# hosts: every topic of the fleet",
        f"user {args.host_user}",
        f"topic readwrite mcm/v1/{fleet}/#",
    ]
    for n in ids:
        cid = f"mcm-{fleet}-{n}"
        users.append(f"{cid}:{mosquitto_hash(node_password(secret, cid))}")
        acl += ["", f"user {cid}"]
        acl += [f"topic write mcm/v1/{fleet}/{n}/{ch}" for ch in CHANNELS_OUT]
        acl.append(f"topic read mcm/v1/{fleet}/{n}/cmd")
    certs = out / "certs"
    if args.tls_ca_cert:
        from . import certs as mint

        try:
            ca = mint.load_or_create_ca(Path(args.tls_ca_cert), Path(args.tls_ca_key), f"mcm-emu fleet {fleet} CA")
            certs.mkdir(exist_ok=True)
            for name in [args.host_user, *(f"mcm-{fleet}-{n}" for n in ids)]:
                mint.issue(ca, name, certs / f"{name}.crt", certs / f"{name}.key")
            # the Redfish service's (mcm-emu redfish --https-cert/--https-key), for where it is reached
            redfish = ["127.0.0.1", "localhost", *args.redfish_host]
            mint.issue(ca, redfish[0], certs / "redfish.crt", certs / "redfish.key", server=True, alt_names=redfish[1:])
            if not args.tls_cert:  # the broker's own, for the address it listens on
                args.tls_cert, args.tls_key = str(certs / "broker.crt"), str(certs / "broker.key")
                mint.issue(ca, args.address, certs / "broker.crt", certs / "broker.key", server=True)
                _hand_over([certs / "broker.key"], args.broker_user)
        except (OSError, ValueError) as e:
            raise BadInput(str(e)) from None
        if ca.created:
            print(f"broker-config: new fleet CA in {args.tls_ca_cert} (its key in {args.tls_ca_key}, mode 0600)")
    # the host listener's users: the host user only. Were the nodes there too, a node's credentials
    # would connect on the host listener under any client id, another node's included (Mosquitto's
    # client ids are the broker's, not a listener's), and knock that node off
    for name, lines in (("passwords", users), ("host-passwords", users[:1])):
        (out / name).write_text("\n".join(lines) + "\n")
        os.chmod(out / name, 0o600)
    (out / "acl").write_text("\n".join(acl) + "\n")
    _hand_over([out / "passwords", out / "host-passwords", out / "acl"], args.broker_user)

    def listener(port: int, role: str, node_side: bool) -> list[str]:
        lines = [f"# {role}", f"listener {port} {args.address}"]
        if node_side:
            lines.append("use_username_as_clientid true")
        lines.append("allow_anonymous false")
        if node_side and args.tls_ca_cert:  # the certificate's name is the user name; no password
            lines.append("use_identity_as_username true")
        else:
            lines.append(f"password_file {(out / ('passwords' if node_side else 'host-passwords')).resolve()}")
        lines.append(f"acl_file {(out / 'acl').resolve()}")
        if args.tls_cert:
            lines += [f"certfile {Path(args.tls_cert).resolve()}", f"keyfile {Path(args.tls_key).resolve()}"]
            clients_ca = args.tls_cafile or args.tls_ca_cert
            if clients_ca:
                lines += [f"cafile {Path(clients_ca).resolve()}", "require_certificate true"]
        return lines

    conf = [
        f"# mcm-emu broker-config: fleet {fleet!r}, {args.nodes} nodes; docs/security.md",
        "per_listener_settings true",
        f"max_packet_size {MAX_PACKET}",
        f"user {args.broker_user}",
        "set_tcp_nodelay true",
        "# what the broker holds for a consumer that is behind before it drops QoS 0 telemetry:",
        "# a second of the fleet's at 10 Hz (the default, 1,000, is 10 ms of 10,000 nodes')",
        f"max_queued_messages {queued_for_consumer(args.nodes)}",
        "",
        *listener(args.port, "nodes: each connects as its own client id, which is its user name", True),
        "",
        *listener(args.host_port, "hosts (ctl, monitor, fleet software): the host user only", False),
    ]
    (out / "mosquitto.conf").write_text("\n".join(conf) + "\n")
    scheme = "mqtts" if args.tls_cert else "mqtt"
    print(
        f"broker-config: {args.nodes} node users and {args.host_user!r} in {out}/passwords (node listener), "
        f"{args.host_user!r} alone in {out}/host-passwords (host listener), acl, mosquitto.conf"
    )
    tls = ""
    if args.tls_ca_cert:
        print(f"broker-config: a certificate for each node and for {args.host_user!r} in {certs}/")
        tls = f" --cafile {args.tls_ca_cert} --cert '{certs}/{{client_id}}.crt' --key '{certs}/{{client_id}}.key'"
    print(f"  mosquitto -c {out}/mosquitto.conf")
    print(
        f"  mcm-emu run --broker {scheme}://{args.address}:{args.port} --nodes {args.nodes} --first-id {args.first_id} "
        f"--fleet {fleet} {'' if tls else f'--node-secret {secret_path} '}--username {args.host_user} --password-file "
        f"{args.host_password_file}{tls}"
    )
    print(
        f"  mcm-emu ctl --broker {scheme}://{args.address}:{args.host_port} --fleet {fleet} --username "
        f"{args.host_user} --password-file {args.host_password_file}{tls} {ids[0]} status"
    )
    if args.tls_ca_cert:
        print(
            f"  mcm-emu redfish --broker {scheme}://{args.address}:{args.host_port} --fleet {fleet} --username "
            f"{args.host_user} --password-file {args.host_password_file}{tls.replace('{client_id}', args.host_user)} "
            f"--https-cert {certs}/redfish.crt --https-key {certs}/redfish.key"
        )
    return EXIT_OK
