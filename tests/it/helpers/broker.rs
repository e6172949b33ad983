//! A real Mosquitto per test: passwords, an ACL (the test's or the project's), TLS
//! on request.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use super::{
    free_port, require, shipped_password, wait_listening, CLIENT_PASSWORD, HA_PASSWORD,
    WORKER_PASSWORD,
};

/// A real Mosquitto on a free loopback port with a password file and an ACL.
pub struct Broker {
    pub port: u16,
    /// The TLS listener's port, when started with [`Broker::start_tls`].
    pub tls_port: Option<u16>,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// `mosquitto.conf` with `{PORT}` and `{TLS_PORT}` still to fill in.
    template: String,
}

impl Broker {
    pub fn start() -> Broker {
        Self::start_with(false, false, "")
    }

    /// With the project's own `mosquitto/acl` and its users (`borgmatic`, `nodered`,
    /// `homeassistant`, passwords from [`shipped_password`]), plus the test's
    /// observer `client`, which may read everything and send commands.
    pub fn start_shipped() -> Broker {
        Self::start_with(false, true, "")
    }

    /// With extra `mosquitto.conf` lines (e.g. `max_packet_size 4096`).
    pub fn start_with_config(extra: &str) -> Broker {
        Self::start_with(false, false, extra)
    }

    /// With persistence on (saved every second and on exit, in the broker's dir):
    /// sessions, queued messages and retained messages survive a restart.
    pub fn start_persistent() -> Broker {
        Self::start_with(false, false, "persistence true\nautosave_interval 1\n")
    }

    /// Also listens with TLS (a throwaway CA and a server certificate for
    /// `localhost`); the CA is at [`Broker::ca_file`].
    pub fn start_tls() -> Broker {
        Self::start_with(true, false, "")
    }

    /// A handle for a broker started elsewhere (connection details only).
    pub fn at_port(port: u16) -> Broker {
        Broker {
            port,
            tls_port: None,
            dir: tempfile::tempdir().unwrap(),
            child: None,
            template: String::new(),
        }
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    fn start_with(tls: bool, shipped: bool, extra: &str) -> Broker {
        require("mosquitto");
        require("mosquitto_passwd");
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("passwd");
        let mut users = vec![
            ("worker".to_string(), WORKER_PASSWORD.to_string()),
            ("client".to_string(), CLIENT_PASSWORD.to_string()),
            ("homeassistant".to_string(), HA_PASSWORD.to_string()),
        ];
        if shipped {
            users.retain(|(u, _)| u == "client");
            for u in ["borgmatic", "nodered", "homeassistant"] {
                users.push((u.to_string(), shipped_password(u)));
            }
        }
        for (i, (user, pass)) in users.iter().enumerate() {
            let mut c = Command::new("mosquitto_passwd");
            if i == 0 {
                c.arg("-c");
            }
            let ok = c
                .args(["-b", pw.to_str().unwrap(), user, pass])
                .status()
                .unwrap()
                .success();
            assert!(ok, "mosquitto_passwd failed");
        }
        let acl = if shipped {
            let project = std::fs::read_to_string(
                Path::new(env!("CARGO_MANIFEST_DIR")).join("mosquitto/acl"),
            )
            .unwrap();
            format!("{project}\nuser client\ntopic read #\ntopic write borgmatic/+/cmd/#\n")
        } else {
            "user worker\ntopic readwrite test/#\n\n\
             user client\ntopic write test/+/cmd/#\ntopic read test/#\n\n\
             user homeassistant\ntopic write test/+/ha/#\ntopic write test/+/homeassistant/status\ntopic read test/#\n"
                .to_string()
        };
        std::fs::write(dir.path().join("acl"), acl).unwrap();
        // Running as root, Mosquitto drops to user `mosquitto` and could not read the
        // 0700 temp dir: tell it to stay root.
        let user_line = if nix_is_root() { "user root\n" } else { "" };
        let tls_block = match tls {
            true => {
                make_certificates(dir.path());
                let d = dir.path().display();
                format!(
                    "listener {{TLS_PORT}} 127.0.0.1\ncafile {d}/ca.crt\ncertfile {d}/server.crt\nkeyfile {d}/server.key\n"
                )
            }
            false => String::new(),
        };
        let template = format!(
            "{user_line}per_listener_settings false\nlistener {{PORT}} 127.0.0.1\n{tls_block}\
                 allow_anonymous false\n\
                 password_file {}\nacl_file {}\n{}\n\
                 max_inflight_messages 1000\nmax_queued_messages 100000\nset_tcp_nodelay true\n\
                 log_dest stderr\nlog_type error\nlog_type warning\n{extra}\n",
            pw.display(),
            dir.path().join("acl").display(),
            if extra.contains("persistence true") {
                format!("persistence_location {}/", dir.path().display())
            } else {
                "persistence false".to_string()
            }
        );
        let mut b = Broker {
            port: 0,
            tls_port: None,
            dir,
            child: None,
            template,
        };
        // Mosquitto cannot bind port 0 and say which port it got: take free ports
        // and, when another process took one first, start again on others.
        for attempt in 1.. {
            b.port = free_port();
            b.tls_port = tls.then(free_port);
            match b.spawn() {
                Ok(()) => break,
                Err(status) if attempt < 5 => {
                    eprintln!("mosquitto could not listen ({status}); other ports")
                }
                Err(status) => panic!("mosquitto did not start 5 times: {status}"),
            }
        }
        b
    }

    /// Writes the configuration with the current ports and starts Mosquitto; `Err`
    /// when it exited (a port was taken) before listening on them.
    fn spawn(&mut self) -> Result<(), std::process::ExitStatus> {
        let conf = self
            .template
            .replace("{PORT}", &self.port.to_string())
            .replace(
                "{TLS_PORT}",
                &self.tls_port.map(|p| p.to_string()).unwrap_or_default(),
            );
        let path = self.dir.path().join("mosquitto.conf");
        std::fs::write(&path, conf).unwrap();
        let mut child = Command::new("mosquitto")
            .arg("-c")
            .arg(path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start mosquitto");
        let ports: Vec<u16> = std::iter::once(self.port).chain(self.tls_port).collect();
        wait_listening(&mut child, &ports)?;
        self.child = Some(child);
        Ok(())
    }

    /// Mosquitto's process id (for CPU figures), while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops the broker with SIGTERM (it saves its persistence file) and waits.
    pub fn terminate(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let _ = c.wait();
        }
    }

    /// Kills (SIGKILL) and starts again on the same port (retained messages are
    /// lost unless started with [`Broker::start_persistent`]).
    pub fn restart(&mut self) {
        self.stop();
        if let Err(status) = self.spawn() {
            panic!(
                "mosquitto could not listen on port {} again: {status}",
                self.port
            );
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A CA and a server certificate for `localhost`, made with openssl.
fn make_certificates(dir: &Path) {
    require("openssl");
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
        "-out",
        "server.crt",
    ]);
}

fn nix_is_root() -> bool {
    // SAFETY-free: read the effective uid through `id -u`.
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}
