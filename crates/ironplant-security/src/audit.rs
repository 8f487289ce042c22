//! The audit log: append-only JSON lines, each carrying the SHA-256 of the line before it and
//! its own ed25519 signature (`rsig`, the last field), anchored further by a checkpoint record
//! every `checkpoint_every` records and a signed head file naming the newest record.
//! [`verify`] names the first record that was edited, removed, inserted, moved or forged.
//!
//! Rollback and wipe (an older copy of the whole directory put back, or the log deleted) leave
//! a log that is consistent in itself; they are caught against a [`HeadStatement`] kept
//! elsewhere (`ironplant audit head`, published by the platform on `$SYS/ironplant/audit/head`
//! and appended to a witness file): [`verify_witnessed`] checks the log still holds every
//! witnessed head. A missing or empty log where one existed (head file, key or `users.json`
//! present) is an error, and [`AuditLog::open`] refuses to start a new log over it.
//!
//! Files under the audit directory: `audit.log` (0600), `head.json` (0600), `checkpoint.key`
//! (PKCS#8, 0600), `checkpoint.pub` (hex public key, 0644; keep a copy off the host and pass
//! it to [`verify_with_key`] to detect a replaced key), `audit.lock`.
//!
//! Invariants:
//! - A record is on disk (fdatasync) before [`AuditLog::record`] returns.
//! - Every record this version writes is signed; once the log has a signed record, every
//!   later record must be signed (older, unsigned records stay covered by the chain and the
//!   first signed record after them, which [`AuditLog::open`] writes).
//! - Appends from several processes are serialised by `audit.lock`; each writer re-reads the
//!   tail when the file grew behind its back, so the chain never forks.
//! - A line that was cut by a crash (no trailing newline) was never acknowledged and is
//!   removed by the next writer.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::Mutex;
use ring::rand::SystemRandom;
use ring::signature::{self, Ed25519KeyPair, KeyPair};
use serde::{Deserialize, Serialize};

use crate::clock::{unix_micros, Clock};
use crate::crypto::{hex, sha256, unhex, unhex32};
use crate::error::{Error, Result};
use crate::fsutil::{self, FileLock, PRIVATE, PUBLIC};

const CHECKPOINT_DOMAIN: &[u8] = b"ironplant-audit-checkpoint-v1\0";
const HEAD_DOMAIN: &[u8] = b"ironplant-audit-head-v1\0";
const RECORD_DOMAIN: &[u8] = b"ironplant-audit-record-v1\0";
const STATEMENT_DOMAIN: &[u8] = b"ironplant-audit-head-statement-v1\0";
/// The MQTT topic the platform publishes its [`HeadStatement`] on (retained).
pub const HEAD_TOPIC: &str = "$SYS/ironplant/audit/head";
/// Longest string kept in a record field (user names as typed, topics): bounded records, and
/// a password typed into the user-name field is not kept whole.
pub const MAX_FIELD: usize = 256;

/// What happened. Serialised flat into the record with a `kind` field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AuditEvent {
    Login {
        user: String,
        source: Option<String>,
        /// "password", "token:<id>", "certificate"; and the channel, e.g. "mqtt", "api".
        via: String,
    },
    LoginFailed {
        /// The user name as presented (truncated); it may name no account.
        user: String,
        source: Option<String>,
        via: String,
        /// "bad_credentials" or "locked".
        reason: String,
    },
    Lockout {
        /// "user:<name>" or "address:<ip>".
        subject: String,
        /// Unix seconds.
        until: u64,
    },
    UserCreated {
        user: String,
        role: String,
        actor: Option<String>,
    },
    UserChanged {
        user: String,
        change: String,
        actor: Option<String>,
    },
    UserDeleted {
        user: String,
        actor: Option<String>,
    },
    TokenCreated {
        id: String,
        user: String,
        role: String,
        expires: u64,
        actor: Option<String>,
    },
    TokenRevoked {
        id: String,
        actor: Option<String>,
    },
    EnrolmentTokenCreated {
        id: String,
        device: String,
        role: String,
        expires: u64,
        actor: Option<String>,
    },
    DeviceEnrolled {
        device: String,
        role: String,
        serial: String,
        fingerprint: String,
        actor: Option<String>,
    },
    DeviceRevoked {
        device: String,
        serial: String,
        actor: Option<String>,
    },
    ConfigChanged {
        actor: Option<String>,
        what: String,
    },
    Command {
        actor: Option<String>,
        target: String,
        value: String,
        outcome: String,
    },
    AclDenied {
        principal: Option<String>,
        client_id: String,
        source: Option<String>,
        /// "publish", "subscribe" or "connect".
        action: String,
        topic: String,
    },
    /// A signed payload refused: malformed, from an unknown or revoked signer, or a signature
    /// that does not verify (`ironplant_mqtt::signed`).
    SignatureRefused {
        /// The signer it claimed (`?` when the envelope did not say).
        signer: String,
        /// The topic (`http:<mapping>` over HTTP) it came on.
        topic: String,
        /// Who delivered it (`device:...`, `user:...`) and from where.
        principal: Option<String>,
        source: Option<String>,
        reason: String,
    },
    /// A new log was started where an earlier one had existed (its directory was removed).
    LogRestarted {
        reason: String,
    },
    /// Events that could not be queued (the writer fell behind) since the previous record.
    AuditDropped {
        count: u64,
    },
    Checkpoint {
        /// ed25519 over domain || seq || prev (hex).
        sig: String,
    },
}

impl AuditEvent {
    pub fn kind(&self) -> &'static str {
        match self {
            AuditEvent::Login { .. } => "login",
            AuditEvent::LoginFailed { .. } => "login_failed",
            AuditEvent::Lockout { .. } => "lockout",
            AuditEvent::UserCreated { .. } => "user_created",
            AuditEvent::UserChanged { .. } => "user_changed",
            AuditEvent::UserDeleted { .. } => "user_deleted",
            AuditEvent::TokenCreated { .. } => "token_created",
            AuditEvent::TokenRevoked { .. } => "token_revoked",
            AuditEvent::EnrolmentTokenCreated { .. } => "enrolment_token_created",
            AuditEvent::DeviceEnrolled { .. } => "device_enrolled",
            AuditEvent::DeviceRevoked { .. } => "device_revoked",
            AuditEvent::ConfigChanged { .. } => "config_changed",
            AuditEvent::Command { .. } => "command",
            AuditEvent::AclDenied { .. } => "acl_denied",
            AuditEvent::SignatureRefused { .. } => "signature_refused",
            AuditEvent::AuditDropped { .. } => "audit_dropped",
            AuditEvent::LogRestarted { .. } => "log_restarted",
            AuditEvent::Checkpoint { .. } => "checkpoint",
        }
    }
}

/// Cuts a field to [`MAX_FIELD`] bytes at a character boundary.
pub fn bounded(s: &str) -> String {
    if s.len() <= MAX_FIELD {
        return s.to_owned();
    }
    let mut end = MAX_FIELD;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// One line of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub seq: u64,
    /// µs since the Unix epoch.
    pub ts: i64,
    /// SHA-256 (hex) of the previous line (without its newline); zeros for the first.
    pub prev: String,
    #[serde(flatten)]
    pub event: AuditEvent,
    /// ed25519 (hex) over the record's line without this field; always the last field.
    /// `None` only in records written before per-record signatures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rsig: Option<String>,
}

/// A signed statement of the log's head, to be kept outside the data directory (a witness):
/// "at `ts` the log ended with record `seq`, whose line hashes to `hash`". One line of JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeadStatement {
    pub seq: u64,
    /// SHA-256 (hex) of record `seq`'s line.
    pub hash: String,
    /// When it was signed, µs since the Unix epoch.
    pub ts: i64,
    /// ed25519 (hex) over domain || seq || hash || ts, with the audit key.
    pub sig: String,
}

impl HeadStatement {
    /// The statement as one line of JSON (no newline).
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).expect("a struct of numbers and strings serialises")
    }
}

/// Parses witness text: one [`HeadStatement`] per line (blank lines skipped), as written by
/// the platform's witness file or `ironplant audit head`. Names the first bad line.
pub fn parse_witness(text: &str) -> std::result::Result<Vec<HeadStatement>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let st: HeadStatement = serde_json::from_str(line).map_err(|e| {
            format!(
                "line {}: not a head statement ({e}); expected one JSON object per line as printed by `ironplant audit head`",
                i + 1
            )
        })?;
        out.push(st);
    }
    Ok(out)
}

fn statement_message(seq: u64, hash: &[u8; 32], ts: i64) -> Vec<u8> {
    let mut m = STATEMENT_DOMAIN.to_vec();
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(hash);
    m.extend_from_slice(&ts.to_be_bytes());
    m
}

fn record_message(body: &[u8]) -> Vec<u8> {
    let mut m = RECORD_DOMAIN.to_vec();
    m.extend_from_slice(&sha256(body));
    m
}

/// Length of the `,"rsig":"<128 hex>"}` suffix that ends a signed line.
const RSIG_SUFFIX_LEN: usize = ",\"rsig\":\"".len() + 128 + "\"}".len();

/// The signed body of a line (the line without its `rsig` field) when the line ends with
/// exactly the `rsig` field `sig`.
fn signed_body(line: &[u8], sig: &str) -> Option<Vec<u8>> {
    let suffix = format!(",\"rsig\":\"{sig}\"}}");
    if sig.len() != 128 || !line.ends_with(suffix.as_bytes()) {
        return None;
    }
    let mut body = line[..line.len() - RSIG_SUFFIX_LEN].to_vec();
    body.push(b'}');
    Some(body)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Head {
    seq: u64,
    hash: String,
    sig: String,
}

/// Options of [`AuditLog::open`].
#[derive(Debug, Clone, Copy)]
pub struct AuditOptions {
    /// A signed checkpoint record after this many records.
    pub checkpoint_every: u64,
    /// Events [`AuditLog::submit`] may queue before it starts dropping (and counting).
    pub queue: usize,
}

impl Default for AuditOptions {
    fn default() -> Self {
        AuditOptions {
            checkpoint_every: 100,
            queue: 4096,
        }
    }
}

struct Writer {
    file: File,
    len: u64,
    next_seq: u64,
    last_hash: [u8; 32],
    /// Whether the newest record carries a record signature.
    tail_signed: bool,
    since_checkpoint: u64,
}

struct Inner {
    log_path: PathBuf,
    head_path: PathBuf,
    lock_path: PathBuf,
    key: Ed25519KeyPair,
    clock: Arc<dyn Clock>,
    options: AuditOptions,
    writer: Mutex<Writer>,
    dropped: AtomicU64,
}

enum Msg {
    Event(AuditEvent),
    Sync(SyncSender<()>),
}

/// The audit log of one data directory. Cheap to share (`Arc<AuditLog>`).
pub struct AuditLog {
    inner: Arc<Inner>,
    queue: Mutex<Option<SyncSender<Msg>>>,
    worker: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("path", &self.inner.log_path)
            .finish_non_exhaustive()
    }
}

fn load_or_create_key(dir: &Path) -> Result<Ed25519KeyPair> {
    let key_path = dir.join("checkpoint.key");
    let pub_path = dir.join("checkpoint.pub");
    let pkcs8 = match fs::read(&key_path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
                .map_err(|_| Error::Crypto("could not generate the audit signing key"))?;
            fsutil::write_new(&key_path, doc.as_ref(), PRIVATE)?;
            doc.as_ref().to_vec()
        }
        Err(e) => return Err(Error::io("read", &key_path, e)),
    };
    let key = Ed25519KeyPair::from_pkcs8(&pkcs8).map_err(|e| Error::Corrupt {
        path: key_path.clone(),
        detail: format!("not an ed25519 PKCS#8 key: {e}"),
    })?;
    if !pub_path.exists() {
        fsutil::write_atomic(
            &pub_path,
            format!("{}\n", hex(key.public_key().as_ref())).as_bytes(),
            PUBLIC,
        )?;
    }
    Ok(key)
}

fn checkpoint_message(seq: u64, prev: &[u8; 32]) -> Vec<u8> {
    let mut m = CHECKPOINT_DOMAIN.to_vec();
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(prev);
    m
}

fn head_message(seq: u64, hash: &[u8; 32]) -> Vec<u8> {
    let mut m = HEAD_DOMAIN.to_vec();
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(hash);
    m
}

/// Reads the log from `from` to its end; returns (complete lines with their start offsets,
/// offset just after the last complete line).
fn read_lines(file: &mut File, path: &Path, from: u64) -> Result<(Vec<Vec<u8>>, u64)> {
    file.seek(SeekFrom::Start(from))
        .map_err(|e| Error::io("seek in", path, e))?;
    let mut buf = Vec::new();
    file.read_to_end(&mut buf)
        .map_err(|e| Error::io("read", path, e))?;
    let mut lines = Vec::new();
    let mut end = 0usize;
    for (i, &b) in buf.iter().enumerate() {
        if b == b'\n' {
            lines.push(buf[end..i].to_vec());
            end = i + 1;
        }
    }
    Ok((lines, from + end as u64))
}

/// The sequence number of a line, and whether it carries a record signature.
fn seq_of(line: &[u8]) -> Option<(u64, bool)> {
    #[derive(Deserialize)]
    struct SeqOnly {
        seq: u64,
        rsig: Option<String>,
    }
    serde_json::from_slice::<SeqOnly>(line)
        .ok()
        .map(|s| (s.seq, s.rsig.is_some()))
}

impl Inner {
    /// Brings the writer's view of the tail up to date with the file (another process may
    /// have appended) and cuts a torn last line. Called with the file lock held.
    fn resync(&self, w: &mut Writer) -> Result<()> {
        let disk_len = w
            .file
            .metadata()
            .map_err(|e| Error::io("read metadata of", &self.log_path, e))?
            .len();
        if disk_len == w.len {
            return Ok(());
        }
        let from = if disk_len > w.len { w.len } else { 0 };
        if from == 0 {
            w.next_seq = 0;
            w.last_hash = [0; 32];
            w.tail_signed = false;
        }
        let (lines, end) = read_lines(&mut w.file, &self.log_path, from)?;
        if let Some(last) = lines.last() {
            let (seq, signed) = seq_of(last).ok_or_else(|| Error::Corrupt {
                path: self.log_path.clone(),
                detail: "its last record is not valid JSON; run `ironplant audit verify`".into(),
            })?;
            w.next_seq = seq.saturating_add(1);
            w.last_hash = sha256(last);
            w.tail_signed = signed;
        }
        if end < disk_len {
            tracing::warn!(path = %self.log_path.display(), "audit log: cutting a torn last line left by a crash");
            w.file
                .set_len(end)
                .map_err(|e| Error::io("truncate", &self.log_path, e))?;
        }
        w.len = end;
        Ok(())
    }

    fn append(&self, event: AuditEvent) -> Result<u64> {
        let _lock = FileLock::acquire(&self.lock_path)?;
        let mut w = self.writer.lock();
        self.resync(&mut w)?;
        let dropped = self.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            self.write_record(&mut w, AuditEvent::AuditDropped { count: dropped })?;
        }
        let seq = self.write_record(&mut w, event)?;
        if w.since_checkpoint >= self.options.checkpoint_every {
            self.write_checkpoint(&mut w)?;
        }
        Ok(seq)
    }

    fn write_checkpoint(&self, w: &mut Writer) -> Result<u64> {
        let sig = self.key.sign(&checkpoint_message(w.next_seq, &w.last_hash));
        let seq = self.write_record(
            w,
            AuditEvent::Checkpoint {
                sig: hex(sig.as_ref()),
            },
        )?;
        w.since_checkpoint = 0;
        Ok(seq)
    }

    fn write_record(&self, w: &mut Writer, event: AuditEvent) -> Result<u64> {
        let seq = w.next_seq;
        let record = AuditRecord {
            seq,
            ts: unix_micros(self.clock.now()),
            prev: hex(&w.last_hash),
            event,
            rsig: None,
        };
        let mut line = serde_json::to_vec(&record).map_err(|e| Error::Corrupt {
            path: self.log_path.clone(),
            detail: format!("cannot serialise a record: {e}"),
        })?;
        // Sign the body, then add the signature as the last field (`signed_body` undoes it).
        let rsig = hex(self.key.sign(&record_message(&line)).as_ref());
        line.pop(); // the closing brace
        line.extend_from_slice(format!(",\"rsig\":\"{rsig}\"}}").as_bytes());
        let hash = sha256(&line);
        line.push(b'\n');
        w.file
            .write_all(&line)
            .and_then(|()| w.file.sync_data())
            .map_err(|e| Error::io("append to", &self.log_path, e))?;
        w.len += line.len() as u64;
        w.next_seq += 1;
        w.last_hash = hash;
        w.tail_signed = true;
        w.since_checkpoint += 1;
        let sig = self.key.sign(&head_message(seq, &hash));
        let head = Head {
            seq,
            hash: hex(&hash),
            sig: hex(sig.as_ref()),
        };
        let bytes = serde_json::to_vec(&head).map_err(|e| Error::Corrupt {
            path: self.head_path.clone(),
            detail: e.to_string(),
        })?;
        fsutil::write_atomic(&self.head_path, &bytes, PRIVATE)?;
        Ok(seq)
    }
}

impl AuditLog {
    /// Opens (or creates) the audit log in `dir`, with its signing key.
    pub fn open(dir: &Path, clock: Arc<dyn Clock>, options: AuditOptions) -> Result<AuditLog> {
        fsutil::ensure_private_dir(dir)?;
        let key = load_or_create_key(dir)?;
        let log_path = dir.join("audit.log");
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(PRIVATE)
            .open(&log_path)
            .map_err(|e| Error::io("open", &log_path, e))?;
        let inner = Arc::new(Inner {
            head_path: dir.join("head.json"),
            lock_path: dir.join("audit.lock"),
            key,
            clock,
            options,
            writer: Mutex::new(Writer {
                file,
                // Not yet read: the first append (or the resync below) reads the tail.
                len: u64::MAX,
                next_seq: 0,
                last_hash: [0; 32],
                tail_signed: false,
                since_checkpoint: 0,
            }),
            dropped: AtomicU64::new(0),
            log_path,
        });
        {
            let _lock = FileLock::acquire(&inner.lock_path)?;
            let mut w = inner.writer.lock();
            w.len = u64::MAX;
            inner.resync(&mut w)?;
            if w.next_seq == 0 {
                if let Some(names) = head_on_disk(&inner.head_path) {
                    return Err(Error::Corrupt {
                        path: inner.log_path.clone(),
                        detail: format!(
                            "the audit log is missing or empty but {} names {names}: it was wiped or replaced. Restore it from a backup; to start a new log knowingly, move the directory {} aside (the gap stays visible to `ironplant audit verify --witness`)",
                            inner.head_path.display(),
                            dir.display()
                        ),
                    });
                }
            }
            // A new log starts with a signed record, so an empty log never passes `verify`
            // once a key exists; a log from an older version gets a signed record after its
            // unsigned ones, so nothing unsigned can be appended after it unnoticed.
            if !w.tail_signed {
                inner.write_checkpoint(&mut w)?;
            }
        }
        let (tx, rx) = mpsc::sync_channel::<Msg>(options.queue.max(1));
        let worker_inner = inner.clone();
        let worker = std::thread::Builder::new()
            .name("ironplant-audit".into())
            .spawn(move || run_worker(&worker_inner, &rx))
            .map_err(|e| Error::io("start the audit writer thread for", dir, e))?;
        Ok(AuditLog {
            inner,
            queue: Mutex::new(Some(tx)),
            worker: Mutex::new(Some(worker)),
        })
    }

    /// Appends `event` durably; returns its sequence number.
    pub fn record(&self, event: AuditEvent) -> Result<u64> {
        self.inner.append(event)
    }

    /// Queues `event` for the writer thread without blocking (for callers on an async
    /// runtime, e.g. the broker's ACL denials). When the queue is full the event is dropped
    /// and counted; the count is written as an `audit_dropped` record.
    pub fn submit(&self, event: AuditEvent) {
        let q = self.queue.lock();
        let sent = match q.as_ref() {
            Some(tx) => match tx.try_send(Msg::Event(event)) {
                Ok(()) => true,
                Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
            },
            None => false,
        };
        if !sent {
            self.inner.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Waits until everything [`submit`](Self::submit)ted before this call is on disk.
    pub fn sync(&self) {
        let (tx, rx) = mpsc::sync_channel(1);
        let sent = self
            .queue
            .lock()
            .as_ref()
            .is_some_and(|q| q.send(Msg::Sync(tx)).is_ok());
        if sent {
            let _ = rx.recv();
        }
    }

    /// Writes a signed checkpoint now (e.g. at shutdown).
    pub fn checkpoint(&self) -> Result<u64> {
        let _lock = FileLock::acquire(&self.inner.lock_path)?;
        let mut w = self.inner.writer.lock();
        self.inner.resync(&mut w)?;
        self.inner.write_checkpoint(&mut w)
    }

    /// A signed statement of the current head, for a witness outside the data directory
    /// (`ironplant audit head`, the platform's periodic `$SYS/ironplant/audit/head`).
    pub fn head_statement(&self) -> Result<HeadStatement> {
        let _lock = FileLock::acquire(&self.inner.lock_path)?;
        let mut w = self.inner.writer.lock();
        self.inner.resync(&mut w)?;
        if w.next_seq == 0 {
            // Not after `open`, which always writes a first record; the file was emptied since.
            return Err(Error::Corrupt {
                path: self.inner.log_path.clone(),
                detail: "the audit log is empty; run `ironplant audit verify`".into(),
            });
        }
        let seq = w.next_seq - 1;
        let ts = unix_micros(self.inner.clock.now());
        let sig = self
            .inner
            .key
            .sign(&statement_message(seq, &w.last_hash, ts));
        Ok(HeadStatement {
            seq,
            hash: hex(&w.last_hash),
            ts,
            sig: hex(sig.as_ref()),
        })
    }

    /// The checkpoint public key (hex). Print it at setup and keep it off the host.
    pub fn public_key_hex(&self) -> String {
        hex(self.inner.key.public_key().as_ref())
    }

    pub fn path(&self) -> &Path {
        &self.inner.log_path
    }

    /// One page of records matching `q`, oldest first (for `GET /api/v1/audit`).
    pub fn query(&self, q: &AuditQuery) -> Result<AuditPage> {
        query_file(&self.inner.log_path, q)
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        self.queue.lock().take();
        if let Some(h) = self.worker.lock().take() {
            let _ = h.join();
        }
    }
}

fn run_worker(inner: &Inner, rx: &Receiver<Msg>) {
    while let Ok(msg) = rx.recv() {
        match msg {
            Msg::Event(e) => {
                let kind = e.kind();
                if let Err(err) = inner.append(e) {
                    inner.dropped.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(kind, error = %err, "audit log: could not write a record");
                }
            }
            Msg::Sync(done) => {
                let _ = done.send(());
            }
        }
    }
}

/// A filter for [`AuditLog::query`].
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// Records at or after this instant (µs since the epoch).
    pub from_us: Option<i64>,
    /// Records before this instant (µs since the epoch).
    pub to_us: Option<i64>,
    /// Only these kinds (see [`AuditEvent::kind`]); empty means all.
    pub kinds: Vec<String>,
    /// Cursor: only records with a larger sequence number (the previous page's `next`).
    pub after: Option<u64>,
    /// Page size; capped at [`AuditQuery::MAX_LIMIT`], 100 when 0.
    pub limit: usize,
}

impl AuditQuery {
    pub const MAX_LIMIT: usize = 1000;
}

#[derive(Debug, Clone, Serialize)]
pub struct AuditPage {
    pub records: Vec<AuditRecord>,
    /// Pass as `after` for the next page; `None` when this was the last.
    pub next: Option<u64>,
}

fn query_file(path: &Path, q: &AuditQuery) -> Result<AuditPage> {
    let limit = match q.limit {
        0 => 100,
        n => n.min(AuditQuery::MAX_LIMIT),
    };
    let file = File::open(path).map_err(|e| Error::io("open", path, e))?;
    let mut records = Vec::new();
    let mut next = None;
    for line in BufReader::new(file).split(b'\n') {
        let line = line.map_err(|e| Error::io("read", path, e))?;
        let Ok(r) = serde_json::from_slice::<AuditRecord>(&line) else {
            // A damaged line is for `verify` to report; the reader skips it.
            continue;
        };
        if q.after.is_some_and(|a| r.seq <= a)
            || q.from_us.is_some_and(|f| r.ts < f)
            || q.to_us.is_some_and(|t| r.ts >= t)
            || (!q.kinds.is_empty() && !q.kinds.iter().any(|k| k == r.event.kind()))
        {
            continue;
        }
        if records.len() == limit {
            next = records.last().map(|r: &AuditRecord| r.seq);
            break;
        }
        records.push(r);
    }
    Ok(AuditPage { records, next })
}

/// What [`verify`] found in an intact log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub records: u64,
    pub checkpoints: u64,
    /// Sequence number of the newest checkpoint.
    pub last_checkpoint: Option<u64>,
}

/// The first problem [`verify`] found, naming the record (its index, which is also its
/// expected sequence number and its 0-based line number).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit record {index}: {problem}")]
pub struct VerifyError {
    pub index: u64,
    pub problem: Problem,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("not a valid record ({0}); the line was edited or damaged")]
    Malformed(String),
    #[error("has sequence number {found}, expected {expected}: records were removed, inserted or reordered here")]
    Sequence { expected: u64, found: u64 },
    #[error("was changed: its hash no longer matches the `prev` of record {next}")]
    Changed { next: u64 },
    #[error("was changed: its hash no longer matches the signed head")]
    ChangedHead,
    #[error("checkpoint signature is not valid: the records before it were rewritten or the checkpoint forged")]
    BadCheckpoint,
    #[error("the signed head names record {head_seq} but the log ends before it: records were removed from the end")]
    Truncated { head_seq: u64 },
    #[error("is not covered by the signed head (head names record {head_seq}): records were appended by something other than Ironplant")]
    Unsigned { head_seq: u64 },
    #[error("the log has records but head.json is missing or invalid ({0})")]
    Head(String),
    #[error("its signature is not valid: the record was forged or changed")]
    BadSignature,
    #[error("carries no signature: it was appended by something other than Ironplant (a forged record); a log written before per-record signatures is signed at its end when Ironplant next opens it")]
    NotSigned,
    #[error("the log is missing or empty but {0} exists: the log was wiped or replaced; restore audit.log from a backup")]
    Wiped(String),
    #[error("is missing: a witnessed head signed at {at} names it, but the log has only {records} record(s): the log was rolled back to an older state or truncated")]
    RolledBack { at: String, records: u64 },
    #[error("differs from the witnessed head signed at {at}: the log was replaced by another history (rolled back and rewritten)")]
    WitnessMismatch { at: String },
    #[error("is named by witness statement {statement}, whose signature is not valid with this log's key: the audit key was replaced, or the statement is not from this platform")]
    BadWitness { statement: usize },
    #[error("{0}")]
    Io(String),
}

fn read_public_key(dir: &Path) -> Result<Vec<u8>, VerifyError> {
    let pub_path = dir.join("checkpoint.pub");
    let text = fs::read_to_string(&pub_path).map_err(|e| {
        let log_empty = fs::metadata(dir.join("audit.log")).map_or(true, |m| m.len() == 0);
        let problem = match evidence_of_a_log(dir) {
            // The whole directory went, key included.
            Some(evidence) if log_empty => Problem::Wiped(evidence),
            _ => Problem::Io(format!("cannot read {}: {e}", pub_path.display())),
        };
        VerifyError { index: 0, problem }
    })?;
    unhex(text.trim()).ok_or_else(|| VerifyError {
        index: 0,
        problem: Problem::Io(format!("{} is not a hex key", pub_path.display())),
    })
}

/// Verifies the log in `dir` with the public key in `dir/checkpoint.pub`.
pub fn verify(dir: &Path) -> Result<VerifyReport, VerifyError> {
    let key = read_public_key(dir)?;
    verify_with_key(dir, &key)
}

/// Verifies the log in `dir` against an ed25519 public key kept elsewhere.
pub fn verify_with_key(dir: &Path, public_key: &[u8]) -> Result<VerifyReport, VerifyError> {
    check(dir, public_key).map(|(report, _)| report)
}

/// Verifies the log in `dir` (as [`verify`]) and that it still holds every witnessed head:
/// record `seq` exists and hashes to the witnessed `hash`. A log shorter than a witnessed
/// head was rolled back or truncated; a different record there means another history.
pub fn verify_witnessed(
    dir: &Path,
    witnessed: &[HeadStatement],
) -> Result<VerifyReport, VerifyError> {
    let public_key = read_public_key(dir)?;
    let key = signature::UnparsedPublicKey::new(&signature::ED25519, public_key.as_slice());
    // Judge the statements first: a forged or foreign witness must not be mistaken for
    // evidence of rollback, and a wiped log must still be compared against them.
    for (i, st) in witnessed.iter().enumerate() {
        let ok = unhex32(&st.hash).is_some_and(|hash| {
            unhex(&st.sig).is_some_and(|sig| {
                key.verify(&statement_message(st.seq, &hash, st.ts), &sig)
                    .is_ok()
            })
        });
        if !ok {
            return Err(VerifyError {
                index: st.seq,
                problem: Problem::BadWitness { statement: i + 1 },
            });
        }
    }
    let checked = check(dir, &public_key);
    let (report, hashes) = match checked {
        Ok(x) => x,
        // A wipe is the extreme rollback: name the newest witnessed record it lost.
        Err(VerifyError {
            problem: Problem::Wiped(_),
            ..
        }) if !witnessed.is_empty() => (
            VerifyReport {
                records: 0,
                checkpoints: 0,
                last_checkpoint: None,
            },
            Vec::new(),
        ),
        Err(e) => return Err(e),
    };
    // The newest witnessed head is the most telling one to name.
    let mut by_seq: Vec<&HeadStatement> = witnessed.iter().collect();
    by_seq.sort_by_key(|st| std::cmp::Reverse(st.seq));
    for st in by_seq {
        let at = witness_time(st.ts);
        let hash = unhex32(&st.hash).expect("checked with its signature above");
        let here = usize::try_from(st.seq).ok().and_then(|i| hashes.get(i));
        match here {
            None => {
                return Err(VerifyError {
                    index: st.seq,
                    problem: Problem::RolledBack {
                        at,
                        records: report.records,
                    },
                })
            }
            Some(h) if *h != hash => {
                return Err(VerifyError {
                    index: st.seq,
                    problem: Problem::WitnessMismatch { at },
                })
            }
            Some(_) => {}
        }
    }
    Ok(report)
}

/// `2026-01-01T00:00:00Z` (UTC, whole seconds) for a head statement's `ts`.
fn witness_time(ts_us: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(ts_us.div_euclid(1_000_000)) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => format!("{ts_us} µs after the Unix epoch"),
    }
}

/// Evidence that a log existed in `dir` (for calling a missing or empty log a wipe).
fn evidence_of_a_log(dir: &Path) -> Option<String> {
    ["head.json", "checkpoint.key"]
        .iter()
        .map(|f| dir.join(f))
        .chain(dir.parent().map(|p| p.join("users.json")))
        .find(|p| p.exists())
        .map(|p| p.display().to_string())
}

/// The whole check; also returns each record's hash (for witnessed heads).
fn check(dir: &Path, public_key: &[u8]) -> Result<(VerifyReport, Vec<[u8; 32]>), VerifyError> {
    let key = signature::UnparsedPublicKey::new(&signature::ED25519, public_key);
    let log_path = dir.join("audit.log");
    let io = |what: String| VerifyError {
        index: 0,
        problem: Problem::Io(what),
    };
    let bytes = match fs::read(&log_path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io(format!("cannot read {}: {e}", log_path.display()))),
    };
    let mut hashes: Vec<[u8; 32]> = Vec::new();
    let mut prevs: Vec<[u8; 32]> = Vec::new();
    let mut signed: Vec<(u64, String)> = Vec::new();
    // Per record: whether its own signature holds (`None`: it has none).
    let mut rsig_ok: Vec<Option<bool>> = Vec::new();
    let mut checkpoints = 0;
    let mut last_checkpoint = None;
    let mut lines = bytes.split(|&b| b == b'\n').peekable();
    let mut index = 0u64;
    while let Some(line) = lines.next() {
        if line.is_empty() && lines.peek().is_none() {
            break; // the newline after the last record
        }
        let fail = |problem| VerifyError { index, problem };
        let record: AuditRecord =
            serde_json::from_slice(line).map_err(|e| fail(Problem::Malformed(e.to_string())))?;
        if record.seq != index {
            return Err(fail(Problem::Sequence {
                expected: index,
                found: record.seq,
            }));
        }
        let prev = unhex32(&record.prev)
            .ok_or_else(|| fail(Problem::Malformed("`prev` is not a SHA-256 in hex".into())))?;
        rsig_ok.push(record.rsig.as_deref().map(|sig| {
            signed_body(line, sig).is_some_and(|body| {
                unhex(sig).is_some_and(|s| key.verify(&record_message(&body), &s).is_ok())
            })
        }));
        if let AuditEvent::Checkpoint { sig } = record.event {
            // Judged after the chain: a broken link into it names the edited record, which
            // is the more useful answer.
            signed.push((index, sig));
            checkpoints += 1;
            last_checkpoint = Some(index);
        }
        hashes.push(sha256(line));
        prevs.push(prev);
        index += 1;
    }
    if hashes.is_empty() {
        if let Some(evidence) = evidence_of_a_log(dir) {
            return Err(VerifyError {
                index: 0,
                problem: Problem::Wiped(evidence),
            });
        }
    }
    // The chain: record i's `prev` is the hash of record i-1 (zeros for record 0).
    // Changing record k anywhere breaks the link k -> k+1; changing only its `prev` also
    // breaks k-1 -> k. So at the first broken link into j: if j -> j+1 is broken too,
    // record j was changed; otherwise record j-1 was.
    let link_ok = |j: usize| -> bool {
        let expected = if j == 0 { [0; 32] } else { hashes[j - 1] };
        prevs[j] == expected
    };
    let head = read_head(dir, &key, hashes.len());
    for j in 0..hashes.len() {
        if !link_ok(j) {
            let next_broken = if j + 1 < hashes.len() {
                !link_ok(j + 1)
            } else {
                matches!(&head, Ok(Some(h)) if h.0 == j as u64 && h.1 != hashes[j])
            };
            let changed = if next_broken || j == 0 { j } else { j - 1 };
            return Err(VerifyError {
                index: changed as u64,
                problem: Problem::Changed {
                    next: changed as u64 + 1,
                },
            });
        }
    }
    // The chain holds; now each record's own signature. Records before the first signed one
    // were written by an older version (covered by the chain into that signed record); from
    // it on, a record without a valid signature was not written with the audit key.
    let first_signed = rsig_ok.iter().position(Option::is_some);
    for (i, ok) in rsig_ok.iter().enumerate() {
        let problem = match ok {
            Some(false) => Some(Problem::BadSignature),
            None if first_signed.is_some_and(|f| i > f) => Some(Problem::NotSigned),
            _ => None,
        };
        if let Some(problem) = problem {
            return Err(VerifyError {
                index: i as u64,
                problem,
            });
        }
    }
    // And each checkpoint's signature over its place in it.
    for (index, sig) in signed {
        let prev = usize::try_from(index).ok().and_then(|i| prevs.get(i));
        let ok = prev.is_some_and(|prev| {
            unhex(&sig).is_some_and(|s| key.verify(&checkpoint_message(index, prev), &s).is_ok())
        });
        if !ok {
            return Err(VerifyError {
                index,
                problem: Problem::BadCheckpoint,
            });
        }
    }
    // A log with no signed record at all: written by an older version and never opened by
    // this one, or stripped of its signatures.
    if first_signed.is_none() && !hashes.is_empty() {
        return Err(VerifyError {
            index: hashes.len() as u64 - 1,
            problem: Problem::NotSigned,
        });
    }
    let records = hashes.len() as u64;
    match head {
        Err(problem) => {
            return Err(VerifyError {
                index: records.saturating_sub(1),
                problem,
            })
        }
        Ok(None) if records > 0 => {
            return Err(VerifyError {
                index: records - 1,
                problem: Problem::Head("missing".into()),
            })
        }
        Ok(None) => {}
        Ok(Some((seq, hash))) => {
            if seq >= records {
                return Err(VerifyError {
                    index: records,
                    problem: Problem::Truncated { head_seq: seq },
                });
            }
            let at = usize::try_from(seq).unwrap_or(usize::MAX);
            if hashes.get(at) != Some(&hash) {
                return Err(VerifyError {
                    index: seq,
                    problem: Problem::ChangedHead,
                });
            }
            // A crash between appending a record and signing the head leaves one record
            // unsigned; more than one did not come from us.
            if records - seq > 2 {
                return Err(VerifyError {
                    index: seq + 2,
                    problem: Problem::Unsigned { head_seq: seq },
                });
            }
        }
    }
    Ok((
        VerifyReport {
            records,
            checkpoints,
            last_checkpoint,
        },
        hashes,
    ))
}

/// What an existing `head.json` names ("record N"), without checking its signature; `None`
/// when there is no head file (for refusing to start a new log over a wiped one).
fn head_on_disk(path: &Path) -> Option<String> {
    match fs::read(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(_) => Some("a record (unreadable)".into()),
        Ok(bytes) => Some(serde_json::from_slice::<Head>(&bytes).map_or_else(
            |_| "a record (unparsable)".into(),
            |h| format!("record {}", h.seq),
        )),
    }
}

/// The signed head: `Ok(None)` when there is none, `Ok(Some((seq, hash)))` when its signature
/// holds.
fn read_head(
    dir: &Path,
    key: &signature::UnparsedPublicKey<&[u8]>,
    records: usize,
) -> Result<Option<(u64, [u8; 32])>, Problem> {
    let path = dir.join("head.json");
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Problem::Io(format!("cannot read {}: {e}", path.display()))),
    };
    let head: Head = serde_json::from_slice(&bytes).map_err(|e| Problem::Head(format!("{e}")))?;
    let hash = unhex32(&head.hash).ok_or_else(|| Problem::Head("hash is not hex".into()))?;
    let sig = unhex(&head.sig).ok_or_else(|| Problem::Head("sig is not hex".into()))?;
    if key.verify(&head_message(head.seq, &hash), &sig).is_err() {
        return Err(Problem::Head(format!(
            "its signature is not valid (log has {records} records)"
        )));
    }
    Ok(Some((head.seq, hash)))
}
