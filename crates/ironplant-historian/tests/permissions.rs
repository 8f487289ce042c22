//! What the historian stores is private to the platform's user under a usual umask (022):
//! its directories are 0700, the chunk store, the event store and WAL segments 0600.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use ironplant_historian::{Historian, HistorianConfig};

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777
}

#[test]
fn the_historian_creates_private_directories_and_files() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("data/historian");
    let h = Historian::open(HistorianConfig::new(&dir)).expect("open");
    assert_eq!(mode(&tmp.path().join("data")), 0o700);
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("wal")), 0o700);
    assert_eq!(mode(&dir.join("chunks.redb")), 0o600);
    assert_eq!(mode(&dir.join("events.redb")), 0o600);
    let segments: Vec<_> = std::fs::read_dir(dir.join("wal"))
        .expect("wal dir")
        .map(|e| e.expect("entry").path())
        .collect();
    assert!(!segments.is_empty(), "a WAL segment exists");
    for s in &segments {
        assert_eq!(mode(s), 0o600, "{}", s.display());
    }
    drop(h);
}
