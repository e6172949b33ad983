//! Where the drill restores to and how it compares: a scratch directory below the
//! restore root, made and read through a `cap-std` handle and removed on drop, and
//! the SHA-256 comparison of each restored file with its live source.
//!
//! May import: `domain`, `jobs` (the task context), the sibling `roots`.

use std::path::Path;

use sha2::{Digest, Sha256};

use super::sample::Entry;
use crate::domain::SubPath;
use crate::exec::roots;
use crate::jobs::{Stream, TaskContext};

/// The drill's scratch directory below the restore root, removed (without
/// following links) when dropped.
pub(super) struct Scratch {
    root: cap_std::fs::Dir,
    name: String,
    pub(super) confined: roots::Confined,
}

impl Scratch {
    pub(super) fn make(restore_root: &Path) -> Result<Scratch, String> {
        let name = format!(".verify-{}", uuid::Uuid::now_v7().simple());
        let sub = SubPath::parse(&name).map_err(|e| e.to_string())?;
        std::fs::create_dir_all(restore_root).map_err(|e| e.to_string())?;
        let root = cap_std::fs::Dir::open_ambient_dir(restore_root, cap_std::ambient_authority())
            .map_err(|e| e.to_string())?;
        let confined = roots::resolve_below(restore_root, &sub).map_err(|e| e.to_string())?;
        Ok(Scratch {
            root,
            name,
            confined,
        })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(e) = self.root.remove_dir_all(&self.name) {
            tracing::warn!(error = %e, dir = %self.name, "could not remove the verify scratch directory");
        }
    }
}

/// What comparing the restored sample with the live sources found.
#[derive(Default)]
pub(super) struct Compared {
    pub(super) matched: usize,
    /// Sources changed since the backup (not comparable).
    pub(super) changed: usize,
    pub(super) mismatches: Vec<String>,
    pub(super) missing: Vec<String>,
    pub(super) bytes: u64,
}

/// Compares each restored file with its live source by SHA-256, where the source
/// has not changed since the backup. Restored files are read through the scratch
/// directory's handle: a restored link cannot lead outside.
pub(super) fn compare(sample: &[Entry], dir: &Scratch, ctx: &TaskContext) -> Compared {
    let mut c = Compared::default();
    let opened = dir.confined.reopen().ok();
    let scratch = opened.as_ref().and_then(|p| p.dir());
    for e in sample {
        let restored = scratch.and_then(|d| d.open(&e.path).ok());
        let Some(rmeta) = restored.as_ref().and_then(|f| f.metadata().ok()) else {
            c.missing.push(e.path.clone());
            continue;
        };
        c.bytes += rmeta.len();
        let source = Path::new("/").join(&e.path);
        let same_as_backup = std::fs::metadata(&source).ok().is_some_and(|m| {
            m.len() == e.size
                && match (file_mtime_us(&m), e.mtime_us) {
                    (Some(a), Some(b)) => (a - b).abs() <= 1_000,
                    _ => false,
                }
        });
        if !same_as_backup {
            c.changed += 1;
            continue;
        }
        let restored = restored.map(|f| f.into_std());
        let source_file = std::fs::File::open(&source);
        match (
            restored
                .map(sha256)
                .unwrap_or_else(|| Err(std::io::ErrorKind::NotFound.into())),
            source_file.and_then(sha256),
        ) {
            (Ok(a), Ok(b)) if a == b => c.matched += 1,
            _ => {
                ctx.line(Stream::Stderr, &format!("MISMATCH {}", e.path));
                c.mismatches.push(e.path.clone());
            }
        }
    }
    c
}

fn file_mtime_us(meta: &std::fs::Metadata) -> Option<i64> {
    let t = meta.modified().ok()?;
    let d = t.duration_since(std::time::UNIX_EPOCH).ok()?;
    i64::try_from(d.as_micros()).ok()
}

fn sha256(mut f: impl std::io::Read) -> std::io::Result<[u8; 32]> {
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h)?;
    Ok(h.finalize().into())
}
