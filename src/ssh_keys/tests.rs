//! The key store on a real directory: create, list, rotate, delete, only public
//! halves shown, and only keys this worker made changed.
//!
//! Test code: may import any module (`scripts/import-cycles` counts production code only).

use super::*;

#[test]
fn create_list_rotate_delete_and_only_public_halves_shown() {
    let dir = tempfile::tempdir().unwrap();
    let store = KeyStore::new(&dir.path().join("keys"));
    let name = KeyName::parse("backup").unwrap();
    let info = store
        .create(
            &name,
            Some(&Secret::new("key-pass-1234")),
            "borgmatic-mqtt@test",
        )
        .unwrap();
    assert!(info.encrypted);
    assert!(info.public_key.starts_with("ssh-ed25519 "));
    assert!(info.fingerprint.starts_with("SHA256:"));
    assert!(matches!(
        store.create(&name, None, "x"),
        Err(KeyError::Exists(_))
    ));
    let shown = serde_json::to_string(&store.list().unwrap()).unwrap();
    assert!(!shown.contains("PRIVATE KEY"));
    let private = std::fs::read_to_string(dir.path().join("keys/backup")).unwrap();
    assert!(private.contains("OPENSSH PRIVATE KEY"));
    assert!(!private.contains("key-pass-1234"));

    let rotated = store.rotate(&name, None, "c").unwrap();
    assert!(!rotated.encrypted);
    assert!(rotated.has_old);
    assert_ne!(rotated.fingerprint, info.fingerprint);
    let names: Vec<String> = store.list().unwrap().into_iter().map(|k| k.name).collect();
    assert_eq!(names, ["backup", "backup.old"]);
    store
        .delete(&KeyName::parse("backup.old").unwrap())
        .unwrap();
    assert!(!store.show(&name).unwrap().has_old);
    assert!(matches!(
        store.delete(&KeyName::parse("nope").unwrap()),
        Err(KeyError::NotFound(_))
    ));
}

#[test]
fn only_keys_this_worker_made_are_rotated_or_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let store = KeyStore::new(&keys);
    let mine = KeyName::parse("mine").unwrap();
    store.create(&mine, None, "borgmatic-mqtt@test").unwrap();
    // Not ours: ssh's own files, root's own key, a link, a non-key, a mismatch.
    std::fs::write(keys.join("known_hosts"), "host ssh-ed25519 AAAA\n").unwrap();
    std::fs::write(keys.join("notes"), "not a key\n").unwrap();
    let own = PrivateKey::random(&mut OsRng, Algorithm::Ed25519).unwrap();
    std::fs::write(
        keys.join("id_ed25519"),
        own.to_openssh(LineEnding::LF).unwrap().as_bytes(),
    )
    .unwrap();
    std::fs::write(
        keys.join("id_ed25519.pub"),
        own.public_key().to_openssh().unwrap(),
    )
    .unwrap();
    std::os::unix::fs::symlink(keys.join("mine"), keys.join("link")).unwrap();
    std::fs::copy(keys.join("mine"), keys.join("mismatch")).unwrap();
    std::fs::copy(keys.join("id_ed25519.pub"), keys.join("mismatch.pub")).unwrap();
    let snapshot = || {
        let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(&keys)
            .unwrap()
            .flatten()
            .map(|e| {
                let p = e.path();
                (
                    e.file_name().to_string_lossy().into(),
                    std::fs::read(&p).unwrap_or_default(),
                )
            })
            .collect();
        v.sort();
        v
    };
    let before = snapshot();
    for name in ["notes", "id_ed25519", "link", "mismatch"] {
        let n = KeyName::parse(name).unwrap();
        assert!(
            matches!(store.delete(&n), Err(KeyError::NotManaged(_))),
            "delete {name}"
        );
        assert!(
            matches!(store.rotate(&n, None, "x"), Err(KeyError::NotManaged(_))),
            "rotate {name}"
        );
    }
    for name in ["known_hosts", "config", "authorized_keys", "mine.pub", "-x"] {
        assert!(KeyName::parse(name).is_err(), "{name} is a key name");
    }
    assert_eq!(
        snapshot(),
        before,
        "a refused request changed the key directory"
    );
    // Root's own key may be shown and used, not changed; a link is not a key.
    assert!(store.show(&KeyName::parse("id_ed25519").unwrap()).is_ok());
    assert!(store.show(&KeyName::parse("link").unwrap()).is_err());
    let listed: Vec<String> = store.list().unwrap().into_iter().map(|k| k.name).collect();
    assert_eq!(listed, ["id_ed25519", "mine"]);
    store.delete(&mine).unwrap();
    assert!(!keys.join("mine").exists() && keys.join("known_hosts").exists());
}

#[test]
fn authorized_lines_force_borg_serve_for_keys_made_here_only() {
    let dir = tempfile::tempdir().unwrap();
    let store = KeyStore::new(dir.path());
    let name = KeyName::parse("k").unwrap();
    let info = store.create(&name, None, "borgmatic-mqtt@nas").unwrap();
    let path = RestrictPath::parse("/srv/borg/nc").unwrap();
    let line = store.authorized_line(&name, &path, true).unwrap();
    assert_eq!(
        line,
        format!(
            "command=\"borg serve --restrict-to-path /srv/borg/nc --append-only\",restrict {}",
            info.public_key
        )
    );
    let line = store.authorized_line(&name, &path, false).unwrap();
    assert!(line.starts_with(
        "command=\"borg serve --restrict-to-path /srv/borg/nc\",restrict ssh-ed25519 "
    ));
    assert!(!line.contains('\n'));

    // A key the worker did not make (no mark in its comment) gets no line.
    let theirs = KeyName::parse("id_ed25519").unwrap();
    let foreign = PrivateKey::random(&mut OsRng, Algorithm::Ed25519).unwrap();
    std::fs::write(
        dir.path().join("id_ed25519"),
        foreign.to_openssh(LineEnding::LF).unwrap().as_bytes(),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("id_ed25519.pub"),
        format!("{}\n", foreign.public_key().to_openssh().unwrap()),
    )
    .unwrap();
    assert!(matches!(
        store.authorized_line(&theirs, &path, false),
        Err(KeyError::NotManaged(_))
    ));
    assert!(matches!(
        store.authorized_line(&KeyName::parse("none").unwrap(), &path, false),
        Err(KeyError::NotFound(_))
    ));
}
