"""A third-party OPC UA server (asyncua) for the interop tests of Ironplant's OPC UA client.

Usage: opcua_server.py DIR [--policies none|secure] [--count N]
  DIR  holds the server's certificate (server.der) and key (server.pem), written here at the
       first start (self-signed by asyncua, SAN = [URI urn:ironplant-test:asyncua, DNS localhost]).

The server listens on opc.tcp://localhost:<free port>/ and prints one JSON line
{"url": ..., "thumbprint": ..., "namespace": ...} when it serves. Users: "op" / "op-password"
(anonymous refused). The address space: Objects/Line1 with N Double variables v0..v{N-1}
(writable, EURange 0..100, EngineeringUnits), changing every 100 ms.
"""

import argparse
import asyncio
import hashlib
import json
import math
import os
import socket
import sys
from pathlib import Path

from asyncua import Server, ua
from asyncua.crypto.cert_gen import setup_self_signed_certificate
from asyncua.server.user_managers import UserManager
from asyncua.crypto.permission_rules import User, UserRole
from cryptography.x509.oid import ExtendedKeyUsageOID

APP_URI = "urn:ironplant-test:asyncua"
NAMESPACE = "urn:ironplant-test:plant"


class Users(UserManager):
    def get_user(self, iserver, username=None, password=None, certificate=None):
        if username == "op" and password == "op-password":
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
    args = ap.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    cert = Path(args.dir) / "server.der"
    key = Path(args.dir) / "server.pem"
    await setup_self_signed_certificate(
        key, cert, APP_URI, "localhost",
        [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
        {"countryName": "FR", "organizationName": "Ironplant tests", "commonName": "asyncua"},
    )
    server = Server(user_manager=Users())
    await server.init()
    await server.set_application_uri(APP_URI)
    port = free_port()
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
    server.set_identity_tokens([ua.UserNameIdentityToken])
    await server.load_certificate(cert)
    await server.load_private_key(key)
    idx = await server.register_namespace(NAMESPACE)
    line = await server.nodes.objects.add_object(idx, "Line1")
    variables = []
    for i in range(args.count):
        v = await line.add_variable(idx, f"v{i}", 0.0, varianttype=ua.VariantType.Double)
        await v.set_writable()
        await v.add_property(0, "EURange", ua.Range(Low=0.0, High=100.0))
        variables.append(v)
    with open(cert, "rb") as f:
        thumb = hashlib.sha1(f.read()).hexdigest().upper()
    async with server:
        print(json.dumps({"url": url, "thumbprint": thumb, "namespace": NAMESPACE}), flush=True)
        t = 0
        while True:
            t += 1
            for i, v in enumerate(variables):
                await v.write_value(50.0 + 40.0 * math.sin((t + i) / 10.0))
            await asyncio.sleep(0.1)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
