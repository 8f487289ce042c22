//! The audit chain: `verify` names the record that was edited, removed, inserted, moved or
//! forged; a rewritten chain fails at the signatures; a rolled-back or wiped log fails against
//! witnessed heads (and a wipe without them); queries filter and page.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ironplant_security::audit::{self, AuditEvent, AuditQuery, Problem, VerifyError};
use ironplant_security::{AuditLog, AuditOptions, ManualClock};

fn event(i: usize) -> AuditEvent {
    AuditEvent::Command {
        actor: Some(format!("operator{i}")),
        target: format!("Plant/Line1/Filler/Speed{i}"),
        value: format!("{}", 100 + i),
        outcome: "ok".into(),
    }
}

/// A log of 20 command records (after the signed first record, a checkpoint; and a
/// checkpoint after every 5 records).
fn build(dir: &Path) -> (Arc<ManualClock>, PathBuf) {
    let clock = Arc::new(ManualClock::at_2026());
    let log = AuditLog::open(
        dir,
        clock.clone(),
        AuditOptions {
            checkpoint_every: 5,
            queue: 16,
        },
    )
    .expect("open");
    for i in 0..20 {
        log.record(event(i)).expect("record");
        clock.advance(Duration::from_secs(1));
    }
    (clock, dir.join("audit.log"))
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .expect("read")
        .lines()
        .map(str::to_owned)
        .collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    let mut s = lines.join("\n");
    s.push('\n');
    std::fs::write(path, s).expect("write");
}

fn fails_at(dir: &Path) -> VerifyError {
    audit::verify(dir).expect_err("verify must fail")
}

#[test]
fn an_intact_log_verifies() {
    let dir = tempfile::tempdir().expect("tempdir");
    build(dir.path());
    let report = audit::verify(dir.path()).expect("intact");
    assert!(
        lines(&dir.path().join("audit.log"))
            .iter()
            .all(|l| l.contains("\"rsig\":\"")),
        "every record is signed"
    );
    // The first record, 20 records and a checkpoint after each 5 (checkpoints count as
    // records too).
    assert_eq!(report.records, 25);
    assert_eq!(report.checkpoints, 5);
    assert_eq!(report.last_checkpoint, Some(24));
    assert_eq!(common::mode(&dir.path().join("checkpoint.key")), 0o600);
    assert_eq!(common::mode(&dir.path().join("audit.log")), 0o600);
}

#[test]
fn editing_one_byte_names_the_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, path) = build(dir.path());
    let mut l = lines(&path);
    // Record 7, one byte of a value: still valid JSON, so only the chain can tell.
    l[7] = l[7].replacen("operator", "operatos", 1);
    write_lines(&path, &l);
    let e = fails_at(dir.path());
    assert_eq!(e.index, 7, "{e}");
    assert_eq!(e.problem, Problem::Changed { next: 8 });
    assert_eq!(
        e.to_string(),
        "audit record 7: was changed: its hash no longer matches the `prev` of record 8"
    );
}

#[test]
fn single_byte_edits_are_detected_and_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, path) = build(dir.path());
    let original = std::fs::read(&path).expect("read");
    let starts: Vec<usize> = std::iter::once(0)
        .chain(
            original
                .iter()
                .enumerate()
                .filter(|(_, &b)| b == b'\n')
                .map(|(i, _)| i + 1),
        )
        .collect();
    // Every third byte (all of them takes ~15 s in a debug build; a stride of 3 still hits
    // every field of every record).
    for at in (0..original.len()).step_by(3) {
        if original[at] == b'\n' {
            continue;
        }
        let mut bytes = original.clone();
        bytes[at] ^= 0x01;
        std::fs::write(&path, &bytes).expect("write");
        let record = starts.iter().rposition(|&s| s <= at).expect("line") as u64;
        let e = audit::verify(dir.path()).expect_err("a flipped byte must be detected");
        // A flipped `seq` digit can read as another record's number: then the record at
        // that place is named for its sequence. Any other byte names its own record.
        assert_eq!(e.index, record, "byte {at}: {e}");
    }
}

#[test]
fn removed_reordered_and_inserted_records_are_detected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, path) = build(dir.path());
    let original = lines(&path);

    let mut removed = original.clone();
    removed.remove(7);
    write_lines(&path, &removed);
    let e = fails_at(dir.path());
    assert_eq!(
        (e.index, e.problem),
        (
            7,
            Problem::Sequence {
                expected: 7,
                found: 8
            }
        )
    );

    let mut swapped = original.clone();
    swapped.swap(7, 8);
    write_lines(&path, &swapped);
    let e = fails_at(dir.path());
    assert_eq!(
        (e.index, e.problem),
        (
            7,
            Problem::Sequence {
                expected: 7,
                found: 8
            }
        )
    );

    let mut inserted = original.clone();
    inserted.insert(10, original[3].clone());
    write_lines(&path, &inserted);
    let e = fails_at(dir.path());
    assert_eq!(
        (e.index, e.problem),
        (
            10,
            Problem::Sequence {
                expected: 10,
                found: 3
            }
        )
    );

    let mut truncated = original.clone();
    truncated.truncate(original.len() - 2);
    write_lines(&path, &truncated);
    let e = fails_at(dir.path());
    assert_eq!(
        e.problem,
        Problem::Truncated {
            head_seq: original.len() as u64 - 1
        }
    );

    let mut last_edited = original.clone();
    let n = last_edited.len() - 1;
    last_edited[n] = last_edited[n].replacen("\"sig\":\"", "\"sig\":\"0", 1);
    write_lines(&path, &last_edited);
    let e = fails_at(dir.path());
    assert_eq!(e.index, n as u64, "{e}");

    write_lines(&path, &original);
    audit::verify(dir.path()).expect("restored");
}

/// An attacker without the key edits record 8 and recomputes every later `prev`, so the
/// chain is consistent again: the record's own signature no longer fits, and if the
/// record signatures are stripped, the next signed checkpoint does not either.
#[test]
fn a_rewritten_chain_fails_at_the_signature() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, path) = build(dir.path());
    let mut l = lines(&path);
    let original = l.clone();
    // Record 9 is the command with value 107 (records 0 and 6 are checkpoints).
    l[9] = l[9].replacen("\"value\":\"107\"", "\"value\":\"999\"", 1);
    assert_ne!(l[9], original[9]);
    // Recompute each later `prev` in place (the text stays as Ironplant wrote it otherwise);
    // `strip` also removes every record signature from the edited record on.
    let rechain = |l: &mut Vec<String>, strip: bool| {
        for i in 9..l.len() {
            if strip {
                let at = l[i].find(",\"rsig\":").expect("signed");
                l[i] = format!("{}}}", &l[i][..at]);
            }
            if i > 9 {
                let prev = sha256_hex(l[i - 1].as_bytes());
                let at = l[i].find("\"prev\":\"").expect("prev") + 8;
                l[i].replace_range(at..at + 64, &prev);
            }
        }
    };
    rechain(&mut l, false);
    write_lines(&path, &l);
    let e = fails_at(dir.path());
    assert_eq!((e.index, e.problem), (9, Problem::BadSignature));
    // Stripping the signatures from there on does not help: records after signed ones must
    // be signed (and the checkpoint at 12 no longer fits either).
    let mut l = original.clone();
    l[9] = l[9].replacen("\"value\":\"107\"", "\"value\":\"999\"", 1);
    rechain(&mut l, true);
    write_lines(&path, &l);
    let e = fails_at(dir.path());
    assert_eq!((e.index, e.problem), (9, Problem::NotSigned));

    // And a verifier given someone else's key rejects even the original.
    let other = tempfile::tempdir().expect("tempdir");
    let (_, _) = build(other.path());
    let key = std::fs::read_to_string(other.path().join("checkpoint.pub")).expect("key");
    let key = (0..key.trim().len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&key.trim()[i..i + 2], 16).expect("hex"))
        .collect::<Vec<u8>>();
    assert!(audit::verify_with_key(dir.path(), &key).is_err());
}

fn sha256_hex(data: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, data)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn a_torn_last_line_is_cut_and_two_writers_share_one_chain() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (clock, path) = build(dir.path());
    // A crash in the middle of a write.
    let mut bytes = std::fs::read(&path).expect("read");
    bytes.extend_from_slice(b"{\"seq\":24,\"ts\":1,\"pr");
    std::fs::write(&path, &bytes).expect("write");

    let options = AuditOptions {
        checkpoint_every: 5,
        queue: 16,
    };
    let a = AuditLog::open(dir.path(), clock.clone(), options).expect("open a");
    let b = AuditLog::open(dir.path(), clock.clone(), options).expect("open b");
    for i in 0..6 {
        a.record(event(100 + i)).expect("a");
        b.record(event(200 + i)).expect("b");
    }
    b.submit(event(300));
    b.sync();
    let report = audit::verify(dir.path()).expect("one chain");
    assert!(report.records > 36, "{report:?}");
}

#[test]
fn queries_filter_by_kind_and_time_and_page() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(ManualClock::at_2026());
    let log = AuditLog::open(dir.path(), clock.clone(), AuditOptions::default()).expect("open");
    let t0 = ironplant_security::clock::unix_micros(clock.now_for_test());
    for i in 0..10 {
        log.record(event(i)).expect("record");
        log.record(AuditEvent::ConfigChanged {
            actor: None,
            what: format!("change {i}"),
        })
        .expect("record");
        clock.advance(Duration::from_secs(10));
    }
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = log
            .query(&AuditQuery {
                kinds: vec!["command".into()],
                from_us: Some(t0 + 20_000_000),
                to_us: Some(t0 + 80_000_000),
                after,
                limit: 2,
            })
            .expect("query");
        seen.extend(page.records.iter().map(|r| match &r.event {
            AuditEvent::Command { value, .. } => value.clone(),
            other => panic!("unexpected {other:?}"),
        }));
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(seen, vec!["102", "103", "104", "105", "106", "107"]);
}

fn options() -> AuditOptions {
    AuditOptions {
        checkpoint_every: 5,
        queue: 16,
    }
}

/// Someone who can write the log but not read the key appends a record whose `prev` is the
/// hash of the last line, so the chain is intact: its missing or made-up signature gives it
/// away. (Before record signatures, one such record passed as "the head was not yet signed".)
#[test]
fn a_forged_append_with_a_correct_chain_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, path) = build(dir.path());
    let original = lines(&path);
    let n = original.len();
    let forged = |rsig: Option<&str>| {
        let mut v = serde_json::json!({
            "seq": n,
            "ts": 1_767_225_700_000_000_i64,
            "prev": sha256_hex(original[n - 1].as_bytes()),
            "kind": "login",
            "user": "admin",
            "source": "10.0.0.66",
            "via": "password/api",
        });
        if let Some(s) = rsig {
            v["rsig"] = serde_json::Value::String(s.into());
        }
        serde_json::to_string(&v).expect("json")
    };
    for (rsig, problem) in [
        (None, Problem::NotSigned),
        (Some("ab".repeat(64)), Problem::BadSignature),
        // Another record's genuine signature does not fit this one.
        (
            serde_json::from_str::<serde_json::Value>(&original[n - 1]).expect("json")["rsig"]
                .as_str()
                .map(str::to_owned),
            Problem::BadSignature,
        ),
    ] {
        let mut l = original.clone();
        l.push(forged(rsig.as_deref()));
        write_lines(&path, &l);
        let e = fails_at(dir.path());
        assert_eq!((e.index, &e.problem), (n as u64, &problem), "{e}");
        assert!(
            e.to_string().starts_with(&format!("audit record {n}: ")),
            "{e}"
        );
    }
    assert!(fails_at(dir.path()).to_string().contains("forged"));
    write_lines(&path, &original);
    audit::verify(dir.path()).expect("restored");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir") {
        let e = e.expect("entry");
        std::fs::copy(e.path(), to.join(e.file_name())).expect("copy");
    }
}

/// The whole audit directory put back from an older copy is consistent in itself (and
/// passes a plain `verify`); a head witnessed after the copy was taken exposes it.
#[test]
fn a_rollback_to_an_older_head_fails_against_a_witness() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (clock, _) = build(dir.path());
    let log = AuditLog::open(dir.path(), clock.clone(), options()).expect("open");
    let early = log.head_statement().expect("head");
    let snapshot = tempfile::tempdir().expect("tempdir");
    copy_dir(dir.path(), snapshot.path());
    for i in 0..7 {
        log.record(event(50 + i)).expect("record");
        clock.advance(Duration::from_secs(1));
    }
    let late = log.head_statement().expect("head");
    assert!(late.seq > early.seq + 6);
    drop(log);
    // The witness file holds one statement per line, as the platform appends them.
    let witness = format!("{}\n\n{}\n", early.to_line(), late.to_line());
    let witnessed = audit::parse_witness(&witness).expect("parse");
    assert_eq!(witnessed, vec![early.clone(), late.clone()]);
    let report = audit::verify_witnessed(dir.path(), &witnessed).expect("untouched");
    assert_eq!(report.records, late.seq + 1);

    // Roll back: the older copy of log, head and key.
    for f in ["audit.log", "head.json"] {
        std::fs::copy(snapshot.path().join(f), dir.path().join(f)).expect("copy");
    }
    audit::verify(dir.path()).expect("a rollback is consistent in itself");
    let e = audit::verify_witnessed(dir.path(), &witnessed).expect_err("rolled back");
    assert_eq!(e.index, late.seq);
    assert!(
        matches!(&e.problem, Problem::RolledBack { records, .. } if *records == early.seq + 1),
        "{e}"
    );
    assert!(e.to_string().contains("rolled back"), "{e}");
    assert!(e.to_string().contains("2026-01-01T00:00:"), "{e}");
    // The early head alone is still in the rolled-back log.
    audit::verify_witnessed(dir.path(), std::slice::from_ref(&early)).expect("early head");

    // Rolled back and then written on with the genuine key: as long as before, other records.
    let log = AuditLog::open(dir.path(), clock.clone(), options()).expect("open");
    for i in 0..7 {
        log.record(event(90 + i)).expect("record");
    }
    drop(log);
    audit::verify(dir.path()).expect("consistent in itself");
    let e = audit::verify_witnessed(dir.path(), &witnessed).expect_err("another history");
    assert_eq!(e.index, late.seq);
    assert!(matches!(e.problem, Problem::WitnessMismatch { .. }), "{e}");

    // A statement that was not signed with this log's key is refused, not trusted.
    let mut forged = late.clone();
    forged.seq += 1000;
    let e = audit::verify_witnessed(dir.path(), &[forged]).expect_err("forged witness");
    assert_eq!(e.problem, Problem::BadWitness { statement: 1 });
    assert!(audit::parse_witness("{\"seq\":1}\n")
        .expect_err("bad line")
        .starts_with("line 1:"));
}

/// Deleting the log (and its head) or emptying it is a wipe, not a fresh start: `verify`
/// says so, with or without a witness, and opening it does not start a new log over it.
#[test]
fn a_wiped_or_emptied_log_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (clock, path) = build(dir.path());
    let head = AuditLog::open(dir.path(), clock.clone(), options())
        .expect("open")
        .head_statement()
        .expect("head");
    let original = std::fs::read(&path).expect("read");
    let head_file = std::fs::read(dir.path().join("head.json")).expect("read");

    // Emptied, head kept.
    std::fs::write(&path, b"").expect("empty");
    assert!(audit::verify(dir.path()).is_err());
    let e = AuditLog::open(dir.path(), clock.clone(), options()).expect_err("refused");
    assert!(e.to_string().contains("wiped"), "{e}");
    assert_eq!(std::fs::read(&path).expect("read"), b"", "nothing written");

    // Emptied and its head removed.
    std::fs::remove_file(dir.path().join("head.json")).expect("rm");
    let e = fails_at(dir.path());
    assert!(matches!(e.problem, Problem::Wiped(_)), "{e}");
    assert!(e.to_string().contains("wiped"), "{e}");

    // Deleted outright.
    std::fs::remove_file(&path).expect("rm");
    let e = fails_at(dir.path());
    assert!(
        matches!(e.problem, Problem::Wiped(ref p) if p.ends_with("checkpoint.key")),
        "{e}"
    );
    let e = audit::verify_witnessed(dir.path(), std::slice::from_ref(&head)).expect_err("wiped");
    assert_eq!(e.index, head.seq);
    assert!(
        matches!(e.problem, Problem::RolledBack { records: 0, .. }),
        "{e}"
    );

    std::fs::write(&path, &original).expect("restore");
    std::fs::write(dir.path().join("head.json"), &head_file).expect("restore");
    audit::verify_witnessed(dir.path(), &[head]).expect("restored");
}

/// A fresh directory: the log starts with a signed record and verifies; an empty audit
/// directory (nothing ever written) is not an error.
#[test]
fn a_new_log_starts_signed_and_an_untouched_directory_passes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let report = audit::verify_with_key(dir.path(), &[0; 32]).expect("nothing there");
    assert_eq!(report.records, 0);
    let log =
        AuditLog::open(dir.path(), Arc::new(ManualClock::at_2026()), options()).expect("open");
    let head = log.head_statement().expect("head");
    assert_eq!(head.seq, 0);
    drop(log);
    let report = audit::verify_witnessed(dir.path(), &[head]).expect("intact");
    assert_eq!((report.records, report.checkpoints), (1, 1));
}

/// With users on record, a security directory whose audit directory was removed does not
/// pass as a first start: `verify` calls it a wipe, and the next start begins the new log
/// with a `log_restarted` record saying the earlier records are lost.
#[test]
fn a_removed_audit_directory_is_named_by_verify_and_by_the_new_log() {
    let data = tempfile::tempdir().expect("tempdir");
    let clock = common::clock_now();
    let sec = common::open(data.path(), &clock);
    let audit_dir = sec.audit_dir();
    drop(sec);
    std::fs::remove_dir_all(&audit_dir).expect("rm");
    std::fs::create_dir(&audit_dir).expect("mkdir");
    let e = fails_at(&audit_dir);
    assert!(
        matches!(e.problem, Problem::Wiped(ref p) if p.ends_with("users.json")),
        "{e}"
    );

    let sec = common::open(data.path(), &clock);
    let first = sec
        .audit
        .query(&AuditQuery {
            kinds: vec!["log_restarted".into()],
            ..AuditQuery::default()
        })
        .expect("query");
    assert_eq!(first.records.len(), 1);
    assert_eq!(
        first.records[0].seq, 1,
        "right after the signed first record"
    );
    audit::verify(&audit_dir).expect("the new log verifies");
}
