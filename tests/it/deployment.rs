//! The deployment's Mosquitto files: a real broker with exactly `mosquitto/acl` and
//! a `passwd` made by `mosquitto/make-passwd` proves each user can do what it needs
//! and nothing the design forbids.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::helpers::*;
use rumqttc::v5::mqttbytes::QoS;

struct DeployBroker {
    port: u16,
    tls_port: u16,
    dir: tempfile::TempDir,
    child: std::process::Child,
}

impl Drop for DeployBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn passwords() -> [(&'static str, &'static str); 3] {
    [
        ("borgmatic", "deploy-borgmatic-password-1"),
        ("nodered", "deploy-nodered-password-2"),
        ("homeassistant", "deploy-homeassistant-password-3"),
    ]
}

/// Mosquitto with the repository's ACL verbatim and its password script's output;
/// only the listener and file locations of mosquitto.conf are adapted.
fn start() -> DeployBroker {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("mosquitto");
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("mosquitto");
    std::fs::create_dir_all(&copy).unwrap();
    for f in ["acl", "make-passwd", "make-certs", "mosquitto.conf"] {
        std::fs::copy(root.join(f), copy.join(f)).unwrap();
    }
    let mut script = Command::new(copy.join("make-passwd"));
    script.arg(dir.path().join("secrets"));
    for (user, pw) in passwords() {
        script.env(format!("{}_PASSWORD", user.to_uppercase()), pw);
    }
    assert!(
        script.stdout(Stdio::null()).status().unwrap().success(),
        "make-passwd failed"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("secrets/mqtt_nodered_password")).unwrap(),
        "deploy-nodered-password-2"
    );
    // The README's certificate step, for the name clients use here.
    let certs = Command::new(copy.join("make-certs"))
        .args(["localhost", "127.0.0.1"])
        .output()
        .unwrap();
    assert!(
        certs.status.success(),
        "make-certs failed: {}",
        String::from_utf8_lossy(&certs.stderr)
    );
    let port = free_port();
    let tls_port = free_port();
    let conf = std::fs::read_to_string(copy.join("mosquitto.conf"))
        .unwrap()
        .replace("listener 1883", &format!("listener {port} 127.0.0.1"))
        .replace("listener 8883", &format!("listener {tls_port} 127.0.0.1"))
        .replace("/mosquitto/config/", &format!("{}/", copy.display()))
        .replace("/mosquitto/certs/", &format!("{}/certs/", copy.display()))
        .replace("persistence true", "persistence false")
        .replace("log_dest stdout", "log_dest stderr");
    let user_line = if is_root() { "user root\n" } else { "" };
    std::fs::write(dir.path().join("test.conf"), format!("{user_line}{conf}")).unwrap();
    let child = Command::new("mosquitto")
        .arg("-c")
        .arg(dir.path().join("test.conf"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    for p in [port, tls_port] {
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", p)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }
    DeployBroker {
        port,
        tls_port,
        dir,
        child,
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

async fn login(b: &DeployBroker, user: &str) -> Client {
    let pw = passwords().iter().find(|(u, _)| *u == user).unwrap().1;
    let fake = Broker::at_port(b.port);
    Client::connect_as(&fake, user, pw).await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_acl_grants_each_user_what_it_needs_and_nothing_more() {
    let b = start();
    let worker = login(&b, "borgmatic").await;
    let nodered = login(&b, "nodered").await;
    let ha = login(&b, "homeassistant").await;
    let base = "borgmatic/nas";

    // The worker reads commands and button presses.
    worker.subscribe(&format!("{base}/cmd/#")).await;
    worker.subscribe(&format!("{base}/ha/#")).await;
    // Node-RED and Home Assistant read the worker's status; Node-RED its answers.
    nodered.subscribe(&format!("{base}/status")).await;
    nodered.subscribe(&format!("{base}/response/#")).await;
    ha.subscribe(&format!("{base}/status")).await;
    ha.subscribe("homeassistant/#").await;

    let status = format!("{base}/status");
    let response = format!("{base}/response/backup/run");
    // Needed: Node-RED sends commands, Home Assistant presses buttons and
    // announces itself, the worker publishes status, answers, jobs and discovery.
    let allowed = [
        (&nodered, format!("{base}/cmd/backup/run")),
        (&ha, format!("{base}/ha/nc/run")),
        (&ha, "homeassistant/status".to_string()),
        (&worker, status.clone()),
        (&worker, response.clone()),
        (&worker, format!("{base}/jobs/0193/state")),
        (&worker, format!("{base}/last/nc/backup")),
        (
            &worker,
            "homeassistant/button/nas_nc/run_backup/config".to_string(),
        ),
    ];
    for (who, topic) in &allowed {
        assert!(
            who.publish_authorized(topic, "x").await,
            "{topic} was refused"
        );
    }
    // Forbidden: anyone else setting the worker's status or answering in its name,
    // Home Assistant sending commands, Node-RED pressing HA buttons or writing
    // discovery configs, the worker sending commands to itself.
    let forbidden = [
        (&nodered, status.clone()),
        (&ha, status.clone()),
        (&nodered, response.clone()),
        (&ha, response.clone()),
        (&nodered, format!("{base}/jobs/0193/state")),
        (&ha, format!("{base}/cmd/backup/run")),
        (&nodered, format!("{base}/ha/nc/run")),
        (&nodered, "homeassistant/button/x/y/config".to_string()),
        (&worker, format!("{base}/cmd/backup/run")),
    ];
    for (who, topic) in &forbidden {
        assert!(
            !who.publish_authorized(topic, "x").await,
            "{topic} was allowed"
        );
    }
    // What got through reached its reader: the worker saw Node-RED's command and
    // Home Assistant's press, Node-RED the worker's status.
    worker
        .wait_for(|m| m.topic == format!("{base}/cmd/backup/run"))
        .await;
    worker
        .wait_for(|m| m.topic == format!("{base}/ha/nc/run"))
        .await;
    nodered.wait_for(|m| m.topic == status).await;

    // Node-RED and Home Assistant cannot read commands, not even Node-RED's own (they
    // carry tokens). (A second `nodered` connection would replace the first: the
    // broker uses the user name as the client id.)
    nodered.subscribe(&format!("{base}/cmd/#")).await;
    ha.subscribe(&format!("{base}/cmd/#")).await;
    let secret = format!("token-{}", uuid_like());
    nodered
        .client
        .publish(
            format!("{base}/cmd/job/list"),
            QoS::AtLeastOnce,
            false,
            secret.clone(),
        )
        .await
        .unwrap();
    worker.wait_for(|m| m.text() == secret).await;
    for spy in [&nodered, &ha] {
        assert!(!spy.all_text().contains(&secret), "a client read a command");
    }
}

/// The shipped TLS listener: a client that trusts the CA `make-certs` made
/// connects and is authorised as usual; a client that does not trust it, or speaks
/// plain MQTT to the TLS port, gets no session.
#[tokio::test(flavor = "multi_thread")]
async fn the_tls_listener_serves_clients_that_trust_the_projects_ca() {
    let b = start();
    let ca = b.dir.path().join("mosquitto/certs/ca.crt");
    let pw = passwords()[1].1;
    let tls = Client::connect_tls("localhost", b.tls_port, &ca, "nodered", pw).await;
    assert!(
        tls.publish_authorized("borgmatic/nas/cmd/job/list", "x")
            .await,
        "nodered over TLS was refused"
    );
    // The server certificate also names 127.0.0.1, and verification is real:
    // openssl accepts it with the CA and refuses it with another one.
    let verify = |ca: &std::path::Path| {
        Command::new("openssl")
            .args(["s_client", "-connect", &format!("127.0.0.1:{}", b.tls_port)])
            .args(["-verify_return_error", "-verify_ip", "127.0.0.1", "-CAfile"])
            .arg(ca)
            .stdin(Stdio::null())
            .output()
            .unwrap()
            .status
            .success()
    };
    assert!(verify(&ca));
    assert!(
        !verify(&other_ca(&b)),
        "verified with a CA that did not sign it"
    );
    // Plain MQTT on the TLS port: the broker never answers with a CONNACK.
    let mut plain = std::net::TcpStream::connect(("127.0.0.1", b.tls_port)).unwrap();
    use std::io::{Read, Write};
    plain
        .write_all(b"\x10\x10\x00\x04MQTT\x05\x02\x00\x3c\x00\x00\x03abc")
        .unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 4];
    let n = plain.read(&mut buf).unwrap_or(0);
    assert!(
        n == 0 || buf[0] != 0x20,
        "plain MQTT got a CONNACK on the TLS port"
    );
    // The CA key stays out of the directory the broker mounts.
    assert!(!b.dir.path().join("mosquitto/certs/ca.key").exists());
    let mode = std::fs::metadata(b.dir.path().join("mosquitto/certs/server.key"))
        .unwrap()
        .permissions();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        mode.mode() & 0o777,
        0o640,
        "server.key is readable by others"
    );
}

/// A CA that did not sign the broker's certificate.
fn other_ca(b: &DeployBroker) -> std::path::PathBuf {
    let dir = b.dir.path().join("other");
    std::fs::create_dir_all(&dir).unwrap();
    let ok = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=other", "-keyout"])
        .arg(dir.join("k"))
        .arg("-out")
        .arg(dir.join("ca.crt"))
        .output()
        .unwrap()
        .status
        .success();
    assert!(ok);
    dir.join("ca.crt")
}

#[test]
fn the_container_entrypoint_refuses_to_start_without_tokens() {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docker/entrypoint.sh");
    let out = Command::new("sh")
        .arg(&script)
        .arg("run")
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("BMQTT_AUTH__READ_TOKEN_FILE", "/nonexistent/read_token")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("BMQTT_AUTH__READ_TOKEN"), "{err}");
    assert!(err.contains("BMQTT_AUTH__WRITE_TOKEN"), "{err}");
}
