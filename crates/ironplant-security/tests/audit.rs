//! The audit chain: `verify` names the record that was edited, removed, inserted or moved;
//! a rewritten chain fails at the signatures; queries filter and page.

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

/// A log of 20 command records (plus a checkpoint after every 5 records).
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
    // 20 records and a checkpoint after each 5 (the checkpoint counts as a record too).
    assert_eq!(report.records, 24);
    assert_eq!(report.checkpoints, 4);
    assert_eq!(report.last_checkpoint, Some(23));
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

/// An attacker without the key edits record 7 and recomputes every later `prev`, so the
/// chain is consistent again: the next signed checkpoint no longer fits.
#[test]
fn a_rewritten_chain_fails_at_the_signature() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, path) = build(dir.path());
    let mut l = lines(&path);
    l[7] = l[7].replacen("\"value\":\"107\"", "\"value\":\"999\"", 1);
    for i in 8..l.len() {
        let prev = sha256_hex(l[i - 1].as_bytes());
        let mut v: serde_json::Value = serde_json::from_str(&l[i]).expect("json");
        v["prev"] = serde_json::Value::String(prev);
        l[i] = serde_json::to_string(&v).expect("json");
    }
    write_lines(&path, &l);
    let e = fails_at(dir.path());
    // Checkpoints sit at 5, 11, 17, 23: the first after record 7 is 11.
    assert_eq!((e.index, e.problem), (11, Problem::BadCheckpoint));

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
