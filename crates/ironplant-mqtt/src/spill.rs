//! A persistent session's messages beyond its memory bound, in a file: the tail of its queue
//! while the client is away or reads slower than its messages arrive, so that QoS 1/2 messages
//! already acknowledged to their publishers are not dropped when memory runs short.
//!
//! One append-only file per session (`<state dir>/spill/<SHA-256 of the client id>.q`):
//! a 16-byte header (magic, then the offset of the first record not yet taken back, u64 LE)
//! and records `[u32 LE length][u64 LE received ms][MQTT 5 PUBLISH]`. Appends are buffered
//! (64 KiB) and reach the file when the buffer fills, when records are taken back, and at each
//! save of the broker's state ([`Spill::flush`]); a crash loses at most what was buffered, the
//! same bound as the rest of the broker's state (see [`crate::persist`]). Records are taken
//! back in order, in batches, when the in-memory queue has room; once all are taken the file
//! is cut back to its header. A torn last record (power loss mid-append) is cut off on open.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::{Buf, BufMut, Bytes};

use crate::session::{decode_publish, encode_publish, Queued};

const MAGIC: &[u8; 8] = b"IPSPILL1";
const HEADER: u64 = 16;
/// Appends are written to the file once this much is buffered.
const WRITE_BUFFER: usize = 64 * 1024;
/// Bytes read from the file per read when records are taken back.
const READ_CHUNK: usize = 256 * 1024;

/// The spill file of one session (see the module docs).
#[derive(Debug)]
pub struct Spill {
    path: PathBuf,
    /// Opened on the first append (most sessions never spill).
    file: Option<File>,
    /// Records appended and not yet written to the file.
    buf: Vec<u8>,
    /// Bytes in the file (header and records written).
    written: u64,
    /// Offset of the first record in the file not yet taken back.
    read: u64,
    /// Records not yet taken back (in the file and in `buf`), and their bytes.
    count: u64,
    bytes: u64,
    /// Most bytes this spill holds; appends beyond are refused.
    max_bytes: u64,
}

/// The file name of a client's spill inside `dir` (a digest: client ids may hold any
/// character, and must not collide).
pub fn path_for(dir: &Path, client_id: &str) -> PathBuf {
    let d = ring::digest::digest(&ring::digest::SHA256, client_id.as_bytes());
    let mut name = String::with_capacity(34);
    for b in &d.as_ref()[..16] {
        name.push_str(&format!("{b:02x}"));
    }
    name.push_str(".q");
    dir.join(name)
}

impl Spill {
    /// A new, empty spill at `path` (no I/O until the first append, which starts the file
    /// afresh).
    pub fn fresh(path: PathBuf, max_bytes: u64) -> Spill {
        Spill {
            path,
            file: None,
            buf: Vec::new(),
            written: HEADER,
            read: HEADER,
            count: 0,
            bytes: 0,
            max_bytes,
        }
    }

    /// The spill at `path`: what an earlier run left there is taken up again (a file that is
    /// not a spill file, or is damaged before its last record, is an error and left alone).
    pub fn open(path: PathBuf, max_bytes: u64) -> io::Result<Spill> {
        let mut s = Spill::fresh(path, max_bytes);
        let file = match OpenOptions::new().read(true).write(true).open(&s.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(s),
            Err(e) => return Err(e),
        };
        let len = file.metadata()?.len();
        let mut header = [0u8; HEADER as usize];
        if len < HEADER {
            // Created but never written past its header: nothing spilled.
            file.set_len(0)?;
            s.file = Some(file);
            s.write_header()?;
            return Ok(s);
        }
        file.read_exact_at(&mut header, 0)?;
        if &header[..8] != MAGIC {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} is not a session spill file", s.path.display()),
            ));
        }
        let read = u64::from_le_bytes(header[8..16].try_into().unwrap_or_default());
        if !(HEADER..=len).contains(&read) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: read offset {read} outside the file", s.path.display()),
            ));
        }
        // Count the records left; a torn tail is cut off.
        let mut at = read;
        let mut len_buf = [0u8; 4];
        while at + 4 <= len {
            file.read_exact_at(&mut len_buf, at)?;
            let n = u64::from(u32::from_le_bytes(len_buf));
            if at + 4 + n > len {
                break;
            }
            at += 4 + n;
            s.count += 1;
            s.bytes += 4 + n;
        }
        if at < len {
            file.set_len(at)?;
        }
        s.read = read;
        s.written = at;
        s.file = Some(file);
        Ok(s)
    }

    /// Records not yet taken back.
    pub fn len(&self) -> u64 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Appends a message; `Ok(false)` when the spill is at its byte bound.
    pub fn push(&mut self, q: &Queued) -> io::Result<bool> {
        let start = self.buf.len();
        self.buf.put_u32_le(0);
        self.buf.put_u64_le(q.received_ms);
        encode_publish(&q.publish, &mut self.buf);
        let n = self.buf.len() - start - 4;
        let total = (n + 4) as u64;
        if self.bytes + total > self.max_bytes {
            self.buf.truncate(start);
            return Ok(false);
        }
        let n = u32::try_from(n).map_err(|_| io::Error::other("message too large to spill"))?;
        self.buf[start..start + 4].copy_from_slice(&n.to_le_bytes());
        self.count += 1;
        self.bytes += total;
        if self.buf.len() >= WRITE_BUFFER {
            self.flush()?;
        }
        Ok(true)
    }

    fn file(&mut self) -> io::Result<&File> {
        if self.file.is_none() {
            if let Some(dir) = self.path.parent() {
                crate::private_fs::create_dir(dir)?;
            }
            crate::private_fs::create_file(&self.path)?;
            let f = OpenOptions::new().read(true).write(true).open(&self.path)?;
            f.set_len(0)?;
            self.file = Some(f);
            self.written = HEADER;
            self.read = HEADER;
            self.write_header()?;
        }
        self.file
            .as_ref()
            .ok_or_else(|| io::Error::other("spill file not open"))
    }

    fn write_header(&mut self) -> io::Result<()> {
        let mut h = [0u8; HEADER as usize];
        h[..8].copy_from_slice(MAGIC);
        h[8..].copy_from_slice(&self.read.to_le_bytes());
        self.file()?.write_all_at(&h, 0)
    }

    /// Writes the buffered appends to the file.
    pub fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let at = self.written;
        let buf = std::mem::take(&mut self.buf);
        let r = self.file()?.write_all_at(&buf, at);
        match r {
            Ok(()) => {
                self.written += buf.len() as u64;
                self.buf = buf;
                self.buf.clear();
                if self.buf.capacity() > 2 * WRITE_BUFFER {
                    self.buf = Vec::new();
                }
                Ok(())
            }
            Err(e) => {
                self.buf = buf;
                Err(e)
            }
        }
    }

    /// Takes back up to `max` of the oldest records, in order. Records that cannot be read
    /// back are skipped and counted in the second value.
    pub fn take(&mut self, max: usize) -> io::Result<(Vec<Queued>, u64)> {
        let mut out = Vec::new();
        let mut damaged = 0;
        if self.count == 0 || max == 0 {
            return Ok((out, 0));
        }
        self.flush()?;
        while out.len() < max && self.read < self.written {
            let want = usize::try_from(self.written - self.read)
                .unwrap_or(usize::MAX)
                .min(READ_CHUNK);
            let mut chunk = vec![0u8; want];
            let at = self.read;
            self.file()?.read_exact_at(&mut chunk, at)?;
            let mut used = 0usize;
            while out.len() < max {
                let rest = &chunk[used..];
                if rest.len() < 4 {
                    break;
                }
                let n = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                if rest.len() < 4 + n {
                    if used == 0 {
                        // One record larger than the chunk: read exactly it.
                        let mut one = vec![0u8; 4 + n];
                        let at = self.read;
                        self.file()?.read_exact_at(&mut one, at)?;
                        chunk = one;
                        continue;
                    }
                    break;
                }
                match decode(&rest[4..4 + n]) {
                    Some(q) => out.push(q),
                    None => damaged += 1,
                }
                used += 4 + n;
                self.count -= 1;
                self.bytes -= (4 + n) as u64;
            }
            if used == 0 {
                break;
            }
            self.read += used as u64;
        }
        if self.count == 0 {
            // All taken: start the file again.
            self.read = HEADER;
            self.written = HEADER;
            self.file()?.set_len(HEADER)?;
        }
        self.write_header()?;
        Ok((out, damaged))
    }

    /// Drops the records whose topic `keep` refuses (rewrites the file); returns how many.
    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) -> io::Result<u64> {
        if self.count == 0 {
            return Ok(0);
        }
        let before = self.count;
        let (all, _) = self.take(usize::MAX)?;
        for q in all {
            if keep(q.publish.topic.as_str()) {
                self.push(&q)?;
            }
        }
        self.flush()?;
        Ok(before - self.count)
    }

    /// Deletes the file (the session ended).
    pub fn remove(mut self) {
        self.file.take();
        let _ = std::fs::remove_file(&self.path);
    }
}

fn decode(body: &[u8]) -> Option<Queued> {
    let mut b = Bytes::copy_from_slice(body);
    if b.remaining() < 8 {
        return None;
    }
    let received_ms = b.get_u64_le();
    let publish = decode_publish(&mut b).ok().flatten()?;
    Some(Queued {
        publish,
        received_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{MqttString, Publish, QoS};

    fn msg(i: u32) -> Queued {
        let mut p = Publish::new(
            MqttString::from_utf8(Bytes::from(format!("t/{}", i % 7))).expect("topic"),
            Bytes::from(i.to_le_bytes().to_vec()),
        );
        p.qos = QoS::AtLeastOnce;
        Queued {
            publish: p,
            received_ms: u64::from(i),
        }
    }

    fn ids(v: &[Queued]) -> Vec<u32> {
        v.iter()
            .map(|q| u32::from_le_bytes(q.publish.payload[..4].try_into().expect("4 bytes")))
            .collect()
    }

    #[test]
    fn takes_back_in_order_across_buffer_file_and_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = path_for(dir.path(), "client/ä");
        let mut s = Spill::open(path.clone(), u64::MAX).expect("open");
        for i in 0..20_000 {
            assert!(s.push(&msg(i)).expect("push"));
        }
        let (a, bad) = s.take(7_000).expect("take");
        assert_eq!(bad, 0);
        assert_eq!(ids(&a), (0..7_000).collect::<Vec<_>>());
        assert_eq!(a[5].received_ms, 5);
        for i in 20_000..20_100 {
            s.push(&msg(i)).expect("push");
        }
        s.flush().expect("flush");
        drop(s);
        // Another run takes up where this one stopped.
        let mut s = Spill::open(path.clone(), u64::MAX).expect("reopen");
        assert_eq!(s.len(), 13_100);
        let (b, _) = s.take(usize::MAX).expect("take");
        assert_eq!(ids(&b), (7_000..20_100).collect::<Vec<_>>());
        assert!(s.is_empty());
        assert_eq!(std::fs::metadata(&path).expect("meta").len(), HEADER);
        s.remove();
        assert!(!path.exists());
    }

    #[test]
    fn a_torn_tail_is_cut_off_and_the_bound_holds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = path_for(dir.path(), "c");
        let mut s = Spill::open(path.clone(), u64::MAX).expect("open");
        for i in 0..10 {
            s.push(&msg(i)).expect("push");
        }
        s.flush().expect("flush");
        drop(s);
        let len = std::fs::metadata(&path).expect("meta").len();
        let f = OpenOptions::new().write(true).open(&path).expect("open");
        f.set_len(len - 3).expect("cut");
        let mut s = Spill::open(path.clone(), u64::MAX).expect("reopen");
        assert_eq!(s.len(), 9);
        let (v, _) = s.take(100).expect("take");
        assert_eq!(ids(&v), (0..9).collect::<Vec<_>>());

        let mut small = Spill::open(dir.path().join("small.q"), 200).expect("open");
        let mut kept = 0;
        while small.push(&msg(kept)).expect("push") {
            kept += 1;
        }
        assert!(kept > 0 && small.bytes <= 200);
        let (v, _) = small.take(usize::MAX).expect("take");
        assert_eq!(v.len() as u32, kept);
    }

    #[test]
    fn retain_drops_refused_topics_and_keeps_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = Spill::open(path_for(dir.path(), "c"), u64::MAX).expect("open");
        for i in 0..70 {
            s.push(&msg(i)).expect("push");
        }
        let gone = s.retain(|t| t != "t/3").expect("retain");
        assert_eq!(gone, 10);
        let (v, _) = s.take(usize::MAX).expect("take");
        assert_eq!(ids(&v), (0..70).filter(|i| i % 7 != 3).collect::<Vec<_>>());
    }

    #[test]
    fn a_foreign_file_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.q");
        std::fs::write(&path, b"definitely not a spill file").expect("write");
        let e = Spill::open(path, u64::MAX).expect_err("refused");
        assert!(e.to_string().contains("not a session spill file"), "{e}");
    }
}
