// A third-party OPC UA server (node-opcua) for the interop tests of Ironplant's OPC UA client:
// the same plant as tests/peers/opcua_server.py (asyncua), from another implementation.
//
// Usage: NODE_PATH=target/opcua-node/node_modules \
//          node opcua_node_server.js DIR [--count N] [--port P] [--policies secure|none]
//   DIR        holds the server's certificate (server.der, server.pem) and key (server_key.pem),
//              written at the first start and reused by every later start on the same DIR (same
//              thumbprint), and node-opcua's own PKI folders (DIR/pki).
//   --count N  variables v0..v{N-1} (default 100)
//   --port P   listen on P (a test that restarts the server keeps its URL); default: a free port
//   --policies secure (default): SignAndEncrypt with Basic256Sha256, Aes128_Sha256_RsaOaep and
//              Aes256_Sha256_RsaPss, Sign with Basic256Sha256; none: SecurityPolicy None only.
//
// It prints one JSON line {"url", "thumbprint", "namespace"} when it serves, on
// opc.tcp://localhost:PORT/. Users: "op" / "op-password"; anonymous refused. Client certificates
// that node-opcua merely does not know (self-signed, or issued by a CA it has not seen) are
// accepted: the tests exercise Ironplant's trust list, not node-opcua's.
// Address space: Objects/Line1 with N AnalogItem Doubles v0..v{N-1} (writable, EURange 0..100,
// EngineeringUnits percent), changing every 100 ms. The namespace is the server's own (its URI is
// the application URI), so it is ns=1: Line1 is ns=1;s=Line1, v{i} is ns=1;s=Line1/v{i};
// a variable that a client has written keeps the written value from then on.
// SIGTERM and SIGINT shut it down with exit code 0.
//
// The certificate is made here rather than by node-opcua: node-opcua-crypto writes the SAN as
// [DNS..., URI], and Ironplant's client (async-opcua) takes the application URI from the SAN's
// first entry, so the URI must come first.
"use strict";

// node-opcua writes its warnings with console.log: keep stdout for our JSON lines only.
const writeOut = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
console.log = (...args) => console.error(...args);

const crypto = require("crypto");
const fs = require("fs");
const net = require("net");
const path = require("path");
const opcua = require("node-opcua");
// @peculiar/x509 comes with node-opcua-crypto (which also loads the reflect-metadata it needs).
const x509 = require(require.resolve("@peculiar/x509", {
  paths: [path.dirname(require.resolve("node-opcua-crypto"))],
}));

const APP_URI = "urn:ironplant-test:node-opcua";
const NAMESPACE = "urn:ironplant-test:node-opcua";
const { StatusCodes } = opcua;

// Verdicts that only say node-opcua does not know the certificate or its issuer.
const UNKNOWN_ONLY = new Set([
  StatusCodes.BadCertificateUntrusted.value,
  StatusCodes.BadCertificateChainIncomplete.value,
  StatusCodes.BadCertificateRevocationUnknown.value,
  StatusCodes.BadCertificateIssuerRevocationUnknown.value,
]);

/**
 * node-opcua's certificate manager, accepting client certificates it merely does not know:
 * automaticallyAcceptUnknownCertificate alone still refuses a certificate issued by a CA that the
 * client does not send along (BadCertificateChainIncomplete), which is what Ironplant's client
 * presents (a leaf from Ironplant's own CA).
 */
class AcceptingCertificateManager extends opcua.OPCUACertificateManager {
  checkCertificate(chain, callback) {
    const verdict = (async () => {
      const status = await super.checkCertificate(chain);
      return UNKNOWN_ONLY.has(status.value) ? StatusCodes.Good : status;
    })();
    if (typeof callback === "function") {
      verdict.then((s) => callback(null, s), (err) => callback(err));
      return undefined;
    }
    return verdict;
  }
}

function parseArgs(argv) {
  const args = { dir: null, count: 100, port: 0, policies: "secure" };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) usage(`${a} needs a value`);
      return argv[++i];
    };
    if (a === "--count") args.count = Number(value());
    else if (a === "--port") args.port = Number(value());
    else if (a === "--policies") args.policies = value();
    else if (a.startsWith("--")) usage(`unknown option ${a}`);
    else if (args.dir === null) args.dir = a;
    else usage(`unexpected argument ${a}`);
  }
  if (args.dir === null) usage("DIR is required");
  if (!Number.isInteger(args.count) || args.count < 0) usage("--count must be a whole number");
  if (!Number.isInteger(args.port) || args.port < 0 || args.port > 65535) usage("--port must be a port number");
  if (!["secure", "none"].includes(args.policies)) usage("--policies is secure or none");
  return args;
}

function usage(msg) {
  console.error(`${msg}\nusage: node opcua_node_server.js DIR [--count N] [--port P] [--policies secure|none]`);
  process.exit(64);
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** A self-signed application certificate (RSA 2048, SHA-256), SAN = [URI uri, DNS localhost]. */
async function makeCertificate(uri, commonName, certDer, certPem, keyPem) {
  const { webcrypto } = crypto;
  x509.cryptoProvider.set(webcrypto);
  const alg = {
    name: "RSASSA-PKCS1-v1_5",
    hash: "SHA-256",
    publicExponent: new Uint8Array([1, 0, 1]),
    modulusLength: 2048,
  };
  const keys = await webcrypto.subtle.generateKey(alg, true, ["sign", "verify"]);
  const now = Date.now();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    name: `CN=${commonName}, O=Ironplant tests`,
    notBefore: new Date(now - 5 * 60e3),
    notAfter: new Date(now + 365 * 86400e3),
    signingAlgorithm: alg,
    keys,
    extensions: [
      new x509.SubjectAlternativeNameExtension([
        { type: "url", value: uri },
        { type: "dns", value: "localhost" },
      ]),
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(
        x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.nonRepudiation |
          x509.KeyUsageFlags.keyEncipherment | x509.KeyUsageFlags.dataEncipherment,
        true,
      ),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      // Self-signed: the authority key is our own (node-opcua takes a certificate without this
      // for a CA-issued one and warns that its chain is incomplete).
      await x509.AuthorityKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  const pkcs8 = Buffer.from(await webcrypto.subtle.exportKey("pkcs8", keys.privateKey));
  const key = crypto.createPrivateKey({ key: pkcs8, format: "der", type: "pkcs8" });
  fs.writeFileSync(keyPem, key.export({ format: "pem", type: "pkcs8" }), { mode: 0o600 });
  fs.writeFileSync(certDer, Buffer.from(cert.rawData));
  fs.writeFileSync(certPem, cert.toString("pem") + "\n");
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const dir = path.resolve(args.dir);
  fs.mkdirSync(dir, { recursive: true });
  const certDer = path.join(dir, "server.der");
  const certPem = path.join(dir, "server.pem");
  const keyPem = path.join(dir, "server_key.pem");
  if (![certDer, certPem, keyPem].every((f) => fs.existsSync(f))) {
    await makeCertificate(APP_URI, "node-opcua", certDer, certPem, keyPem);
  }
  const thumbprint = crypto.createHash("sha1").update(fs.readFileSync(certDer)).digest("hex").toUpperCase();

  const serverCertificateManager = new AcceptingCertificateManager({
    rootFolder: path.join(dir, "pki"),
    automaticallyAcceptUnknownCertificate: true,
  });
  await serverCertificateManager.initialize();

  const port = args.port || (await freePort());
  const { SecurityPolicy, MessageSecurityMode } = opcua;
  const secure = args.policies === "secure";
  const server = new opcua.OPCUAServer({
    port,
    hostname: "localhost",
    serverInfo: {
      applicationUri: APP_URI,
      productUri: "urn:ironplant-test:node-opcua:product",
      applicationName: { text: "Ironplant test server (node-opcua)" },
    },
    buildInfo: { productName: "Ironplant test server (node-opcua)" },
    certificateFile: certPem,
    privateKeyFile: keyPem,
    serverCertificateManager,
    securityModes: secure ? [MessageSecurityMode.SignAndEncrypt] : [MessageSecurityMode.None],
    // (with `none`, Basic256Sha256 is listed only to encrypt the password of the user token:
    // node-opcua offers no user name token on a None endpoint otherwise)
    securityPolicies: secure
      ? [SecurityPolicy.Basic256Sha256, SecurityPolicy.Aes128_Sha256_RsaOaep, SecurityPolicy.Aes256_Sha256_RsaPss]
      : [SecurityPolicy.None, SecurityPolicy.Basic256Sha256],
    allowAnonymous: false,
    userManager: {
      isValidUser: (user, password) => user === "op" && password === "op-password",
    },
  });
  await server.initialize();
  if (secure) {
    // Sign without encryption with Basic256Sha256 only (node-opcua would otherwise offer every
    // mode with every policy).
    server.endpoints[0].addEndpointDescription(MessageSecurityMode.Sign, SecurityPolicy.Basic256Sha256, {
      hostname: "localhost",
      securityPolicies: [SecurityPolicy.Basic256Sha256],
      userTokenTypes: [opcua.UserTokenType.UserName],
      resourcePath: "",
    });
  }
  // User name tokens only (node-opcua also offers X509 user tokens by default).
  for (const endpoint of server.endpoints[0].endpointDescriptions()) {
    endpoint.userIdentityTokens = (endpoint.userIdentityTokens || []).filter(
      (t) => t.tokenType === opcua.UserTokenType.UserName,
    );
  }

  const addressSpace = server.engine.addressSpace;
  const ns = addressSpace.registerNamespace(NAMESPACE);
  const line = ns.addObject({
    organizedBy: addressSpace.rootFolder.objects,
    browseName: "Line1",
    nodeId: "s=Line1",
  });
  const held = new Set();
  const variables = [];
  for (let i = 0; i < args.count; i++) {
    const v = ns.addAnalogDataItem({
      componentOf: line,
      browseName: `v${i}`,
      nodeId: `s=Line1/v${i}`,
      dataType: "Double",
      accessLevel: "CurrentRead | CurrentWrite",
      userAccessLevel: "CurrentRead | CurrentWrite",
      engineeringUnitsRange: { low: 0, high: 100 },
      engineeringUnits: opcua.standardUnits.percent,
      value: { dataType: opcua.DataType.Double, value: 0 },
    });
    // A client's write goes through the variable's setter: remember it, so the simulation stops
    // driving that variable.
    const set = v._timestamped_set_func;
    v._timestamped_set_func = (dataValue, callback) => {
      held.add(v);
      set.call(v, dataValue, callback);
    };
    variables.push(v);
  }

  await server.start();
  writeOut({ url: `opc.tcp://localhost:${port}/`, thumbprint, namespace: NAMESPACE });

  let t = 0;
  const timer = setInterval(() => {
    t += 1;
    const now = new Date();
    variables.forEach((v, i) => {
      if (held.has(v)) return;
      v.setValueFromSource(
        { dataType: opcua.DataType.Double, value: 50 + 40 * Math.sin((t + i) / 10) },
        StatusCodes.Good,
        now,
      );
    });
  }, 100);

  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    clearInterval(timer);
    try {
      await server.shutdown(100);
    } finally {
      process.exit(0);
    }
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
