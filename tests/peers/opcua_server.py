"""A third-party OPC UA server (asyncua) for the interop tests of Ironplant's OPC UA client.

Usage: opcua_server.py DIR [--policies none|secure] [--count N] [--port P]
  DIR  holds the server's certificate (server.der) and key (server.pem), written here at the
       first start (self-signed by asyncua, SAN = [URI urn:ironplant-test:asyncua, DNS localhost])
       and reused by every later start on the same DIR (same thumbprint).
  --port P  listens on P (a test that restarts the server keeps its URL); default: a free port.

The server listens on opc.tcp://localhost:<port>/ and prints one JSON line
{"url": ..., "thumbprint": ..., "namespace": ...} when it serves. Users: "op" / "op-password"
(anonymous refused). The address space: Objects/Line1 with N Double variables v0..v{N-1}
(writable, properties EURange 0..100 and EngineeringUnits percent), changing every 100 ms; a
variable that a client has written keeps the written value from then on.
SIGTERM and SIGINT stop it with exit code 0.
"""

import argparse
import asyncio
import datetime
import hashlib
import json
import math
import os
import signal
import socket
import sys
from pathlib import Path

from asyncua import Server, ua
from asyncua.common.callback import CallbackType
from asyncua.crypto.cert_gen import setup_self_signed_certificate
from asyncua.server.user_managers import UserManager
from asyncua.crypto.permission_rules import User, UserRole
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

APP_URI = "urn:ironplant-test:asyncua"
NAMESPACE = "urn:ironplant-test:plant"
# UNECE Recommendation 20 code "P1" (percent) as an OPC UA UnitId (OPC 10000-8 5.6.3).
PERCENT = ua.EUInformation(
    NamespaceUri="http://www.opcfoundation.org/UA/units/un/cefact",
    UnitId=20529,
    DisplayName=ua.LocalizedText("%"),
    Description=ua.LocalizedText("percent"),
)


class Users(UserManager):
    """op/op-password, or the X.509 user certificate given with --user-cert (by SHA-1)."""

    def __init__(self, cert_sha1=None):
        super().__init__()
        self.cert_sha1 = cert_sha1

    def get_user(self, iserver, username=None, password=None, certificate=None):
        if username == "op" and password == "op-password":
            return User(role=UserRole.User)
        if certificate is not None and self.cert_sha1 is not None:
            der = certificate if isinstance(certificate, (bytes, bytearray)) else \
                certificate.public_bytes(serialization.Encoding.DER)
            if hashlib.sha1(der).hexdigest() == self.cert_sha1:
                return User(role=UserRole.User)
        return None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--policies", default="secure", choices=["none", "secure"])
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--port", type=int, default=0, help="listen port (default: a free one)")
    ap.add_argument("--user-cert", help="a DER user certificate accepted as an X.509 identity token")
    args = ap.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    cert = Path(args.dir) / "server.der"
    key = Path(args.dir) / "server.pem"
    await setup_self_signed_certificate(
        key, cert, APP_URI, "localhost",
        [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
        {"countryName": "FR", "organizationName": "Ironplant tests", "commonName": "asyncua"},
    )
    cert_sha1 = None
    if args.user_cert:
        with open(args.user_cert, "rb") as f:
            cert_sha1 = hashlib.sha1(f.read()).hexdigest()
    server = Server(user_manager=Users(cert_sha1))
    await server.init()
    await server.set_application_uri(APP_URI)
    port = args.port or free_port()
    url = f"opc.tcp://localhost:{port}/"
    server.set_endpoint(url)
    if args.policies == "none":
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    else:
        server.set_security_policy([
            ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
            ua.SecurityPolicyType.Basic256Sha256_Sign,
            ua.SecurityPolicyType.Aes128Sha256RsaOaep_SignAndEncrypt,
            ua.SecurityPolicyType.Aes256Sha256RsaPss_SignAndEncrypt,
        ])
    if args.user_cert:
        server.set_identity_tokens([ua.UserNameIdentityToken, ua.X509IdentityToken])
    else:
        server.set_identity_tokens([ua.UserNameIdentityToken])
    await server.load_certificate(cert)
    await server.load_private_key(key)
    idx = await server.register_namespace(NAMESPACE)
    line = await server.nodes.objects.add_object(idx, "Line1")
    variables = []
    for i in range(args.count):
        v = await line.add_variable(idx, f"v{i}", 0.0, varianttype=ua.VariantType.Double)
        await v.set_writable()
        variables.append(v)
    # After all the variables, so that v{i} is ns=2;i={i+2}. Properties of the standard
    # (browse names in namespace 0), node ids in ours.
    for v in variables:
        await v.add_property(ua.NodeId(0, idx), ua.QualifiedName("EURange", 0), ua.Range(Low=0.0, High=100.0))
        await v.add_property(ua.NodeId(0, idx), ua.QualifiedName("EngineeringUnits", 0), PERCENT)
    variables = [v.nodeid for v in variables]
    # A variable a client has written keeps the written value: the simulation stops driving it,
    # so a test can read back what it wrote.
    held = set()

    def on_write(event, _dispatcher):
        if not event.is_external:
            return
        for wv, code in zip(event.request_params.NodesToWrite, event.response_params):
            if wv.AttributeId == ua.AttributeIds.Value and code.is_good():
                held.add(wv.NodeId)

    server.subscribe_server_callback(CallbackType.PostWrite, on_write)
    with open(cert, "rb") as f:
        thumb = hashlib.sha1(f.read()).hexdigest().upper()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        print(json.dumps({"url": url, "thumbprint": thumb, "namespace": NAMESPACE}), flush=True)
        t = 0
        while not stop.is_set():
            t += 1
            now = datetime.datetime.now(datetime.timezone.utc)
            for i, nodeid in enumerate(variables):
                if nodeid in held:
                    continue
                value = ua.Variant(50.0 + 40.0 * math.sin((t + i) / 10.0), ua.VariantType.Double)
                # The direct write (no Node wrapper, no write service) keeps 1000 variables well
                # within the 100 ms tick.
                dv = ua.DataValue(value, SourceTimestamp=now, ServerTimestamp=now)
                await server.write_attribute_value(nodeid, dv)
            try:
                await asyncio.wait_for(stop.wait(), 0.1)
            except asyncio.TimeoutError:
                pass


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
