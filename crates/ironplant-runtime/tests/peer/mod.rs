//! The harness of the peer scripts under tests/peers (pymodbus, pysparkplug) that talk JSON
//! lines on stdin/stdout, shared by write_path.rs and command_peers.rs.

// Each test binary uses a part of the harness.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value as Json;
use tokio::time::Instant;

/// A script under tests/peers.
pub fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/peers")
        .join(name)
}

/// Forwards the lines of a pipe to a channel, from a thread, so reads never block a test.
fn pump(pipe: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// A peer script, killed on drop, talking JSON lines on stdin/stdout.
pub struct Peer {
    child: Child,
    pub stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
    errs: mpsc::Receiver<String>,
    /// Every stdout line seen so far.
    pub seen: Vec<String>,
}

impl Peer {
    pub fn start(py: &PathBuf, script: PathBuf, args: &[&str]) -> Peer {
        let mut child = Command::new(py)
            .arg(script)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the peer script");
        let lines = pump(child.stdout.take().expect("piped stdout"));
        let errs = pump(child.stderr.take().expect("piped stderr"));
        let stdin = child.stdin.take().expect("piped stdin");
        Peer {
            child,
            stdin,
            lines,
            errs,
            seen: Vec::new(),
        }
    }

    /// The next stdout line satisfying `pred` (within 20 s), without blocking the runtime.
    pub async fn line(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match self.lines.try_recv() {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if pred(&line) {
                        return line;
                    }
                }
                Err(mpsc::TryRecvError::Empty) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err(_) => {
                    let errs: Vec<String> = self.errs.try_iter().collect();
                    panic!(
                        "no line with {what}; stdout:\n{}\nstderr:\n{}",
                        self.seen.join("\n"),
                        errs.join("\n")
                    );
                }
            }
        }
    }

    /// Sends one line (a command to the script).
    pub fn tell(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").expect("write to the peer");
        self.stdin.flush().expect("flush");
    }

    /// Sends one line and returns the JSON answer (the next line).
    pub async fn ask(&mut self, question: &str) -> Json {
        self.tell(question);
        let line = self.line(question, |_| true).await;
        let answer: Json = serde_json::from_str(&line).expect("a JSON line");
        assert!(answer.get("error").is_none(), "{question}: {answer}");
        answer
    }

    /// Takes the lines printed so far into `seen` without waiting.
    pub fn drain(&mut self) {
        self.seen.extend(self.lines.try_iter());
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
