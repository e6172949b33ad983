//! `scripts/quickstart` as a new user runs it: the lines it prints work as printed —
//! the `mosquitto_pub` backup request with the demo client (the project's own ACL),
//! and the `curl` line against the HTTP sidecar on loopback.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread")]
async fn the_printed_lines_run_a_backup_over_mqtt_and_http() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let (port, http_port) = (free_port(), free_port());
    let mut child = Command::new(root.join("scripts/quickstart"))
        .env("QUICKSTART_DIR", dir.path())
        .env("PORT", port.to_string())
        .env("HTTP_PORT", http_port.to_string())
        .env("QUICKSTART_BIN", env!("CARGO_BIN_EXE_borgmatic-mqtt"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("cannot run scripts/quickstart");
    // Its instructions, up to the last line before the worker's own output.
    let mut printed = Vec::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        let last = line.starts_with("Stop with Ctrl-C");
        printed.push(line);
        if last {
            break;
        }
    }
    let mosquitto_pid = dir.path().join("mosquitto/mosquitto.pid");
    let _cleanup = Cleanup(child, mosquitto_pid);
    let text = printed.join("\n");
    let command_after = |marker: &str| -> String {
        let at = text
            .find(marker)
            .unwrap_or_else(|| panic!("{marker:?} not printed:\n{text}"));
        let mut cmd = String::new();
        for l in text[at + marker.len()..].lines().skip(1) {
            let l = l.trim();
            match l.strip_suffix('\\') {
                Some(part) => cmd.push_str(part),
                None => {
                    cmd.push_str(l);
                    break;
                }
            }
        }
        cmd
    };
    let publish = command_after("and ask for a backup:");
    let curl = command_after("the job events as they happen:");
    assert!(publish.starts_with("mosquitto_pub"), "{publish}");
    assert!(curl.starts_with("curl"), "{curl}");

    // A watcher with the demo client's credentials sees the worker come up.
    let client_pw = std::fs::read_to_string(dir.path().join("secrets/mqtt_nodered")).unwrap();
    let watcher = Client::connect_as(&Broker::at_port(port), "nodered", client_pw.trim()).await;
    watcher.subscribe("borgmatic/demo/#").await;
    watcher
        .wait_for(|m| m.topic == "borgmatic/demo/status" && m.text() == "online")
        .await;

    // The printed backup request runs a backup.
    let ok = Command::new("sh").arg("-c").arg(&publish).status().unwrap();
    assert!(ok.success(), "{publish}");
    let resp = watcher
        .wait_for(|m| m.topic == "borgmatic/demo/response/backup/run")
        .await
        .json();
    assert_eq!(resp["status"], "ok", "{resp}");
    let result = watcher
        .job_result("borgmatic/demo", resp["job_id"].as_str().unwrap())
        .await;
    assert_eq!(result["state"], "succeeded", "{result}");

    // The printed curl line reaches the sidecar and lists that job.
    let out = Command::new("sh").arg("-c").arg(&curl).output().unwrap();
    assert!(out.status.success(), "{curl}");
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(listed["status"], "ok", "{listed}");
    assert_eq!(
        listed["data"]["jobs"][0]["job_id"], resp["job_id"],
        "{listed}"
    );

    // The demo client cannot read commands (they carry tokens).
    assert!(
        !watcher.messages().keys().any(|t| t.contains("/cmd/")),
        "the demo client read a command"
    );
}

/// Stops the worker and the demo broker, whatever the outcome.
struct Cleanup(std::process::Child, std::path::PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
        if let Ok(pid) = std::fs::read_to_string(&self.1) {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
    }
}
