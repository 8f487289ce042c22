//! The data directory is the platform user's alone: created 0700 whatever the umask, and an
//! existing one (made by an older version, or by hand under a usual umask) is made private
//! at start, directories 0700 and files 0600, with a log line saying what changed.
//! Certificates (`*.crt`) and the audit public key (`*.pub`) are public by design and keep
//! their mode (inside a 0700 directory only the owner reaches them anyway).

use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::path::Path;

use anyhow::Context as _;

/// Creates `dir` (and missing parents) 0700.
pub fn create(dir: &Path) -> anyhow::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create data directory {}", dir.display()))
}

/// What [`make_private`] changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Tightened {
    pub dirs: usize,
    pub files: usize,
}

/// Removes group and other permissions from `dir` and everything under it (symbolic links
/// are not followed), except public-by-design files.
pub fn make_private(dir: &Path) -> anyhow::Result<Tightened> {
    let mut done = Tightened::default();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        tighten(&d, 0o700, &mut done.dirs)?;
        let entries =
            std::fs::read_dir(&d).with_context(|| format!("cannot list {}", d.display()))?;
        for entry in entries {
            let entry = entry.with_context(|| format!("cannot list {}", d.display()))?;
            let kind = entry
                .file_type()
                .with_context(|| format!("cannot stat {}", entry.path().display()))?;
            let path = entry.path();
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() && !public_by_design(&path) {
                tighten(&path, 0o600, &mut done.files)?;
            }
        }
    }
    if done != Tightened::default() {
        tracing::warn!(
            data_dir = %dir.display(),
            dirs = done.dirs,
            files = done.files,
            "made the data directory private: {} directories set to 0700 and {} files to 0600 were readable or writable by other users",
            done.dirs,
            done.files
        );
    }
    Ok(done)
}

fn public_by_design(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "crt" || e == "pub")
}

fn tighten(path: &Path, mode: u32, count: &mut usize) -> anyhow::Result<()> {
    let current = std::fs::symlink_metadata(path)
        .with_context(|| format!("cannot stat {}", path.display()))?
        .permissions()
        .mode()
        & 0o777;
    if current & 0o077 != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).with_context(
            || {
                format!(
                    "cannot make {} private (it is {current:o}); run `chmod -R go-rwx` on the data directory",
                    path.display()
                )
            },
        )?;
        *count += 1;
    }
    Ok(())
}
