"""A third-party OPC UA client (asyncua) for the interop tests and the benchmark of Ironplant's
OPC UA server. tests/peers/opcua_node_client.js has the same command line and output.

Usage: opcua_client.py URL --pki DIR [--policy P] [--mode M] [--user NAME --password PW] COMMAND ...
  --policy  Basic256Sha256 (default) | Aes128_Sha256_RsaOaep | Aes256_Sha256_RsaPss | None
  --mode    SignAndEncrypt (default) | Sign | None
  anonymous when --user is absent.

Commands (each prints JSON on stdout):
  cert                          create (if missing) the client certificate DIR/client.der and key
                                DIR/client.pem (RSA 2048, self-signed, SAN = [URI
                                urn:ironplant-test:asyncua-client, DNS localhost]) and print
                                {"certificate": abs path, "thumbprint": SHA-1 hex upper}; no connection.
  browse NODE [--depth N]       {"nodes": [{"node_id", "browse_name", "browse_ns", "display_name",
                                "node_class", "data_type", "parent"}]}: the nodes reached forward
                                through hierarchical references from NODE (not NODE itself), depth 1.
  read NODE...                  {"values": [{"node_id", "value", "status", "status_code",
                                "source_timestamp", "server_timestamp"}]}
  subscribe NODE... [--interval MS] [--seconds S] [--sampling MS] [--queue N]
                                one line per notification {"node_id", "value", "status",
                                "status_code", "source_timestamp"}, then {"done": true, "count": N}
  count NODE... [--interval MS] [--seconds S] [--sampling MS] [--queue N]
                                {"done": true, "count": N, "cpu_seconds": user+sys, "elapsed": s}
  write NODE VALUE --type T     {"status": name, "status_code": int}; T = Double, Float, Int16,
                                Int32, Int64, UInt16, UInt32, Boolean or String

A connection, session or activation error prints {"error": message, "status": StatusCode name or
null} and exits with code 2. The client certificate is created on first use when missing; the
server certificate is not validated beyond asyncua's defaults.
"""

import argparse
import asyncio
import base64
import dataclasses
import datetime
import hashlib
import json
import logging
import math
import sys
import time
from pathlib import Path

from asyncua import Client, ua
from asyncua.client.ua_client import UaClientState
from asyncua.ua.status_codes import get_name_and_doc
from asyncua.crypto import security_policies
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

APP_URI = "urn:ironplant-test:asyncua-client"
POLICIES = {
    "Basic256Sha256": security_policies.SecurityPolicyBasic256Sha256,
    "Aes128_Sha256_RsaOaep": security_policies.SecurityPolicyAes128Sha256RsaOaep,
    "Aes256_Sha256_RsaPss": security_policies.SecurityPolicyAes256Sha256RsaPss,
    "None": None,
}
MODES = {
    "SignAndEncrypt": ua.MessageSecurityMode.SignAndEncrypt,
    "Sign": ua.MessageSecurityMode.Sign,
    "None": ua.MessageSecurityMode.None_,
}
TYPES = {
    "Double": (ua.VariantType.Double, float),
    "Float": (ua.VariantType.Float, float),
    "Int16": (ua.VariantType.Int16, int),
    "Int32": (ua.VariantType.Int32, int),
    "Int64": (ua.VariantType.Int64, int),
    "UInt16": (ua.VariantType.UInt16, int),
    "UInt32": (ua.VariantType.UInt32, int),
    "Boolean": (ua.VariantType.Boolean, lambda s: s.strip().lower() in ("true", "1", "yes")),
    "String": (ua.VariantType.String, str),
}


class ConnectError(Exception):
    """A failure before the session is usable: reported as {"error", "status"}, exit code 2."""


class ConnectionLost(Exception):
    """The connection ended during a subscription: reported like a ConnectError."""


def emit(obj):
    print(json.dumps(obj), flush=True)


def ensure_cert(pki: Path):
    """The client's certificate (DER) and key (PEM), created once per DIR and reused after."""
    pki.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = pki / "client.der", pki / "client.pem"
    if not (cert_path.is_file() and key_path.is_file()):
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([
            x509.NameAttribute(NameOID.COMMON_NAME, "ironplant-test asyncua client"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Ironplant tests"),
        ])
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=365))
            # OPC UA applications read the first URI of the SAN as the ApplicationUri.
            .add_extension(x509.SubjectAlternativeName([
                x509.UniformResourceIdentifier(APP_URI),
                x509.DNSName("localhost"),
            ]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, content_commitment=True, key_encipherment=True,
                data_encipherment=True, key_agreement=False, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False,
            ), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        key_path.write_bytes(key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        ))
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    thumb = hashlib.sha1(cert_path.read_bytes()).hexdigest().upper()
    return cert_path.resolve(), key_path.resolve(), thumb


def status_name(code):
    """The name of a StatusCode (its severity and sub-code; the info bits are ignored)."""
    name, _ = get_name_and_doc(code & 0xFFFF0000)
    return name


def iso(ts):
    # DateTime 0 (1601-01-01) is OPC UA's "no timestamp".
    if ts is None or ts.year <= 1601:
        return None
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=datetime.timezone.utc)
    return ts.astimezone(datetime.timezone.utc).isoformat().replace("+00:00", "Z")


def to_json(v):
    """A JSON value for an OPC UA value (numbers, text and arrays as they are, the rest as text)."""
    if v is None or isinstance(v, (bool, int, str)):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else str(v)
    if isinstance(v, (list, tuple)):
        return [to_json(x) for x in v]
    if isinstance(v, datetime.datetime):
        return iso(v)
    if isinstance(v, (bytes, bytearray)):
        return base64.b64encode(v).decode()
    if isinstance(v, ua.LocalizedText):
        return v.Text
    if isinstance(v, (ua.NodeId, ua.ExpandedNodeId)):
        return v.to_string()
    if isinstance(v, ua.QualifiedName):
        return v.to_string()
    if dataclasses.is_dataclass(v):  # a structure (Range, EUInformation...): its fields
        return {f.name: to_json(getattr(v, f.name)) for f in dataclasses.fields(v) if f.name != "Encoding"}
    return str(v)


def datavalue_json(node_id, dv, with_server_ts):
    code = dv.StatusCode.value if dv.StatusCode is not None else 0
    out = {
        "node_id": node_id,
        "value": to_json(dv.Value.Value if dv.Value is not None else None),
        "status": status_name(code),
        "status_code": code,
        "source_timestamp": iso(dv.SourceTimestamp),
    }
    if with_server_ts:
        out["server_timestamp"] = iso(dv.ServerTimestamp)
    return out


def parse_node(s):
    try:
        return ua.NodeId.from_string(s)
    except Exception as e:  # asyncua raises several kinds for a malformed id
        usage_error(f"bad node id {s!r}: {e}")


async def connect(args):
    cert, key, _ = ensure_cert(Path(args.pki))
    client = Client(args.url, timeout=10)
    client.application_uri = APP_URI
    client.name = "Ironplant test client (asyncua)"
    policy = POLICIES[args.policy]
    mode = MODES[args.mode]
    if (policy is None) != (mode == ua.MessageSecurityMode.None_):
        usage_error("--policy None goes with --mode None, and only with it")
    try:
        if policy is not None:
            await client.set_security(policy, str(cert), str(key), mode=mode)
        if args.user is not None:
            client.set_user(args.user)
            client.set_password(args.password or "")
        await client.connect()
    except ua.UaStatusCodeError as e:
        raise ConnectError(str(e), status_name(e.code)) from e
    except Exception as e:
        raise ConnectError(f"{type(e).__name__}: {e}" if str(e) else type(e).__name__, None) from e
    return client


async def read_attrs(client, nodeids, attr):
    """One Read request for one attribute of many nodes (DataValues, never raising on Bad)."""
    out = []
    for start in range(0, len(nodeids), 500):
        params = ua.ReadParameters()
        for nid in nodeids[start:start + 500]:
            rv = ua.ReadValueId()
            rv.NodeId = nid
            rv.AttributeId = attr
            params.NodesToRead.append(rv)
        params.TimestampsToReturn = ua.TimestampsToReturn.Both
        out.extend(await client.uaclient.read(params))
    return out


async def cmd_browse(client, args):
    root = parse_node(args.node)
    found = []
    frontier = [root]
    for _ in range(args.depth):
        nxt = []
        for parent in frontier:
            refs = await client.get_node(parent).get_children_descriptions(
                refs=ua.ObjectIds.HierarchicalReferences
            )
            for r in refs:
                nid = ua.NodeId(r.NodeId.Identifier, r.NodeId.NamespaceIndex)
                found.append((nid, r, parent))
                nxt.append(nid)
        frontier = nxt
    typed = [i for i, (_, r, _) in enumerate(found)
             if r.NodeClass in (ua.NodeClass.Variable, ua.NodeClass.VariableType)]
    types = await read_attrs(client, [found[i][0] for i in typed], ua.AttributeIds.DataType)
    data_type = {i: (dv.Value.Value.to_string() if dv.Value is not None and dv.Value.Value is not None else None)
                 for i, dv in zip(typed, types)}
    nodes = [{
        "node_id": nid.to_string(),
        "browse_name": r.BrowseName.Name,
        "browse_ns": r.BrowseName.NamespaceIndex,
        "display_name": r.DisplayName.Text,
        "node_class": r.NodeClass.name,
        "data_type": data_type.get(i),
        "parent": parent.to_string(),
    } for i, (nid, r, parent) in enumerate(found)]
    emit({"nodes": nodes})


async def cmd_read(client, args):
    nodes = [parse_node(n) for n in args.nodes]
    dvs = await read_attrs(client, nodes, ua.AttributeIds.Value)
    emit({"values": [datavalue_json(n.to_string(), dv, True) for n, dv in zip(nodes, dvs)]})


class Notifications:
    def __init__(self, quiet):
        self.quiet = quiet
        self.count = 0
        self.status = None  # the last StatusChangeNotification's code (e.g. BadShutdown)

    def datachange_notification(self, node, val, data):
        self.count += 1
        if not self.quiet:
            emit(datavalue_json(node.nodeid.to_string(), data.monitored_item.Value, False))

    def status_change_notification(self, status):
        self.status = status.Status.value
        print(f"subscription status change: {status_name(self.status)}", file=sys.stderr, flush=True)


async def cmd_subscribe(client, args, quiet):
    nodes = [client.get_node(parse_node(n)) for n in args.nodes]
    handler = Notifications(quiet)
    sub = await client.create_subscription(args.interval, handler)
    sampling = args.sampling if args.sampling is not None else args.interval
    results = await sub.subscribe_data_change(nodes, queuesize=args.queue, sampling_interval=sampling)
    for n, r in zip(nodes, results):
        if isinstance(r, ua.StatusCode):
            print(f"monitored item {n.nodeid.to_string()} refused: {r.name}", file=sys.stderr, flush=True)
    # `count` measures from here, once the monitored items exist (before is set-up cost);
    # `subscribe` counts every line it printed.
    if quiet:
        handler.count = 0
    cpu0, t0 = time.process_time(), time.monotonic()
    deadline = t0 + args.seconds
    while time.monotonic() < deadline:
        await asyncio.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
        if client.state not in (UaClientState.CONNECTED, UaClientState.RECONNECTING):
            status = status_name(handler.status) if handler.status is not None else None
            raise ConnectionLost(f"connection lost after {handler.count} notifications", status)
    count = handler.count
    elapsed = time.monotonic() - t0
    cpu = time.process_time() - cpu0
    if quiet:
        emit({"done": True, "count": count, "cpu_seconds": round(cpu, 3), "elapsed": round(elapsed, 3)})
    else:
        emit({"done": True, "count": count})
    try:
        await sub.delete()
    except Exception:  # the subscription dies with the session anyway
        pass


async def cmd_write(client, args):
    vtype, conv = TYPES[args.type]
    try:
        value = conv(args.value)
    except ValueError:
        usage_error(f"{args.value!r} is not a {args.type}")
    params = ua.WriteParameters()
    wv = ua.WriteValue()
    wv.NodeId = parse_node(args.node)
    wv.AttributeId = ua.AttributeIds.Value
    # No timestamps and no status: many servers refuse to have them written (BadWriteNotSupported).
    wv.Value = ua.DataValue(ua.Variant(value, vtype), StatusCode=None)
    params.NodesToWrite.append(wv)
    (code,) = await client.uaclient.write(params)
    emit({"status": status_name(code.value), "status_code": code.value})


class ArgumentParser(argparse.ArgumentParser):
    """Usage errors exit with 64 (EX_USAGE): exit code 2 means a connection error here."""

    def error(self, message):
        self.print_usage(sys.stderr)
        self.exit(64, f"{self.prog}: error: {message}\n")


def usage_error(message):
    print(f"opcua_client.py: error: {message}", file=sys.stderr)
    sys.exit(64)


def parse_args(argv):
    ap = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("url")

    # The connection options go before the command (and are accepted after it too): parsed
    # without defaults at both places, then defaulted once.
    def connection_options(p):
        p.add_argument("--pki", default=argparse.SUPPRESS)
        p.add_argument("--policy", default=argparse.SUPPRESS, choices=list(POLICIES))
        p.add_argument("--mode", default=argparse.SUPPRESS, choices=list(MODES))
        p.add_argument("--user", default=argparse.SUPPRESS)
        p.add_argument("--password", default=argparse.SUPPRESS)

    common = ArgumentParser(add_help=False)
    connection_options(common)
    connection_options(ap)
    sub = ap.add_subparsers(dest="command", required=True)
    sub.add_parser("cert", parents=[common])
    b = sub.add_parser("browse", parents=[common])
    b.add_argument("node")
    b.add_argument("--depth", type=int, default=1)
    r = sub.add_parser("read", parents=[common])
    r.add_argument("nodes", nargs="+")
    for name in ("subscribe", "count"):
        s = sub.add_parser(name, parents=[common])
        s.add_argument("nodes", nargs="+")
        s.add_argument("--interval", type=float, default=100.0, help="publishing interval, ms")
        s.add_argument("--seconds", type=float, default=5.0)
        s.add_argument("--sampling", type=float, default=None, help="sampling interval, ms (default: --interval)")
        s.add_argument("--queue", type=int, default=1)
    w = sub.add_parser("write", parents=[common])
    w.add_argument("node")
    w.add_argument("value")
    w.add_argument("--type", required=True, choices=list(TYPES))
    args = ap.parse_args(argv)
    if not hasattr(args, "pki"):
        ap.error("--pki DIR is required")
    for name, default in (("policy", "Basic256Sha256"), ("mode", "SignAndEncrypt"),
                          ("user", None), ("password", None)):
        if not hasattr(args, name):
            setattr(args, name, default)
    return args


async def run(args):
    if args.command == "cert":
        cert, _, thumb = ensure_cert(Path(args.pki))
        emit({"certificate": str(cert), "thumbprint": thumb})
        return 0
    try:
        client = await connect(args)
    except ConnectError as e:
        emit({"error": e.args[0], "status": e.args[1]})
        return 2
    try:
        if args.command == "browse":
            await cmd_browse(client, args)
        elif args.command == "read":
            await cmd_read(client, args)
        elif args.command in ("subscribe", "count"):
            await cmd_subscribe(client, args, args.command == "count")
        elif args.command == "write":
            await cmd_write(client, args)
    except ua.UaStatusCodeError as e:
        emit({"error": str(e), "status": status_name(e.code)})
        return 2
    except ConnectionLost as e:
        emit({"error": e.args[0], "status": e.args[1]})
        return 2
    except (ConnectionError, asyncio.TimeoutError) as e:
        emit({"error": f"{type(e).__name__}: {e}", "status": None})
        return 2
    finally:
        try:
            await asyncio.wait_for(client.disconnect(), 5)
        except Exception:  # a broken connection has nothing left to close
            pass
    return 0


def main():
    args = parse_args(sys.argv[1:])
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
    sys.exit(asyncio.run(run(args)))


if __name__ == "__main__":
    main()
