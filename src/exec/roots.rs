//! Confining client-chosen paths to the worker's roots (restore root, mount root),
//! and checking that FUSE mounts can work at all.
//!
//! A client names a directory as a [`SubPath`] below a root. It is resolved one
//! component at a time through `cap-std` directory handles: a component that is a
//! symbolic link is refused (even one pointing inside the root), and a lookup can
//! never leave the directory it starts from, so a link swapped in between two
//! checks still cannot lead outside. The check runs when the request is accepted
//! *and again when the job starts* ([`Confined::reopen`]): a queued job's
//! destination may have changed while it waited. For an extraction the worker then
//! hands borgmatic the path of the directory it holds open ([`Pinned::arg_path`]),
//! so even a rename after the check cannot redirect the write.
//!
//! Imports `domain` value types only.

use std::path::{Path, PathBuf};

use cap_std::fs::Dir;

use crate::domain::SubPath;

/// Why a client's directory is refused; each message is safe to show a client.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RootError {
    /// The configured root itself is missing.
    #[error("{0} does not exist; create it or configure another root")]
    MissingRoot(String),
    /// The path would leave the root or pass through a symbolic link.
    #[error(
        "{0} leaves the configured root or passes through a symbolic link; refused (confinement)"
    )]
    Escapes(String),
    /// A file to be written exists already (it is never overwritten).
    #[error("{0} exists already; refused (a file is never overwritten)")]
    Exists(String),
    /// The directory could not be created below the root.
    #[error("cannot create {path}: {reason}")]
    Create {
        /// The directory that was to be created.
        path: String,
        /// The operating system's error.
        reason: String,
    },
}

/// A directory below a root, named by a client and checked; re-checked with
/// [`Confined::reopen`] right before it is used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confined {
    /// The root, canonical (the administrator's root may itself be a link).
    root: PathBuf,
    /// `None`: the root itself.
    sub: Option<SubPath>,
    /// `<root>/<sub>`.
    path: PathBuf,
    /// Must exist already (unmounting); otherwise missing directories are made.
    existing: bool,
}

/// A confined directory held open while it is used.
#[derive(Debug)]
pub struct Pinned {
    dir: Option<Dir>,
    path: PathBuf,
}

impl Pinned {
    /// The open directory (none for an existing mount point, which is not opened:
    /// opening a FUSE mount would call into it).
    pub fn dir(&self) -> Option<&Dir> {
        self.dir.as_ref()
    }

    /// A path naming exactly the directory held open, `/proc/<pid>/fd/<n>`, for as
    /// long as this value lives: following it reaches the checked directory whatever
    /// happened to its ancestors since. The plain path where `/proc` is missing.
    pub fn arg_path(&self) -> PathBuf {
        match &self.dir {
            Some(d) => fd_path(d).unwrap_or_else(|| self.path.clone()),
            None => self.path.clone(),
        }
    }

    /// Creates the file `name` (one plain component) in the directory held open,
    /// only if nothing of that name exists, not even a symbolic link: the file is
    /// new, and it is the worker's. [`RootError::Exists`] when the name is taken.
    pub fn create_new(&self, name: &str) -> Result<cap_std::fs::File, RootError> {
        let dir = self.dir.as_ref().ok_or_else(|| RootError::Create {
            path: name.to_string(),
            reason: "its directory is not open".into(),
        })?;
        let mut opts = cap_std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        dir.open_with(name, &opts).map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => RootError::Exists(name.to_string()),
            _ => RootError::Create {
                path: name.to_string(),
                reason: e.to_string(),
            },
        })
    }

    /// [`RootError::Exists`] when anything named `name` (a file, a directory, a
    /// symbolic link, even a dangling one) is in the directory held open.
    pub fn absent(&self, name: &str) -> Result<(), RootError> {
        match self.dir.as_ref().map(|d| d.symlink_metadata(name)) {
            Some(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Some(Err(e)) => Err(RootError::Create {
                path: name.to_string(),
                reason: e.to_string(),
            }),
            _ => Err(RootError::Exists(name.to_string())),
        }
    }

    /// Removes the file `name` from the directory held open (what a failed job
    /// made); errors are ignored, the file may be gone.
    pub fn remove(&self, name: &str) {
        if let Some(d) = &self.dir {
            let _ = d.remove_file(name);
        }
    }
}

/// `/proc/<pid>/fd/<n>`: a path naming exactly the open file or directory `f`, for
/// as long as it stays open; `None` where `/proc` is missing.
pub fn fd_path(f: &impl std::os::fd::AsRawFd) -> Option<PathBuf> {
    Path::new("/proc/self/fd")
        .is_dir()
        .then(|| PathBuf::from(format!("/proc/{}/fd/{}", std::process::id(), f.as_raw_fd())))
}

fn open_root(root: &Path) -> Result<(PathBuf, Dir), RootError> {
    let missing = || RootError::MissingRoot(root.display().to_string());
    let real = root.canonicalize().map_err(|_| missing())?;
    let dir = Dir::open_ambient_dir(&real, cap_std::ambient_authority()).map_err(|_| missing())?;
    Ok((real, dir))
}

impl Confined {
    /// `<root>/<sub>` as a path (for answers and logs; use [`Confined::reopen`] to
    /// reach it).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Walks from the root to the directory without following any symbolic link,
    /// creating what is missing (unless it must exist), and holds it open.
    pub fn reopen(&self) -> Result<Pinned, RootError> {
        let (_, mut dir) = open_root(&self.root)?;
        let sub = self.sub.as_ref().map_or("", SubPath::as_str);
        let escapes = || RootError::Escapes(sub.to_string());
        let create_err = |e: std::io::Error| RootError::Create {
            path: sub.to_string(),
            reason: e.to_string(),
        };
        let parts: Vec<&str> = if sub.is_empty() {
            Vec::new()
        } else {
            sub.split('/').collect()
        };
        for (i, part) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            let meta = match dir.symlink_metadata(part) {
                Ok(m) => Some(m),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => return Err(create_err(e)),
            };
            match meta {
                Some(m) if m.file_type().is_symlink() => return Err(escapes()),
                Some(m) if !m.is_dir() => {
                    return Err(create_err(std::io::Error::other("not a directory")))
                }
                Some(_) => {}
                None if self.existing => {
                    return Err(create_err(std::io::Error::other("does not exist")))
                }
                None => match dir.create_dir(part) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        // Made meanwhile by someone else: look again.
                        if dir
                            .symlink_metadata(part)
                            .map(|m| m.file_type().is_symlink())
                            .unwrap_or(true)
                        {
                            return Err(escapes());
                        }
                    }
                    Err(e) => return Err(create_err(e)),
                },
            }
            if last && self.existing {
                // A mount point is checked, not opened.
                return Ok(Pinned {
                    dir: None,
                    path: self.path.clone(),
                });
            }
            // cap-std never resolves outside `dir`: a link swapped in since the
            // check above cannot lead out of the root.
            // (cap-std reports an attempt to leave as PermissionDenied.)
            dir = dir.open_dir(part).map_err(|e| {
                if e.kind() == std::io::ErrorKind::PermissionDenied {
                    escapes()
                } else {
                    create_err(e)
                }
            })?;
        }
        Ok(Pinned {
            dir: Some(dir),
            path: self.path.clone(),
        })
    }
}

fn confine(root: &Path, sub: Option<&SubPath>, existing: bool) -> Result<Confined, RootError> {
    let (real, _) = open_root(root)?;
    let c = Confined {
        path: sub.map_or_else(|| real.clone(), |s| real.join(s.as_str())),
        root: real,
        sub: sub.cloned(),
        existing,
    };
    c.reopen()?;
    Ok(c)
}

/// `<root>/<sub>`, created when missing, with no symbolic link on the way.
pub fn resolve_below(root: &Path, sub: &SubPath) -> Result<Confined, RootError> {
    confine(root, Some(sub), false)
}

/// The root itself, held open like any directory below it (a file written
/// directly into the root).
pub fn root_itself(root: &Path) -> Result<Confined, RootError> {
    confine(root, None, false)
}

/// The root as the worker names it in answers: canonical (the configured root may
/// itself be a link); `None` when it does not exist.
pub fn canonical_root(root: &Path) -> Option<PathBuf> {
    root.canonicalize().ok()
}

/// `<root>/<sub>` for an existing path (unmounting), with the same confinement.
pub fn existing_below(root: &Path, sub: &SubPath) -> Result<Confined, RootError> {
    confine(root, Some(sub), true)
}

/// Why FUSE mounts cannot work here, if they cannot.
pub fn fuse_unavailable() -> Option<String> {
    if !Path::new("/dev/fuse").exists() {
        return Some("/dev/fuse is missing (in a container: --device /dev/fuse and the SYS_ADMIN capability)".into());
    }
    let found = std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path)
            .any(|d| d.join("fusermount").is_file() || d.join("fusermount3").is_file())
    });
    if !found {
        return Some("fusermount is not installed (Debian: fuse3)".into());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(s: &str) -> SubPath {
        SubPath::parse(s).unwrap()
    }

    #[test]
    fn paths_stay_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("restore");
        std::fs::create_dir(&root).unwrap();
        let outside = dir.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("escape")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("nowhere"), root.join("dangling")).unwrap();
        std::fs::create_dir(root.join("inside")).unwrap();
        std::os::unix::fs::symlink(root.join("inside"), root.join("inner-link")).unwrap();

        let ok = resolve_below(&root, &sub("a/b")).unwrap();
        assert!(ok.path().ends_with("restore/a/b") && ok.path().is_dir());
        for bad in [
            "escape",
            "escape/deeper",
            "dangling/x",
            "inner-link",
            "inner-link/x",
        ] {
            let err = resolve_below(&root, &sub(bad)).unwrap_err();
            assert!(matches!(err, RootError::Escapes(_)), "{bad}: {err}");
        }
        assert!(
            !outside.join("deeper").exists(),
            "something was created outside"
        );
        assert!(!dir.path().join("nowhere").exists());
        assert!(matches!(
            resolve_below(&dir.path().join("missing"), &sub("x")),
            Err(RootError::MissingRoot(_))
        ));
        assert!(matches!(
            existing_below(&root, &sub("not/there")),
            Err(RootError::Create { .. })
        ));
        assert!(
            !root.join("not").exists(),
            "existing_below created a directory"
        );
    }

    #[test]
    fn a_parent_swapped_for_a_link_after_acceptance_is_refused_at_use() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("restore");
        std::fs::create_dir(&root).unwrap();
        let outside = dir.path().join("outside");
        std::fs::create_dir(&outside).unwrap();

        let accepted = resolve_below(&root, &sub("a/b")).unwrap();
        std::fs::remove_dir_all(root.join("a")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("a")).unwrap();
        assert!(matches!(accepted.reopen(), Err(RootError::Escapes(_))));
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
    }

    #[test]
    fn a_new_file_is_made_only_where_nothing_of_its_name_exists() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("restore");
        std::fs::create_dir(&root).unwrap();
        let outside = dir.path().join("outside.tar");
        std::os::unix::fs::symlink(&outside, root.join("link.tar")).unwrap();
        std::fs::write(root.join("there.tar"), "old").unwrap();
        let pinned = root_itself(&root).unwrap().reopen().unwrap();
        for taken in ["link.tar", "there.tar"] {
            assert_eq!(pinned.absent(taken), Err(RootError::Exists(taken.into())));
            assert!(matches!(
                pinned.create_new(taken),
                Err(RootError::Exists(_))
            ));
        }
        assert!(!outside.exists(), "a dangling link was followed");
        assert_eq!(
            std::fs::read_to_string(root.join("there.tar")).unwrap(),
            "old"
        );
        pinned.absent("new.tar").unwrap();
        let f = pinned.create_new("new.tar").unwrap();
        std::fs::write(fd_path(&f).unwrap(), "tar").unwrap();
        assert_eq!(
            std::fs::read_to_string(root.join("new.tar")).unwrap(),
            "tar"
        );
        pinned.remove("new.tar");
        assert!(!root.join("new.tar").exists());
    }

    #[test]
    fn the_pinned_path_reaches_the_checked_directory_after_a_rename() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("restore");
        std::fs::create_dir(&root).unwrap();
        let pinned = resolve_below(&root, &sub("a/b")).unwrap().reopen().unwrap();
        std::fs::rename(root.join("a"), root.join("moved")).unwrap();
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::write(pinned.arg_path().join("f"), "x").unwrap();
        assert!(root.join("moved/b/f").is_file());
        assert!(!root.join("a/b/f").exists());
    }
}
