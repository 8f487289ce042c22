//! What the broker and the bridge keep on disk (retained messages, sessions, queued messages)
//! is private to the platform's user under a usual umask (022): directories 0700, files 0600.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use ironplant_mqtt::bridge::queue::DiskQueue;
use ironplant_mqtt::persist::Store;

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777
}

#[test]
fn broker_state_and_bridge_queues_are_private() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let state = tmp.path().join("data/mqtt/state.redb");
    let store = Store::open(&state).expect("open the broker's store");
    assert_eq!(mode(&tmp.path().join("data")), 0o700);
    assert_eq!(mode(&tmp.path().join("data/mqtt")), 0o700);
    assert_eq!(mode(&state), 0o600);
    drop(store);
    // Reopening an existing store still works (the file was created empty, then by redb).
    Store::open(&state).expect("reopen");

    let queue = tmp.path().join("data/bridge/uplink/queue.redb");
    let q = DiskQueue::open(&queue).expect("open the bridge queue");
    assert_eq!(mode(&tmp.path().join("data/bridge")), 0o700);
    assert_eq!(mode(&tmp.path().join("data/bridge/uplink")), 0o700);
    assert_eq!(mode(&queue), 0o600);
    drop(q);
    DiskQueue::open(&queue).expect("reopen");
}
