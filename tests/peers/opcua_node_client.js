// A third-party OPC UA client (node-opcua) for the interop tests and the benchmark of Ironplant's
// OPC UA server: the same command line and output as tests/peers/opcua_client.py (asyncua).
//
// Usage: NODE_PATH=target/opcua-node/node_modules node opcua_node_client.js \
//          URL --pki DIR [--policy P] [--mode M] [--user NAME --password PW] COMMAND ...
//   --policy  Basic256Sha256 (default) | Aes128_Sha256_RsaOaep | Aes256_Sha256_RsaPss | None
//   --mode    SignAndEncrypt (default) | Sign | None
//   anonymous when --user is absent.
//
// Commands (each prints JSON on stdout):
//   cert                         create (if missing) the client certificate DIR/client.der (and
//                                client.pem) with its key DIR/client_key.pem (RSA 2048, self-signed,
//                                SAN = [URI urn:ironplant-test:node-opcua-client, DNS localhost]) and
//                                print {"certificate": abs path, "thumbprint": SHA-1 hex upper}.
//   browse NODE [--depth N]      {"nodes": [{"node_id", "browse_name", "browse_ns", "display_name",
//                                "node_class", "data_type", "parent"}]}: the nodes reached forward
//                                through hierarchical references from NODE (not NODE itself), depth 1.
//   read NODE...                 {"values": [{"node_id", "value", "status", "status_code",
//                                "source_timestamp", "server_timestamp"}]}
//   subscribe NODE... [--interval MS] [--seconds S] [--sampling MS] [--queue N]
//                                one line per notification {"node_id", "value", "status",
//                                "status_code", "source_timestamp"}, then {"done": true, "count": N}
//   count NODE... [--interval MS] [--seconds S] [--sampling MS] [--queue N]
//                                {"done": true, "count": N, "cpu_seconds": user+sys, "elapsed": s}
//   write NODE VALUE --type T    {"status": name, "status_code": int}; T = Double, Float, Int16,
//                                Int32, Int64, UInt16, UInt32, Boolean or String
//
// A connection, session or activation error prints {"error": message, "status": StatusCode name
// or null} and exits with code 2. The client certificate is created on first use when missing.
// The server certificate is accepted when it is merely unknown to node-opcua (untrusted, issuer
// not sent, revocation unknown): Ironplant's server certificate comes from Ironplant's own CA,
// and these tests are about Ironplant's checks, not node-opcua's.
"use strict";

// node-opcua writes its warnings with console.log: keep stdout for our JSON lines only.
const writeOut = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
console.log = (...args) => console.error(...args);

const crypto = require("crypto");
const fs = require("fs");
const path = require("path");

// Under Node 20, loading node-opcua starts a probe of RSA PKCS#1 v1.5 support that generates a
// 4096-bit RSA key on a background thread (about a second of CPU). `count` waits for the key
// generations started so far, so that the CPU it reports is the client's own work.
const keyGenerations = [];
{
  const subtle = crypto.webcrypto.subtle;
  const generateKey = subtle.generateKey.bind(subtle);
  subtle.generateKey = (...args) => {
    const p = generateKey(...args);
    keyGenerations.push(p.catch(() => undefined));
    return p;
  };
}
const opcua = require("node-opcua");
// @peculiar/x509 comes with node-opcua-crypto (which also loads the reflect-metadata it needs).
const x509 = require(require.resolve("@peculiar/x509", {
  paths: [path.dirname(require.resolve("node-opcua-crypto"))],
}));

const APP_URI = "urn:ironplant-test:node-opcua-client";
const { StatusCodes, DataType, AttributeIds, MessageSecurityMode, SecurityPolicy } = opcua;
const POLICIES = {
  Basic256Sha256: SecurityPolicy.Basic256Sha256,
  Aes128_Sha256_RsaOaep: SecurityPolicy.Aes128_Sha256_RsaOaep,
  Aes256_Sha256_RsaPss: SecurityPolicy.Aes256_Sha256_RsaPss,
  None: SecurityPolicy.None,
};
const MODES = {
  SignAndEncrypt: MessageSecurityMode.SignAndEncrypt,
  Sign: MessageSecurityMode.Sign,
  None: MessageSecurityMode.None,
};
const TYPES = ["Double", "Float", "Int16", "Int32", "Int64", "UInt16", "UInt32", "Boolean", "String"];
const USAGE =
  "usage: node opcua_node_client.js URL --pki DIR [--policy P] [--mode M] [--user NAME --password PW] " +
  "cert | browse NODE [--depth N] | read NODE... | subscribe NODE... [--interval MS] [--seconds S] " +
  "[--sampling MS] [--queue N] | count NODE... [same] | write NODE VALUE --type T";

/** A failure that ends the run with {"error", "status"} and exit code 2. */
class Failure extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

function usage(msg) {
  console.error(`${msg}\n${USAGE}`);
  process.exit(64);
}

function parseArgs(argv) {
  const a = {
    url: null, pki: null, policy: "Basic256Sha256", mode: "SignAndEncrypt", user: null, password: null,
    command: null, nodes: [], depth: 1, interval: 100, seconds: 5, sampling: null, queue: 1, type: null,
  };
  const positional = [];
  const numeric = { "--depth": "depth", "--interval": "interval", "--seconds": "seconds", "--sampling": "sampling", "--queue": "queue" };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) usage(`${arg} needs a value`);
      return argv[++i];
    };
    if (arg === "--pki") a.pki = value();
    else if (arg === "--policy") a.policy = value();
    else if (arg === "--mode") a.mode = value();
    else if (arg === "--user") a.user = value();
    else if (arg === "--password") a.password = value();
    else if (arg === "--type") a.type = value();
    else if (numeric[arg]) {
      const n = Number(value());
      if (!Number.isFinite(n)) usage(`${arg} needs a number`);
      a[numeric[arg]] = n;
    } else if (arg.startsWith("--")) usage(`unknown option ${arg}`);
    else positional.push(arg);
  }
  [a.url, a.command, ...a.nodes] = positional;
  if (!a.url || !a.command) usage("URL and COMMAND are required");
  if (!a.pki) usage("--pki DIR is required");
  if (!(a.policy in POLICIES)) usage(`unknown --policy ${a.policy}`);
  if (!(a.mode in MODES)) usage(`unknown --mode ${a.mode}`);
  if ((a.policy === "None") !== (a.mode === "None")) usage("--policy None goes with --mode None, and only with it");
  const arity = { cert: [0, 0], browse: [1, 1], read: [1, Infinity], subscribe: [1, Infinity], count: [1, Infinity], write: [2, 2] };
  if (!arity[a.command]) usage(`unknown command ${a.command}`);
  const [min, max] = arity[a.command];
  if (a.nodes.length < min || a.nodes.length > max) usage(`wrong number of arguments for ${a.command}`);
  if (a.command === "write") {
    a.value = a.nodes.pop();
    if (!TYPES.includes(a.type)) usage(`write needs --type ${TYPES.join("|")}`);
  }
  return a;
}

/** The client's certificate and key, created once per DIR and reused after. */
async function ensureCertificate(pki) {
  fs.mkdirSync(pki, { recursive: true });
  const certDer = path.resolve(pki, "client.der");
  const certPem = path.resolve(pki, "client.pem");
  const keyPem = path.resolve(pki, "client_key.pem");
  if (![certDer, certPem, keyPem].every((f) => fs.existsSync(f))) {
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
      name: "CN=ironplant-test node-opcua client, O=Ironplant tests",
      notBefore: new Date(now - 5 * 60e3),
      notAfter: new Date(now + 365 * 86400e3),
      signingAlgorithm: alg,
      keys,
      extensions: [
        // OPC UA applications read the first URI of the SAN as the ApplicationUri.
        new x509.SubjectAlternativeNameExtension([
          { type: "url", value: APP_URI },
          { type: "dns", value: "localhost" },
        ]),
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(
          x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.nonRepudiation |
            x509.KeyUsageFlags.keyEncipherment | x509.KeyUsageFlags.dataEncipherment,
          true,
        ),
        new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.clientAuth]),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
        await x509.AuthorityKeyIdentifierExtension.create(keys.publicKey),
      ],
    });
    const pkcs8 = Buffer.from(await webcrypto.subtle.exportKey("pkcs8", keys.privateKey));
    const key = crypto.createPrivateKey({ key: pkcs8, format: "der", type: "pkcs8" });
    fs.writeFileSync(keyPem, key.export({ format: "pem", type: "pkcs8" }), { mode: 0o600 });
    fs.writeFileSync(certDer, Buffer.from(cert.rawData));
    fs.writeFileSync(certPem, cert.toString("pem") + "\n");
  }
  const thumbprint = crypto.createHash("sha1").update(fs.readFileSync(certDer)).digest("hex").toUpperCase();
  return { certDer, certPem, keyPem, thumbprint };
}

// Verdicts that only say node-opcua does not know the certificate or its issuer.
const UNKNOWN_ONLY = new Set([
  StatusCodes.BadCertificateUntrusted.value,
  StatusCodes.BadCertificateChainIncomplete.value,
  StatusCodes.BadCertificateRevocationUnknown.value,
  StatusCodes.BadCertificateIssuerRevocationUnknown.value,
]);

/** node-opcua's certificate manager, accepting certificates it merely does not know. */
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

const STATUS_NAMES = new Map();
for (const [name, code] of Object.entries(StatusCodes)) {
  if (code && typeof code.value === "number" && !STATUS_NAMES.has(code.value)) STATUS_NAMES.set(code.value, name);
}

/** The name of a status code (severity and sub-code; the info bits are ignored). */
function statusName(code) {
  const masked = (code & 0xffff0000) >>> 0;
  if (STATUS_NAMES.has(masked)) return STATUS_NAMES.get(masked);
  return masked & 0x80000000 ? "Bad" : masked & 0x40000000 ? "Uncertain" : "Good";
}

function statusOf(err) {
  const code = err?.response?.responseHeader?.serviceResult ?? err?.statusCode;
  if (code && typeof code.value === "number" && code.value !== 0) return statusName(code.value);
  const m = /\b(Bad[A-Z][A-Za-z]+)/.exec(String(err?.message || ""));
  return m ? m[1] : null;
}

function iso(date) {
  // DateTime 0 (1601-01-01) is OPC UA's "no timestamp".
  if (!date || !(date instanceof Date) || Number.isNaN(date.getTime()) || date.getUTCFullYear() <= 1601) return null;
  return date.toISOString();
}

function int64(v) {
  if (Array.isArray(v) && v.length === 2) {
    const n = (BigInt(v[0] >>> 0) << 32n) | BigInt(v[1] >>> 0);
    return Number(BigInt.asIntN(64, n));
  }
  return v;
}

/** A JSON value for an OPC UA value (numbers, text, arrays as they are; structures by field). */
function toJson(v, dataType) {
  if (v === null || v === undefined) return null;
  if (dataType === DataType.Int64) return int64(v);
  if (dataType === DataType.UInt64) {
    return Array.isArray(v) ? Number((BigInt(v[0] >>> 0) << 32n) | BigInt(v[1] >>> 0)) : v;
  }
  if (typeof v === "number") return Number.isFinite(v) ? v : String(v);
  if (typeof v === "boolean" || typeof v === "string") return v;
  if (typeof v === "bigint") return Number(v);
  if (v instanceof Date) return iso(v);
  if (Buffer.isBuffer(v)) return v.toString("base64");
  if (Array.isArray(v) || ArrayBuffer.isView(v)) return Array.from(v, (x) => toJson(x, dataType));
  if (v instanceof opcua.LocalizedText) return v.text ?? null;
  if (v instanceof opcua.QualifiedName) return `${v.namespaceIndex}:${v.name}`;
  if (v instanceof opcua.NodeId) return nodeIdString(v);
  if (v.schema && Array.isArray(v.schema.fields)) {
    // a structure (Range, EUInformation...): its fields, named as in the specification
    const out = {};
    for (const f of v.schema.fields) out[f.name.charAt(0).toUpperCase() + f.name.slice(1)] = toJson(v[f.name]);
    return out;
  }
  return String(v);
}

function dataValueJson(nodeId, dv, withServerTimestamp) {
  const code = dv.statusCode ? dv.statusCode.value >>> 0 : 0;
  const out = {
    node_id: nodeId,
    value: dv.value ? toJson(dv.value.value, dv.value.dataType) : null,
    status: statusName(code),
    status_code: code,
    source_timestamp: iso(dv.sourceTimestamp),
  };
  if (withServerTimestamp) out.server_timestamp = iso(dv.serverTimestamp);
  return out;
}

/** A NodeId in the standard string form ("i=85", "ns=2;s=Line1/v0": no "ns=0;"). */
function nodeIdString(nodeId) {
  const s = nodeId.toString();
  return s.startsWith("ns=0;") ? s.slice(5) : s;
}

function parseNode(s) {
  try {
    return opcua.resolveNodeId(s);
  } catch (e) {
    usage(`bad node id ${JSON.stringify(s)}: ${e.message}`);
  }
}

async function connect(args) {
  const { certPem, keyPem } = await ensureCertificate(args.pki);
  const clientCertificateManager = new AcceptingCertificateManager({
    rootFolder: path.resolve(args.pki, "pki"),
    automaticallyAcceptUnknownCertificate: true,
  });
  const client = opcua.OPCUAClient.create({
    applicationName: "Ironplant test client (node-opcua)",
    applicationUri: APP_URI,
    securityMode: MODES[args.mode],
    securityPolicy: POLICIES[args.policy],
    certificateFile: certPem,
    privateKeyFile: keyPem,
    clientCertificateManager,
    endpointMustExist: false,
    keepSessionAlive: true,
    requestedSessionTimeout: 60000,
    connectionStrategy: { maxRetry: 0, initialDelay: 100, maxDelay: 200 },
  });
  let session;
  try {
    await clientCertificateManager.initialize();
    await client.connect(args.url);
    const identity = args.user !== null
      ? { type: opcua.UserTokenType.UserName, userName: args.user, password: args.password ?? "" }
      : { type: opcua.UserTokenType.Anonymous };
    session = await client.createSession(identity);
  } catch (err) {
    try {
      await client.disconnect();
    } catch {
      // nothing left to close
    }
    throw new Failure(err.message || String(err), statusOf(err));
  }
  return { client, session };
}

async function browse(session, args) {
  const found = [];
  let frontier = [parseNode(args.nodes[0])];
  for (let level = 0; level < args.depth && frontier.length > 0; level++) {
    const next = [];
    const results = await session.browse(frontier.map((nodeId) => ({
      nodeId,
      referenceTypeId: "HierarchicalReferences",
      browseDirection: opcua.BrowseDirection.Forward,
      includeSubtypes: true,
      nodeClassMask: 0,
      resultMask: 0x3f,
    })));
    for (let i = 0; i < frontier.length; i++) {
      let result = results[i];
      const refs = [...(result.references || [])];
      while (result.continuationPoint && result.continuationPoint.length > 0) {
        result = await session.browseNext(result.continuationPoint, false);
        refs.push(...(result.references || []));
      }
      if (result.statusCode.isNotGood()) {
        throw new Failure(`browse ${nodeIdString(frontier[i])}: ${result.statusCode.toString()}`, statusName(result.statusCode.value));
      }
      for (const r of refs) {
        const nodeId = new opcua.NodeId(r.nodeId.identifierType, r.nodeId.value, r.nodeId.namespace);
        found.push({ nodeId, ref: r, parent: frontier[i] });
        next.push(nodeId);
      }
    }
    frontier = next;
  }
  const typed = found.filter((f) => f.ref.nodeClass === opcua.NodeClass.Variable || f.ref.nodeClass === opcua.NodeClass.VariableType);
  const types = typed.length
    ? await session.read(typed.map((f) => ({ nodeId: f.nodeId, attributeId: AttributeIds.DataType })))
    : [];
  typed.forEach((f, i) => {
    const v = types[i].value?.value;
    f.dataType = v ? nodeIdString(v) : null;
  });
  writeOut({
    nodes: found.map((f) => ({
      node_id: nodeIdString(f.nodeId),
      browse_name: f.ref.browseName.name,
      browse_ns: f.ref.browseName.namespaceIndex,
      display_name: f.ref.displayName.text ?? null,
      node_class: opcua.NodeClass[f.ref.nodeClass],
      data_type: f.dataType ?? null,
      parent: nodeIdString(f.parent),
    })),
  });
}

async function read(session, args) {
  const nodes = args.nodes.map(parseNode);
  const dvs = await session.read(nodes.map((nodeId) => ({ nodeId, attributeId: AttributeIds.Value })), 0);
  writeOut({ values: nodes.map((n, i) => dataValueJson(nodeIdString(n), dvs[i], true)) });
}

async function subscribe(client, session, args, quiet) {
  const nodes = args.nodes.map(parseNode);
  let count = 0;
  let lastStatus = null;
  let lost = null;
  client.on("connection_lost", () => { lost = lost || "connection lost"; });
  client.on("close", () => { lost = lost || "connection closed"; });
  const subscription = await session.createSubscription2({
    requestedPublishingInterval: args.interval,
    requestedLifetimeCount: 600,
    requestedMaxKeepAliveCount: 10,
    maxNotificationsPerPublish: 0,
    publishingEnabled: true,
    priority: 10,
  });
  subscription.on("status_changed", (status) => {
    lastStatus = status;
    console.error(`subscription status change: ${status.toString()}`);
  });
  subscription.on("terminated", () => { lost = lost || "subscription terminated"; });
  const group = await opcua.ClientMonitoredItemGroup.create(
    subscription,
    nodes.map((nodeId) => ({ nodeId, attributeId: AttributeIds.Value })),
    { samplingInterval: args.sampling ?? args.interval, queueSize: args.queue, discardOldest: true },
    opcua.TimestampsToReturn.Both,
  );
  group.on("changed", (item, dataValue, index) => {
    count += 1;
    if (!quiet) writeOut(dataValueJson(nodeIdString(nodes[index]), dataValue, false));
  });
  // `count` measures from here, once the monitored items exist (before is set-up cost);
  // `subscribe` counts every line it printed.
  if (quiet) {
    await Promise.all(keyGenerations);
    count = 0;
  }
  const cpu0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  const deadline = Date.now() + args.seconds * 1000;
  while (Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, Math.min(100, Math.max(0, deadline - Date.now()))));
    if (lost) {
      throw new Failure(`${lost} after ${count} notifications`, lastStatus ? statusName(lastStatus.value) : null);
    }
  }
  const elapsed = Number(process.hrtime.bigint() - t0) / 1e9;
  const cpu = process.cpuUsage(cpu0);
  if (quiet) {
    writeOut({
      done: true,
      count,
      cpu_seconds: Math.round((cpu.user + cpu.system) / 1e3) / 1e3,
      elapsed: Math.round(elapsed * 1e3) / 1e3,
    });
  } else {
    writeOut({ done: true, count });
  }
  try {
    await subscription.terminate();
  } catch {
    // the subscription goes with the session anyway
  }
}

function convert(type, text) {
  switch (type) {
    case "Double":
    case "Float": {
      const n = Number(text);
      if (text.trim() === "" || Number.isNaN(n)) usage(`${text} is not a ${type}`);
      return n;
    }
    case "Int16":
    case "Int32":
    case "UInt16":
    case "UInt32":
    case "Int64": {
      if (!/^[-+]?\d+$/.test(text.trim())) usage(`${text} is not a ${type}`);
      if (type !== "Int64") return Number(text);
      const big = BigInt.asUintN(64, BigInt(text.trim()));
      return [Number(big >> 32n), Number(big & 0xffffffffn)];
    }
    case "Boolean":
      return ["true", "1", "yes"].includes(text.trim().toLowerCase());
    default:
      return text;
  }
}

async function write(session, args) {
  const value = convert(args.type, args.value);
  // No timestamps and no status: many servers refuse to have them written (BadWriteNotSupported).
  const status = await session.write({
    nodeId: parseNode(args.nodes[0]),
    attributeId: AttributeIds.Value,
    value: { value: { dataType: DataType[args.type], arrayType: opcua.VariantArrayType.Scalar, value } },
  });
  writeOut({ status: statusName(status.value), status_code: status.value >>> 0 });
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  if (args.command === "cert") {
    const { certDer, thumbprint } = await ensureCertificate(args.pki);
    writeOut({ certificate: certDer, thumbprint });
    return 0;
  }
  let conn;
  try {
    conn = await connect(args);
  } catch (err) {
    writeOut({ error: err.message, status: err instanceof Failure ? err.status : statusOf(err) });
    return 2;
  }
  const { client, session } = conn;
  let code = 0;
  try {
    if (args.command === "browse") await browse(session, args);
    else if (args.command === "read") await read(session, args);
    else if (args.command === "subscribe" || args.command === "count") {
      await subscribe(client, session, args, args.command === "count");
    } else if (args.command === "write") await write(session, args);
  } catch (err) {
    writeOut({ error: err.message, status: err instanceof Failure ? err.status : statusOf(err) });
    code = 2;
  }
  const close = async () => {
    try {
      await session.close();
    } catch {
      // a broken session has nothing left to close
    }
    await client.disconnect();
  };
  await Promise.race([close().catch(() => {}), new Promise((r) => setTimeout(r, 3000))]);
  return code;
}

// process.exit() drops what a pipe has not taken yet: wait until stdout has flushed.
const flushed = () => new Promise((resolve) => process.stdout.write("", resolve));

main().then(
  async (code) => {
    await flushed();
    process.exit(code);
  },
  (err) => {
    console.error(err);
    process.exit(1);
  },
);
