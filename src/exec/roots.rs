//! Confining client-chosen paths to the worker's roots (restore root, mount root),
//! and checking that FUSE mounts can work at all.

use std::path::{Path, PathBuf};

use crate::command::SubPath;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RootError {
    #[error("{0} does not exist; create it or configure another root")]
    MissingRoot(String),
    #[error("{0} leaves the configured root through a symbolic link")]
    Escapes(String),
    #[error("cannot create {path}: {reason}")]
    Create { path: String, reason: String },
}

/// `<root>/<sub>`, created when missing, and proven to stay inside `root` after
/// every symbolic link on the way is followed.
pub fn resolve_below(root: &Path, sub: &SubPath) -> Result<PathBuf, RootError> {
    let root = root
        .canonicalize()
        .map_err(|_| RootError::MissingRoot(root.display().to_string()))?;
    let target = root.join(sub.as_str());
    // Check every existing ancestor before creating anything.
    let mut probe = root.clone();
    for part in Path::new(sub.as_str()).components() {
        probe.push(part);
        match probe.canonicalize() {
            Ok(real) if !real.starts_with(&root) => {
                return Err(RootError::Escapes(sub.as_str().to_string()))
            }
            Ok(_) => {}
            Err(_) if probe.symlink_metadata().is_ok() => {
                // A dangling symbolic link: where it points is not ours to create.
                return Err(RootError::Escapes(sub.as_str().to_string()));
            }
            Err(_) => break,
        }
    }
    std::fs::create_dir_all(&target).map_err(|e| RootError::Create {
        path: sub.as_str().to_string(),
        reason: e.to_string(),
    })?;
    let real = target
        .canonicalize()
        .map_err(|_| RootError::Escapes(sub.as_str().to_string()))?;
    if !real.starts_with(&root) {
        return Err(RootError::Escapes(sub.as_str().to_string()));
    }
    Ok(real)
}

/// `<root>/<sub>` for an existing path (unmounting), with the same confinement.
pub fn existing_below(root: &Path, sub: &SubPath) -> Result<PathBuf, RootError> {
    let root = root
        .canonicalize()
        .map_err(|_| RootError::MissingRoot(root.display().to_string()))?;
    let target = root.join(sub.as_str());
    let real = target.canonicalize().map_err(|_| RootError::Create {
        path: sub.as_str().to_string(),
        reason: "does not exist".into(),
    })?;
    if !real.starts_with(&root) {
        return Err(RootError::Escapes(sub.as_str().to_string()));
    }
    Ok(real)
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

    #[test]
    fn paths_stay_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("restore");
        std::fs::create_dir(&root).unwrap();
        let outside = dir.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("escape")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("nowhere"), root.join("dangling")).unwrap();

        let ok = resolve_below(&root, &SubPath::parse("a/b").unwrap()).unwrap();
        assert!(ok.ends_with("restore/a/b") && ok.is_dir());
        for bad in ["escape", "escape/deeper", "dangling/x"] {
            let err = resolve_below(&root, &SubPath::parse(bad).unwrap()).unwrap_err();
            assert!(matches!(err, RootError::Escapes(_)), "{bad}: {err}");
        }
        assert!(
            !outside.join("deeper").exists(),
            "something was created outside"
        );
        assert!(!dir.path().join("nowhere").exists());
        assert!(matches!(
            resolve_below(&dir.path().join("missing"), &SubPath::parse("x").unwrap()),
            Err(RootError::MissingRoot(_))
        ));
    }
}
