//! Real borg repositories made by real borgmatic in a temp dir, and stand-in
//! `borgmatic` scripts for tests about output volume.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{borgmatic_bin, require, PASSPHRASE};

/// A borgmatic config directory with real repositories in a temp dir.
pub struct Repos {
    pub dir: tempfile::TempDir,
}

impl Repos {
    pub fn new() -> Repos {
        require("borg");
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("borgmatic.d")).unwrap();
        std::fs::create_dir_all(dir.path().join("borg-base")).unwrap();
        std::fs::create_dir_all(dir.path().join("restore")).unwrap();
        std::fs::create_dir_all(dir.path().join("mnt")).unwrap();
        Repos { dir }
    }

    pub fn config_dir(&self) -> PathBuf {
        self.dir.path().join("borgmatic.d")
    }
    pub fn restore_root(&self) -> PathBuf {
        self.dir.path().join("restore")
    }
    pub fn mount_root(&self) -> PathBuf {
        self.dir.path().join("mnt")
    }
    pub fn repo_path(&self, label: &str) -> PathBuf {
        self.dir.path().join(format!("repo-{label}"))
    }
    pub fn source(&self, label: &str) -> PathBuf {
        self.dir.path().join(format!("src-{label}"))
    }
    /// Environment for borg and borgmatic run by tests and the worker: an isolated
    /// cache and config, so tests never share borg state.
    pub fn borg_env(&self) -> Vec<(String, String)> {
        vec![
            (
                "BORG_BASE_DIR".into(),
                self.dir.path().join("borg-base").display().to_string(),
            ),
            (
                "BORGMATIC_STATE_DIR".into(),
                self.dir.path().join("bm-state").display().to_string(),
            ),
        ]
    }

    /// Creates an encrypted repository labelled `label` with a few source files; the
    /// passphrase is NOT in the borgmatic config: the worker hands it over.
    /// `extra` is appended to the borgmatic YAML.
    pub fn add(&self, label: &str, extra: &str) {
        let src = self.source(label);
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("hello.txt"), "hello world\n").unwrap();
        std::fs::write(src.join("data.bin"), vec![7u8; 200_000]).unwrap();
        let cfg = self.config_dir().join(format!("{label}.yaml"));
        std::fs::write(
            &cfg,
            format!(
                "source_directories:\n  - {}\nrepositories:\n  - path: {}\n    label: {label}\n\
                 {}{extra}",
                src.display(),
                self.repo_path(label).display(),
                if extra.contains("keep_") {
                    ""
                } else {
                    "keep_daily: 7\n"
                }
            ),
        )
        .unwrap();
        let out = self
            .borgmatic(&cfg, &["repo-create", "--encryption", "repokey-blake2"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "repo-create failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Makes the backups of `label` (already added) block: borg reads a FIFO nobody
    /// writes to (`read_special`), holding the repository lock until the job is
    /// stopped.
    pub fn block_backups(&self, label: &str) {
        super::mkfifo(&self.source(label).join("pipe"));
        let cfg = self.config_dir().join(format!("{label}.yaml"));
        let yaml = std::fs::read_to_string(&cfg).unwrap();
        std::fs::write(&cfg, yaml + "read_special: true\n").unwrap();
    }

    pub fn borgmatic(&self, cfg: &Path, args: &[&str]) -> Command {
        let mut c = Command::new(borgmatic_bin());
        c.arg("--config").arg(cfg).args(args);
        c.envs(self.borg_env()).env("BORG_PASSPHRASE", PASSPHRASE);
        c
    }

    pub fn borg(&self, args: &[&str]) -> std::process::Output {
        self.borg_with(PASSPHRASE, args)
    }

    pub fn borg_with(&self, passphrase: &str, args: &[&str]) -> std::process::Output {
        Command::new("borg")
            .args(args)
            .envs(self.borg_env())
            .env("BORG_PASSPHRASE", passphrase)
            // Tests reach one repository both locally and over SSH.
            .env("BORG_RELOCATED_REPO_ACCESS_IS_OK", "yes")
            .output()
            .unwrap()
    }

    /// Archive names, straight from borg.
    pub fn archives(&self, label: &str) -> Vec<String> {
        let out = self.borg(&["list", "--short", self.repo_path(label).to_str().unwrap()]);
        assert!(
            out.status.success(),
            "borg list: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Whether `borg check` passes on the repository.
    pub fn check(&self, label: &str) -> bool {
        let out = self.borg(&["check", self.repo_path(label).to_str().unwrap()]);
        if !out.status.success() {
            eprintln!("borg check: {}", String::from_utf8_lossy(&out.stderr));
        }
        out.status.success()
    }
}

/// A stand-in `borgmatic` for tests about output volume: answers `--version` like
/// borgmatic 2.1 and, for any action, prints `lines` numbered lines to stderr as fast
/// as it can, then an empty JSON list on stdout.
pub fn fast_printing_borgmatic(dir: &Path, lines: u64) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let bin = dir.join("fast-borgmatic");
    std::fs::write(
        &bin,
        format!(
            "#!/bin/sh\ncase \"$*\" in *--version*) echo 2.1.10; exit 0;; esac\n\
             seq -f 'line %.0f' 1 {lines} >&2\necho '[]'\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

/// A `borgmatic` that drops the capabilities named in `<dir>/drop-caps` (e.g.
/// `-dac_read_search,-dac_override`, as under `cap_drop: [ALL]`) before it runs;
/// none when the file is empty.
pub fn setpriv_borgmatic(dir: &Path) -> (PathBuf, PathBuf) {
    let real = borgmatic_bin();
    let drop = dir.join("drop-caps");
    std::fs::write(&drop, "").unwrap();
    let bin = dir.join("borgmatic-caps");
    std::fs::write(
        &bin,
        format!(
            "#!/bin/sh\ndrop=$(cat '{}')\n\
             if [ -n \"$drop\" ]; then exec setpriv --inh-caps=\"$drop\" --bounding-set=\"$drop\" -- '{}' \"$@\"; fi\n\
             exec '{}' \"$@\"\n",
            drop.display(),
            real.display(),
            real.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &bin,
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o755),
    )
    .unwrap();
    (bin, drop)
}

/// Waits until borg holds the lock of the repository at `repo` (no event exists
/// for a lock file).
pub async fn until_locked(repo: &Path) {
    let lock = repo.join("lock.exclusive");
    tokio::time::timeout(super::WAIT, async {
        while !lock.exists() {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("borg never took the repository lock");
}

/// Another borg process holding a repository's lock: `borg with-lock … sleep 600`
/// in its own process group with no inherited pipes (killing the group leaves
/// nothing behind that would keep the test runner's output open), killed on drop.
pub struct LockHolder(std::process::Child);

impl LockHolder {
    /// Starts the holder and waits until the repository is locked.
    pub async fn hold(repos: &Repos, label: &str) -> LockHolder {
        use std::os::unix::process::CommandExt;
        let child = Command::new("borg")
            .args([
                "with-lock",
                repos.repo_path(label).to_str().unwrap(),
                "sleep",
                "600",
            ])
            .envs(repos.borg_env())
            .env("BORG_PASSPHRASE", PASSPHRASE)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        let holder = LockHolder(child);
        let roster = repos.repo_path(label).join("lock.roster");
        tokio::time::timeout(super::WAIT, async {
            while !roster.exists() {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        })
        .await
        .expect("borg with-lock never locked");
        holder
    }

    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Kills the holder's process group: the lock it leaves is stale.
    pub fn kill(self) {}
}

impl Drop for LockHolder {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.0.id())])
            .status();
        let _ = self.0.wait();
    }
}
