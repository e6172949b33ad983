//! Operator tools: emergency status and stop, SSH key management, reachability.

use crate::helpers::*;
use serde_json::{json, Value};

async fn emergency_status(c: &Client, base: &str) -> Value {
    c.request(base, "emergency/status", json!({"token": READ_TOKEN}))
        .await
}

/// `emergency/stop` by the admin, asserted to succeed; its result.
async fn emergency_stop(c: &Client, base: &str) -> Value {
    c.run_job_ok(base, "emergency/stop", json!({"token": ADMIN_TOKEN}))
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stuck_job_shows_as_warning_and_emergency_stop_ends_it() {
    let Scenario {
        broker: _broker,
        repos,
        worker,
        client: c,
    } = Scenario::new()
        .repo_with("nc", "lock_wait: 600\n")
        .admin()
        .setting("BMQTT_DOCKER__ENABLED", "false")
        // A process of its own: the lock holder below is the test's child, which an
        // in-process worker would rightly count as its own.
        .process()
        .await;

    let status = emergency_status(&c, &worker.base).await;
    assert_eq!(status["data"]["level"], "normal", "{status}");

    let holder = LockHolder::hold(&repos, "nc").await;
    let stuck_id = c.start_backup(&worker.base, "nc").await;
    c.wait_state(&worker.base, &stuck_id, "running").await;

    let status = emergency_status(&c, &worker.base).await;
    let data = &status["data"];
    assert_eq!(data["level"], "warning", "{status}");
    let reasons: Vec<&str> = data["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["reason"].as_str().unwrap())
        .collect();
    let pid = holder.pid();
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("repository nc is locked by pid") && r.contains(&pid.to_string())),
        "{reasons:?}"
    );
    assert_eq!(data["locks"][0]["repository"], "nc");
    assert_eq!(data["locks"][0]["held_by_us"], false);
    assert!(data["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .any(|j| j["job_id"] == json!(stuck_id)));

    // Admin only.
    c.refused(
        &worker.base,
        "emergency/stop",
        json!({"token": WRITE_TOKEN}),
        "forbidden",
    )
    .await;
    let res = emergency_stop(&c, &worker.base).await;
    let steps = res["data"]["steps"].as_array().unwrap();
    let step = |name: &str| {
        steps
            .iter()
            .find(|s| s["step"] == name)
            .cloned()
            .unwrap_or(Value::Null)
    };
    assert!(step("cancel jobs")["detail"]["cancelled"]
        .as_array()
        .unwrap()
        .contains(&json!(stuck_id)));
    assert_eq!(
        step("break locks")["detail"]["broken"][0]["repository"],
        "nc"
    );
    assert_eq!(
        c.job_result(&worker.base, &stuck_id).await["state"],
        "cancelled"
    );
    drop(holder);
    assert!(
        repos.check("nc"),
        "the repository fails borg check after emergency/stop"
    );

    // Safe to run twice: nothing left to do, nothing fails.
    emergency_stop(&c, &worker.base).await;
    let status = emergency_status(&c, &worker.base).await;
    assert_eq!(status["data"]["level"], "normal", "{status}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mount_is_listed_and_emergency_stop_unmounts_it() {
    if !fuse_or_skip("a_mount_is_listed_and_emergency_stop_unmounts_it") {
        return;
    }
    let Scenario {
        broker: _broker,
        repos,
        worker,
        client: c,
    } = Scenario::new()
        .repo("nc")
        .admin()
        .setting("BMQTT_DOCKER__ENABLED", "false")
        .app()
        .await;
    let b = c.backup(&worker.base, "nc").await;
    c.run_job_ok(&worker.base,
            "archive/mount",
            json!({"token": WRITE_TOKEN, "repository": "nc", "archive": b["data"]["archive"], "mount_point": "m"})).await;
    let mp = repos.mount_root().join("m").canonicalize().unwrap();
    let status = emergency_status(&c, &worker.base).await;
    assert_eq!(
        status["data"]["mounts"][0]["mount_point"],
        json!(mp),
        "{status}"
    );
    assert_eq!(status["data"]["level"], "warning");

    emergency_stop(&c, &worker.base).await;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mountinfo.contains(mp.to_str().unwrap()), "still mounted");
}

#[tokio::test(flavor = "multi_thread")]
async fn ssh_keys_are_managed_and_tested_against_a_real_sshd() {
    let broker = Broker::start();
    let repos = Repos::new();
    let ssh = SshServer::start("unused-client-key-pass");
    repos.add("local", "");
    let yaml = ssh.borgmatic_yaml("remote", &repos.repo_path("local"), &repos.source("local"));
    std::fs::write(repos.config_dir().join("remote.yaml"), yaml).unwrap();
    let key_dir = repos.dir.path().join("keys");
    let key_dir_s = key_dir.display().to_string();
    let key_pass = "key-passphrase-7777";
    let worker = Worker::start(
        &broker,
        &repos,
        &[
            WITH_ADMIN,
            ("BMQTT_SSH__KEY_DIR", key_dir_s.as_str()),
            ("BMQTT_REPOSITORIES__REMOTE__SSH_PASSPHRASE", key_pass),
            ("BMQTT_DOCKER__ENABLED", "false"),
        ],
    )
    .await;
    let c = subscribed(&broker, &worker.base).await;

    // Create (admin), refusing a passphrase equal to a borg passphrase.
    c.refused(
        &worker.base,
        "ssh-key/create",
        json!({"token": ADMIN_TOKEN, "name": "k", "passphrase": PASSPHRASE}),
        "invalid",
    )
    .await;
    c.refused(
        &worker.base,
        "ssh-key/create",
        json!({"token": WRITE_TOKEN, "name": "k"}),
        "forbidden",
    )
    .await;
    let created = c
        .request_ok(
            &worker.base,
            "ssh-key/create",
            json!({"token": ADMIN_TOKEN, "name": "k", "passphrase": key_pass}),
        )
        .await;
    assert_eq!(created["data"]["encrypted"], true);
    let public = created["data"]["public_key"].as_str().unwrap().to_string();
    assert!(public.starts_with("ssh-ed25519 "));
    let other = c
        .request(
            &worker.base,
            "ssh-key/create",
            json!({"token": ADMIN_TOKEN, "name": "unauthorized"}),
        )
        .await;
    assert_eq!(other["status"], "ok");

    // The server trusts key k only.
    let mut auth = std::fs::read_to_string(ssh.dir.path().join("authorized_keys")).unwrap();
    auth.push_str(&public);
    auth.push('\n');
    std::fs::write(ssh.dir.path().join("authorized_keys"), auth).unwrap();

    let list = c
        .request(&worker.base, "ssh-key/list", json!({"token": READ_TOKEN}))
        .await;
    let names: Vec<&str> = list["data"]["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["k", "unauthorized"]);
    let show = c
        .request(
            &worker.base,
            "ssh-key/show",
            json!({"token": READ_TOKEN, "name": "k"}),
        )
        .await;
    assert_eq!(show["data"]["fingerprint"], created["data"]["fingerprint"]);

    let ok = c
        .run_job_ok(
            &worker.base,
            "ssh-key/test",
            json!({"token": READ_TOKEN, "name": "k", "host": "127.0.0.1"}),
        )
        .await;
    assert_eq!(ok["data"]["authenticated"], true);
    let bad = c
        .run_job(
            &worker.base,
            "ssh-key/test",
            json!({"token": READ_TOKEN, "name": "unauthorized", "host": "127.0.0.1"}),
        )
        .await;
    assert_eq!(bad["state"], "failed", "{bad}");
    assert!(bad["error"]
        .as_str()
        .unwrap()
        .contains("could not connect to or authenticate"));
    let resp = c
        .request(
            &worker.base,
            "ssh-key/test",
            json!({"token": READ_TOKEN, "name": "k", "host": "example.com"}),
        )
        .await;
    assert_eq!(
        resp["error"]["code"], "forbidden",
        "never a free host: {resp}"
    );

    // Rotate keeps the old key as k.old; delete removes it.
    let rotated = c
        .request(
            &worker.base,
            "ssh-key/rotate",
            json!({"token": ADMIN_TOKEN, "name": "k"}),
        )
        .await;
    assert_eq!(rotated["data"]["has_old"], true, "{rotated}");
    assert_ne!(
        rotated["data"]["fingerprint"],
        created["data"]["fingerprint"]
    );
    c.request_ok(
        &worker.base,
        "ssh-key/delete",
        json!({"token": ADMIN_TOKEN, "name": "k.old"}),
    )
    .await;
    let list = c
        .request(&worker.base, "ssh-key/list", json!({"token": READ_TOKEN}))
        .await;
    assert_eq!(list["data"]["keys"].as_array().unwrap().len(), 2);
    for bad in ["../escape", ".hidden", "a/b"] {
        let resp = c
            .request(
                &worker.base,
                "ssh-key/show",
                json!({"token": READ_TOKEN, "name": bad}),
            )
            .await;
        assert_eq!(resp["error"]["code"], "invalid", "{bad}");
    }

    // Reachability: only endpoints named in the configurations.
    let tcp = c
        .request(
            &worker.base,
            "net/tcp-check",
            json!({"token": READ_TOKEN, "host": "127.0.0.1", "port": ssh.port}),
        )
        .await;
    assert_eq!(tcp["data"]["reachable"], true, "{tcp}");
    assert!(tcp["data"]["connect_ms"].as_f64().unwrap() >= 0.0);
    for (host, port) in [
        ("127.0.0.1", 22u16),
        ("192.0.2.1", ssh.port),
        ("example.com", 443),
    ] {
        let resp = c
            .request(
                &worker.base,
                "net/tcp-check",
                json!({"token": READ_TOKEN, "host": host, "port": port}),
            )
            .await;
        assert_eq!(resp["error"]["code"], "forbidden", "{host}:{port}: {resp}");
    }

    // No private material and no key passphrase in anything published or logged.
    let published = c.all_text();
    assert!(!published.contains("PRIVATE KEY"));
    assert!(!published.contains(key_pass));
    assert!(!worker.log_text().contains(key_pass));
}
