//! Crash safety with real SIGKILLs: a child process ingests and reports what was acknowledged;
//! the parent kills it at random moments, many times; then every acknowledged sample must be
//! stored exactly once, and nothing may be stored twice.
//!
//! The child is this test binary itself, run with `--exact crash_child` and IRONPLANT_CRASH_DIR.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ironplant_core::{Quality, TagPath, Timestamp, Value};
use ironplant_historian::{Historian, HistorianConfig};

const TAGS: usize = 5;
const T0: i64 = 1_700_000_000_000_000;

fn config(dir: &std::path::Path) -> HistorianConfig {
    let mut c = HistorianConfig::new(dir);
    c.flush_samples = 3_000; // checkpoints happen while we kill
    c.segment_bytes = 32 << 10; // and segments roll over
    c
}

fn tag_paths() -> Vec<TagPath> {
    (0..TAGS)
        .map(|i| TagPath::parse(&format!("crash/site/t{i}")).expect("path"))
        .collect()
}

/// Child mode: ingest forever, printing `ACK <tag> <seq>` after each durable batch.
#[test]
fn crash_child() {
    let Some(dir) = std::env::var_os("IRONPLANT_CRASH_DIR") else {
        return;
    };
    let h = Historian::open(config(std::path::Path::new(&dir))).expect("open");
    let paths = tag_paths();
    let ids = h.register(&paths).expect("register");
    let names: Vec<String> = paths.iter().map(|p| p.to_string()).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    // Continue after whatever is stored (acknowledged or not), so every value stays unique.
    let mut next: Vec<i64> = h
        .last(&refs)
        .into_iter()
        .map(|p| match p.map(|p| p.value) {
            Some(Value::Int(v)) => v + 1,
            _ => 0,
        })
        .collect();
    let mut out = std::io::stdout();
    writeln!(out, "READY").expect("stdout");
    out.flush().expect("flush");
    loop {
        let mut batch = Vec::new();
        for (t, id) in ids.iter().enumerate() {
            for _ in 0..40 {
                batch.push((*id, T0 + next[t], Value::Int(next[t]), Quality::GOOD));
                next[t] += 1;
            }
        }
        h.submit(batch)
            .expect("submit")
            .wait_blocking()
            .expect("durable");
        let mut line = String::new();
        for (t, n) in next.iter().enumerate() {
            line.push_str(&format!("ACK {t} {}\n", n - 1));
        }
        out.write_all(line.as_bytes()).expect("stdout");
        out.flush().expect("flush");
    }
}

#[test]
fn sigkill_loop_loses_and_duplicates_nothing_acknowledged() {
    if std::env::var_os("IRONPLANT_CRASH_DIR").is_some() {
        return;
    }
    let rounds: u32 = std::env::var("IRONPLANT_CRASH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(50);
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("test binary");
    let mut acked: HashMap<usize, i64> = HashMap::new();
    let mut rng = 0x2545_F491_4F6C_DD1Du64 ^ u64::from(std::process::id());
    let mut kills = 0;
    for round in 0..rounds {
        let mut child = Command::new(&exe)
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env("IRONPLANT_CRASH_DIR", dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // libtest prints its own lines first; wait for ours.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("child ready")
            .contains("READY")
        {}
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let run_for = Duration::from_millis(20 + rng % 300);
        let start = Instant::now();
        while start.elapsed() < run_for {
            std::thread::sleep(Duration::from_millis(5));
        }
        child.kill().expect("SIGKILL"); // Child::kill sends SIGKILL on Unix
        let status = child.wait().expect("wait");
        assert!(
            !status.success(),
            "round {round}: the child must die by the signal"
        );
        kills += 1;
        reader.join().expect("reader");
        // Everything printed before death was acknowledged.
        for line in rx.try_iter() {
            let mut it = line.split_whitespace();
            if it.next() == Some("ACK") {
                let tag: usize = it.next().and_then(|t| t.parse().ok()).expect("tag");
                let seq: i64 = it.next().and_then(|s| s.parse().ok()).expect("seq");
                let e = acked.entry(tag).or_insert(-1);
                *e = (*e).max(seq);
            }
        }
    }
    assert_eq!(kills, rounds);
    // Verify: every acknowledged value present once; no value anywhere twice.
    let h = Historian::open(config(dir.path())).expect("reopen after the last kill");
    let mut total = 0;
    for (t, p) in tag_paths().iter().enumerate() {
        let mut values = Vec::new();
        let mut from = Timestamp(0);
        loop {
            let page = h
                .raw(p.as_str(), from, Timestamp(i64::MAX), 100_000)
                .expect("raw");
            assert!(page.warnings.is_empty(), "{:?}", page.warnings);
            values.extend(page.points.into_iter().map(|pt| pt.value));
            match page.next {
                Some(n) => from = n,
                None => break,
            }
        }
        let mut seen = HashSet::new();
        for v in &values {
            let Value::Int(v) = v else {
                panic!("unexpected value {v:?}")
            };
            assert!(seen.insert(*v), "tag {t}: value {v} stored twice");
        }
        let max_acked = acked.get(&t).copied().unwrap_or(-1);
        for seq in 0..=max_acked {
            assert!(
                seen.contains(&seq),
                "tag {t}: acknowledged sample {seq} lost (acked up to {max_acked})"
            );
        }
        total += max_acked + 1;
    }
    assert!(
        total > 1000,
        "the children acknowledged too little ({total}) for the test to mean anything"
    );
    eprintln!("{kills} SIGKILLs, {total} acknowledged samples, all present exactly once");
    h.close();
}
