//! A real OpenSSH server for repositories reached over SSH.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use super::{free_port, require, wait_listening};

/// A real OpenSSH server on a free loopback port with a throwaway host key, and a
/// client key protected by `key_passphrase`.
pub struct SshServer {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Option<Child>,
}

impl SshServer {
    pub fn start(key_passphrase: &str) -> SshServer {
        require("ssh-keygen");
        assert!(
            Path::new("/usr/sbin/sshd").exists(),
            "sshd is not installed: run scripts/setup"
        );
        let dir = tempfile::tempdir().unwrap();
        let keygen = |file: &str, pass: &str| {
            let ok = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", pass, "-f"])
                .arg(dir.path().join(file))
                .status()
                .unwrap()
                .success();
            assert!(ok, "ssh-keygen failed");
        };
        keygen("host_key", "");
        keygen("client_key", key_passphrase);
        std::fs::copy(
            dir.path().join("client_key.pub"),
            dir.path().join("authorized_keys"),
        )
        .unwrap();
        // sshd cannot bind port 0 and say which it got: free ports, again on a clash.
        let (mut port, mut child) = (0, None);
        for attempt in 1.. {
            port = free_port();
            match spawn_sshd(dir.path(), port) {
                Ok(c) => {
                    child = Some(c);
                    break;
                }
                Err(status) if attempt < 5 => eprintln!("sshd could not listen ({status})"),
                Err(status) => panic!("sshd did not start 5 times: {status}"),
            }
        }
        SshServer { port, dir, child }
    }

    pub fn client_key(&self) -> PathBuf {
        self.dir.path().join("client_key")
    }

    /// borgmatic settings that reach `path` on this server as root with the client key.
    pub fn borgmatic_yaml(&self, label: &str, path: &Path, sources: &Path) -> String {
        format!(
            "source_directories:\n  - {}\nrepositories:\n  - path: ssh://root@127.0.0.1:{}{}\n    label: {label}\n\
             ssh_command: ssh -i {} -o IdentitiesOnly=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null\n\
             relocated_repo_access_is_ok: true\nkeep_daily: 7\n",
            sources.display(),
            self.port,
            path.display(),
            self.client_key().display()
        )
    }
}

impl Drop for SshServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Writes the configuration for `port` and starts sshd; `Err` when it exited before
/// listening (the port was taken).
fn spawn_sshd(dir: &Path, port: u16) -> Result<Child, std::process::ExitStatus> {
    let d = dir.display();
    std::fs::write(
        dir.join("sshd_config"),
        format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nPidFile {d}/sshd.pid\n\
             AuthorizedKeysFile {d}/authorized_keys\nStrictModes no\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nPubkeyAuthentication yes\n\
             PermitRootLogin prohibit-password\nUsePAM no\nLogLevel ERROR\n"
        ),
    )
    .unwrap();
    // Privilege separation needs this directory.
    let _ = std::fs::create_dir_all("/run/sshd");
    let mut child = Command::new("/usr/sbin/sshd")
        .args(["-D", "-e", "-f"])
        .arg(dir.join("sshd_config"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("cannot start sshd");
    wait_listening(&mut child, &[port])?;
    Ok(child)
}
