//! After `archive/extract`: did every file get its owner and mode back?
//!
//! borg 1.2 and 1.4 ignore a failed `chown` during extract (`restore_attrs`:
//! `except OSError: pass`), so a worker without `CAP_CHOWN` restores Nextcloud's
//! `33:33` files as `0:0` and says nothing. The worker therefore compares what it
//! extracted with the archive's own listing (`borgmatic list --json`: `uid`, `gid`,
//! `user`, `group`, `mode` per item) and reports every difference.
//!
//! Imports `domain` value types only.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path};

use serde_json::{json, Value};

use crate::domain::ArchivePath;

/// Paths kept in the result; the counts cover all.
pub const KEEP_PATHS: usize = 20;

/// One archive item's expected attributes.
#[derive(Debug, Clone, PartialEq)]
struct Item {
    path: String,
    kind: char,
    uid: u32,
    gid: u32,
    user: String,
    group: String,
    /// Permission bits incl. setuid/setgid/sticky.
    mode: u32,
}

/// The outcome of the comparison.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Unrestored {
    /// Extracted files compared with the archive's listing.
    pub checked: u64,
    /// Files with any difference (owner, mode or both).
    pub files: u64,
    /// Files whose owner (uid or gid) did not come back.
    pub owners: u64,
    /// Files whose mode did not come back.
    pub modes: u64,
    first: Vec<Value>,
}

impl Unrestored {
    /// Whether any owner or mode did not come back (the extract is then `partial`).
    pub fn any(&self) -> bool {
        self.owners + self.modes > 0
    }

    /// The sentence a user reads, when something was not restored.
    pub fn reason(&self) -> Option<String> {
        self.any().then(|| {
            format!(
                "extracted, but {} file(s) did not get their owner and {} their mode back \
                 (the worker lacks CAP_CHOWN/CAP_FOWNER, or the destination's file system \
                 refuses them)",
                self.owners, self.modes
            )
        })
    }

    /// The result fields: `partial`, `checked_files`, `unrestored_files`, `unrestored_owners`,
    /// `unrestored_modes`, `unrestored` (first paths).
    pub fn fields(&self) -> serde_json::Map<String, Value> {
        let mut m = serde_json::Map::new();
        m.insert("partial".into(), json!(self.any()));
        m.insert("checked_files".into(), json!(self.checked));
        m.insert("unrestored_files".into(), json!(self.files));
        m.insert("unrestored_owners".into(), json!(self.owners));
        m.insert("unrestored_modes".into(), json!(self.modes));
        m.insert("unrestored".into(), json!(self.first));
        m
    }
}

/// Compares the extracted tree below `destination` with the listing (borgmatic
/// `list --json` stdout, with or without `--log-json` wrapping). Only items inside
/// `paths` (all when empty) that exist after the extract are compared.
pub fn compare(destination: &Path, paths: &[ArchivePath], listing: &[u8]) -> Unrestored {
    let mut out = Unrestored::default();
    let mut names = Names::default();
    for item in String::from_utf8_lossy(listing)
        .lines()
        .filter_map(parse_item)
    {
        if !selected(&item.path, paths) {
            continue;
        }
        let rel = Path::new(&item.path);
        if !rel.components().all(|c| matches!(c, Component::Normal(_))) {
            continue;
        }
        let Ok(meta) = std::fs::symlink_metadata(destination.join(rel)) else {
            continue;
        };
        out.checked += 1;
        let owner_ok = (meta.uid() == item.uid || Some(meta.uid()) == names.uid(&item.user))
            && (meta.gid() == item.gid || Some(meta.gid()) == names.gid(&item.group));
        // A symlink's own mode is not settable on Linux.
        let mode_ok = item.kind == 'l' || meta.mode() & 0o7777 == item.mode;
        if !owner_ok {
            out.owners += 1;
        }
        if !mode_ok {
            out.modes += 1;
        }
        if !owner_ok || !mode_ok {
            out.files += 1;
        }
        if (!owner_ok || !mode_ok) && out.first.len() < KEEP_PATHS {
            out.first.push(json!({
                "path": item.path,
                "owner": format!("{}:{}", meta.uid(), meta.gid()),
                "expected_owner": format!("{}:{}", item.uid, item.gid),
                "mode": format!("{:04o}", meta.mode() & 0o7777),
                "expected_mode": format!("{:04o}", item.mode),
            }));
        }
    }
    out
}

fn selected(path: &str, paths: &[ArchivePath]) -> bool {
    paths.is_empty()
        || paths.iter().any(|p| {
            let p = p.as_str().trim_end_matches('/');
            path == p || path.strip_prefix(p).is_some_and(|r| r.starts_with('/'))
        })
}

/// One listing line: borg's item JSON, bare or as a `--log-json` record's message.
fn parse_item(line: &str) -> Option<Item> {
    let v: Value = serde_json::from_str(line).ok()?;
    let v = if v.get("path").is_some() {
        v
    } else {
        serde_json::from_str(v.get("message")?.as_str()?).ok()?
    };
    let mode_text = v.get("mode")?.as_str()?;
    Some(Item {
        path: v.get("path")?.as_str()?.to_string(),
        kind: mode_text.chars().next()?,
        uid: u32::try_from(v.get("uid")?.as_i64()?).ok()?,
        gid: u32::try_from(v.get("gid")?.as_i64()?).ok()?,
        user: v.get("user").and_then(Value::as_str).unwrap_or("").into(),
        group: v.get("group").and_then(Value::as_str).unwrap_or("").into(),
        mode: parse_mode(mode_text)?,
    })
}

/// `drwxr-s--T` → `0o2750 | sticky`… : ls-style text to permission bits.
fn parse_mode(text: &str) -> Option<u32> {
    let c: Vec<char> = text.chars().collect();
    if c.len() != 10 {
        return None;
    }
    let mut mode = 0u32;
    // (position, read/write/exec bit, special bit set by s/t)
    for (i, shift, special) in [(1, 6, 0o4000), (4, 3, 0o2000), (7, 0, 0o1000)] {
        if c[i] == 'r' {
            mode |= 4 << shift;
        }
        if c[i + 1] == 'w' {
            mode |= 2 << shift;
        }
        match c[i + 2] {
            'x' => mode |= 1 << shift,
            's' | 't' => mode |= (1 << shift) | special,
            'S' | 'T' => mode |= special,
            _ => {}
        }
    }
    Some(mode)
}

/// Local ids of the archive's user and group names: borg (without
/// `--numeric-ids`) restores by name when the name exists here. Cached, since
/// each lookup reads the passwd database.
#[derive(Default)]
struct Names {
    users: HashMap<String, Option<u32>>,
    groups: HashMap<String, Option<u32>>,
}

impl Names {
    fn uid(&mut self, user: &str) -> Option<u32> {
        if user.is_empty() {
            return None;
        }
        *self.users.entry(user.to_string()).or_insert_with(|| {
            nix::unistd::User::from_name(user)
                .ok()
                .flatten()
                .map(|u| u.uid.as_raw())
        })
    }

    fn gid(&mut self, group: &str) -> Option<u32> {
        if group.is_empty() {
            return None;
        }
        *self.groups.entry(group.to_string()).or_insert_with(|| {
            nix::unistd::Group::from_name(group)
                .ok()
                .flatten()
                .map(|g| g.gid.as_raw())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn modes_parse_like_ls() {
        assert_eq!(parse_mode("-rw-r-----"), Some(0o640));
        assert_eq!(parse_mode("drwxr-x---"), Some(0o750));
        assert_eq!(parse_mode("-rwsr-xr-x"), Some(0o4755));
        assert_eq!(parse_mode("drwxrwsrwT"), Some(0o3776));
        assert_eq!(parse_mode("lrwxrwxrwx"), Some(0o777));
        assert_eq!(parse_mode("bad"), None);
    }

    fn line(path: &str, mode: &str, uid: u32) -> String {
        let item = json!({"type": &mode[..1], "mode": mode, "user": "", "group": "",
                          "uid": uid, "gid": uid, "path": path});
        // As borgmatic --log-json wraps it.
        json!({"type": "log_message", "message": item.to_string(), "levelname": "ANSWER"})
            .to_string()
    }

    #[test]
    fn differences_are_counted_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let me = nix::unistd::getuid().as_raw();
        std::fs::create_dir_all(dir.path().join("s/sub")).unwrap();
        std::fs::write(dir.path().join("s/a"), "a").unwrap();
        std::fs::write(dir.path().join("s/sub/b"), "b").unwrap();
        std::fs::set_permissions(
            dir.path().join("s/a"),
            std::fs::Permissions::from_mode(0o640),
        )
        .unwrap();
        std::fs::set_permissions(
            dir.path().join("s/sub/b"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        let other = me + 1000;
        let listing = [
            line("s/a", "-rw-r-----", me),        // as expected
            line("s/sub/b", "-rw-r-----", other), // owner and mode differ
            line("s/gone", "-rw-r-----", other),  // not extracted: not compared
            line("../x", "-rw-r-----", other),    // never looked at
            "not json".to_string(),
        ]
        .join("\n");
        let r = compare(dir.path(), &[], listing.as_bytes());
        assert_eq!((r.checked, r.owners, r.modes), (2, 1, 1));
        let f = r.fields();
        assert_eq!(f["partial"], true);
        assert_eq!(f["unrestored"][0]["path"], "s/sub/b");
        assert_eq!(f["unrestored"][0]["expected_mode"], "0640");
        assert_eq!(f["unrestored"][0]["mode"], "0600");
        assert!(r
            .reason()
            .unwrap()
            .contains("1 file(s) did not get their owner"));
        // Only the selected paths.
        let only_a = compare(
            dir.path(),
            &[ArchivePath::parse("s/a").unwrap()],
            listing.as_bytes(),
        );
        assert_eq!((only_a.checked, only_a.any()), (1, false));
        assert_eq!(only_a.fields()["partial"], false);
    }
}
