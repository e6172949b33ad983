//! Secrets done right: SSH key passphrases through the askpass helper (a real sshd,
//! no agent), per-request secrets only when allowed, and the equal-passphrase guard.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::helpers::*;
use serde_json::{json, Value};

const SSH_PASSPHRASE: &str = "ssh-key-passphrase-5555";

/// A repository made locally, then reached over SSH under the label `remote`.
fn remote_repo(repos: &Repos, ssh: &SshServer) {
    repos.add("local", "");
    let yaml = ssh.borgmatic_yaml("remote", &repos.repo_path("local"), &repos.source("local"));
    std::fs::write(repos.config_dir().join("remote.yaml"), yaml).unwrap();
    std::fs::remove_file(repos.config_dir().join("local.yaml")).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_over_ssh_unlocks_its_key_through_askpass() {
    let broker = Broker::start();
    let repos = Repos::new();
    let ssh = SshServer::start(SSH_PASSPHRASE);
    remote_repo(&repos, &ssh);

    // The wrong key passphrase: ssh cannot use the key, the job fails.
    let worker = Worker::start(
        &broker,
        &repos,
        &[(
            "BMQTT_REPOSITORIES__REMOTE__SSH_PASSPHRASE",
            "not-the-key-passphrase",
        )],
    )
    .await;
    let c = subscribed(&broker, &worker.base).await;
    let res = c.backup(&worker.base, "remote").await;
    assert_eq!(res["state"], "failed", "{res}");
    drop(worker);

    // The right one: the backup lands in the repository behind sshd.
    let worker = Worker::start(
        &broker,
        &repos,
        &[("BMQTT_REPOSITORIES__REMOTE__SSH_PASSPHRASE", SSH_PASSPHRASE)],
    )
    .await;
    let c = subscribed(&broker, &worker.base).await;
    let res = c.backup_ok(&worker.base, "remote").await;
    let archive = res["data"]["archive"].as_str().unwrap();
    assert_eq!(repos.archives("local"), vec![archive.to_string()]);

    let text = c.all_text();
    assert!(!text.contains(SSH_PASSPHRASE));
    assert!(!worker.log_text().contains(SSH_PASSPHRASE));
    assert_no_secrets("published payloads", &text);
}

#[tokio::test(flavor = "multi_thread")]
async fn request_secrets_need_permission_and_must_differ() {
    let Scenario {
        broker,
        repos,
        worker,
        client: c,
    } = Scenario::new().repo("nc").process().await;
    c.refused_saying(
        &worker.base,
        "backup/run",
        json!({"token": WRITE_TOKEN, "repository": "nc", "borg_passphrase": PASSPHRASE}),
        "invalid",
        "auth.allow_request_secrets",
    )
    .await;
    drop(worker);

    // Allowed: a request may bring the passphrase of a repository the worker has
    // none for, but never the same value for borg and ssh.
    let worker = Worker::start(
        &broker,
        &repos,
        &[
            ("BMQTT_AUTH__ALLOW_REQUEST_SECRETS", "true"),
            (
                "BMQTT_REPOSITORIES__NC__PASSPHRASE",
                "the-wrong-configured-one",
            ),
        ],
    )
    .await;
    let c = subscribed(&broker, &worker.base).await;
    c.refused_saying(
        &worker.base,
        "backup/run",
        json!({"token": WRITE_TOKEN, "repository": "nc",
                   "borg_passphrase": "same-for-both-1", "ssh_passphrase": "same-for-both-1"}),
        "invalid",
        "distinct",
    )
    .await;
    c.refused(
        &worker.base,
        "job/list",
        json!({"token": READ_TOKEN, "borg_passphrase": PASSPHRASE}),
        "invalid",
    )
    .await;

    let res = c
        .run_job(
            &worker.base,
            "backup/run",
            json!({"token": WRITE_TOKEN, "repository": "nc", "borg_passphrase": PASSPHRASE}),
        )
        .await;
    assert_eq!(
        res["state"], "succeeded",
        "the request's passphrase was not used: {res}"
    );
    assert_eq!(repos.archives("nc").len(), 1);
    assert_no_secrets("published payloads", &c.all_text());
    assert!(!worker.log_text().contains(PASSPHRASE));
}

const FROM_HEADER: &str = "from-nodered-header-value-3131";

/// Every secret setting, its environment name and the value the tests give it.
fn secret_table() -> Vec<(&'static str, &'static str, &'static str)> {
    vec![
        ("mqtt.password", "BMQTT_MQTT__PASSWORD", WORKER_PASSWORD),
        ("auth.read_token", "BMQTT_AUTH__READ_TOKEN", READ_TOKEN),
        ("auth.write_token", "BMQTT_AUTH__WRITE_TOKEN", WRITE_TOKEN),
        ("auth.admin_token", "BMQTT_AUTH__ADMIN_TOKEN", ADMIN_TOKEN),
        ("http.from_header", "BMQTT_HTTP__FROM_HEADER", FROM_HEADER),
        (
            "repositories.remote.passphrase",
            "BMQTT_REPOSITORIES__REMOTE__PASSPHRASE",
            PASSPHRASE,
        ),
        (
            "repositories.remote.ssh_passphrase",
            "BMQTT_REPOSITORIES__REMOTE__SSH_PASSPHRASE",
            SSH_PASSPHRASE,
        ),
    ]
}

/// The secrets the worker is configured with (in these tests): the ones it can
/// recognise. (Other broker users' passwords are unknown to it.)
fn all_secrets() -> Vec<&'static str> {
    secret_table().into_iter().map(|(_, _, v)| v).collect()
}

/// No secret, nor its first 12 characters, occurs in `text`.
fn assert_nothing_of_a_secret(what: &str, text: &str) {
    for s in all_secrets() {
        assert!(
            !text.contains(&s[..12]),
            "{what} holds (a piece of) a secret ({}…): {text}",
            &s[..6]
        );
    }
}

fn http() -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("x-from-nodered", FROM_HEADER.parse().unwrap());
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(60))
        .default_headers(headers)
        .build()
        .unwrap()
}

#[derive(Clone, Copy, Debug)]
enum Form {
    /// `BMQTT_<KEY>_FILE`
    Env,
    /// `<key>_file` in the TOML file
    Toml,
}

#[tokio::test(flavor = "multi_thread")]
async fn every_secret_works_from_its_file_in_env_and_toml_form() {
    let broker = Broker::start();
    let repos = Repos::new();
    let ssh = SshServer::start(SSH_PASSPHRASE);
    remote_repo(&repos, &ssh);
    let files = tempfile::tempdir().unwrap();
    for form in [Form::Env, Form::Toml] {
        let mut env = Worker::env(&broker, &repos);
        let mut toml = String::new();
        for (key, env_name, value) in secret_table() {
            env.retain(|(k, _)| k != env_name);
            let file = files.path().join(format!("{form:?}-{key}"));
            std::fs::write(&file, format!("{value}\n")).unwrap();
            match form {
                Form::Env => env.push((format!("{env_name}_FILE"), file.display().to_string())),
                Form::Toml => toml.push_str(&format!("{key}_file = \"{}\"\n", file.display())),
            }
        }
        if let Form::Toml = form {
            let path = files.path().join("config.toml");
            std::fs::write(&path, &toml).unwrap();
            env.push(("BORGMATIC_MQTT_CONFIG".into(), path.display().to_string()));
        }
        let port = free_port();
        env.retain(|(k, _)| k != "BMQTT_HTTP__LISTEN");
        env.push(("BMQTT_HTTP__LISTEN".into(), format!("127.0.0.1:{port}")));
        env.push(("BMQTT_DOCKER__ENABLED".into(), "false".into()));
        // `online` on the broker: mqtt.password came from its file.
        let worker = Worker::start_env(&broker, env).await;
        let c = subscribed(&broker, &worker.base).await;

        // auth.read_token: a read command passes, a write command is forbidden (the
        // token is known, as the read role).
        let list = c
            .request(&worker.base, "job/list", json!({"token": READ_TOKEN}))
            .await;
        assert_eq!(list["status"], "ok", "{form:?}: {list}");
        let denied = c
            .request(
                &worker.base,
                "backup/run",
                json!({"token": READ_TOKEN, "repository": "remote"}),
            )
            .await;
        assert_eq!(denied["error"]["code"], "forbidden", "{form:?}: {denied}");
        // auth.admin_token
        let audit = c
            .request(&worker.base, "audit/list", json!({"token": ADMIN_TOKEN}))
            .await;
        assert_eq!(audit["status"], "ok", "{form:?}: {audit}");
        // auth.write_token, and the repository's borg passphrase and SSH key
        // passphrase: a backup over SSH needs all three.
        let res = c.backup(&worker.base, "remote").await;
        assert_eq!(
            res["state"],
            "succeeded",
            "{form:?}: {res} {:?}",
            c.job_lines(&worker.base, res["job_id"].as_str().unwrap())
        );
        // http.from_header: with it the sidecar answers, without it 403.
        let url = format!("http://127.0.0.1:{port}/api/v1/jobs");
        let ok = http()
            .get(&url)
            .bearer_auth(READ_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(ok.status(), 200, "{form:?}");
        let no_header = reqwest::Client::new()
            .get(&url)
            .bearer_auth(READ_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(no_header.status(), 403, "{form:?}");

        assert_nothing_of_a_secret("published payloads", &c.all_text());
        assert_nothing_of_a_secret("the worker's log", &worker.log_text());
    }
    assert_eq!(repos.archives("local").len(), 2);
}

/// Runs ssh against the real sshd with the worker binary as its askpass helper,
/// told to answer for `expected_key` only.
fn ssh_through_askpass(ssh: &SshServer, expected_key: &Path) -> std::process::Output {
    Command::new("ssh")
        .arg("-i")
        .arg(ssh.client_key())
        .args(["-p", &ssh.port.to_string()])
        .args([
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=no",
            "-o",
            "NumberOfPasswordPrompts=1",
            "-o",
            "PasswordAuthentication=no",
            "root@127.0.0.1",
            "echo",
            "unlocked",
        ])
        .env("SSH_ASKPASS", env!("CARGO_BIN_EXE_borgmatic-mqtt"))
        .env("SSH_ASKPASS_REQUIRE", "force")
        .env("DISPLAY", "test:0")
        .env(borgmatic_mqtt::askpass::SECRET_ENV, SSH_PASSPHRASE)
        .env(borgmatic_mqtt::askpass::KEYS_ENV, expected_key)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Runs the binary as ssh would run its askpass helper, with `prompt`.
fn askpass(prompt: &str, expected_key: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_borgmatic-mqtt"))
        .arg(prompt)
        .env_clear()
        .env(borgmatic_mqtt::askpass::SECRET_ENV, SSH_PASSPHRASE)
        .env(borgmatic_mqtt::askpass::KEYS_ENV, expected_key)
        .output()
        .unwrap()
}

#[test]
fn askpass_answers_only_the_configured_keys_prompt() {
    let ssh = SshServer::start(SSH_PASSPHRASE);
    let key = ssh.client_key();

    // The key the worker configured: ssh gets the passphrase and logs in.
    let out = ssh_through_askpass(&ssh, &key);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "unlocked",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // ssh asks for this key while the worker expects another: no answer, no login.
    let other = ssh.dir.path().join("another_key");
    let out = ssh_through_askpass(&ssh, &other);
    assert!(!out.status.success());
    assert!(!String::from_utf8_lossy(&out.stdout).contains("unlocked"));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("refusing to answer"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Every other prompt, as ssh words them, gets nothing.
    let legit = format!("Enter passphrase for key '{}': ", key.display());
    for prompt in [
        "root@127.0.0.1's password: ".to_string(),
        "(root@127.0.0.1) Password: ".to_string(),
        "Are you sure you want to continue connecting (yes/no/[fingerprint])? ".to_string(),
        format!("Enter passphrase for key '{}': ", other.display()),
        format!("Enter passphrase for key '{}.old': ", key.display()),
        format!("x {legit}"),
        format!("{legit}\n"),
        "Enter passphrase for key".to_string(),
    ] {
        let out = askpass(&prompt, &key);
        assert!(!out.status.success(), "{prompt:?} was answered");
        assert!(out.stdout.is_empty(), "{prompt:?} was answered");
    }
    let out = askpass(&legit, &key);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{SSH_PASSPHRASE}\n")
    );
}

/// Every file the worker keeps under `state_dir`, with its mode.
fn modes(dir: &Path, out: &mut Vec<(PathBuf, bool, u32)>) {
    use std::os::unix::fs::PermissionsExt;
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let meta = std::fs::symlink_metadata(e.path()).unwrap();
        let mode = meta.permissions().mode() & 0o777;
        out.push((e.path(), meta.is_dir(), mode));
        if meta.is_dir() {
            modes(&e.path(), out);
        }
    }
}

fn assert_private(state_dir: &Path) -> usize {
    use std::os::unix::fs::PermissionsExt;
    let top = std::fs::metadata(state_dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(top, 0o700, "state_dir is {top:o}");
    let mut all = Vec::new();
    modes(state_dir, &mut all);
    for (path, is_dir, mode) in &all {
        if *is_dir {
            assert_eq!(*mode, 0o700, "{} is {mode:o}", path.display());
        } else {
            assert_eq!(mode & 0o077, 0, "{} is {mode:o}", path.display());
        }
    }
    all.len()
}

#[tokio::test(flavor = "multi_thread")]
async fn state_dir_is_private_to_the_worker() {
    use std::os::unix::fs::PermissionsExt;
    let Scenario {
        broker,
        repos: _repos,
        mut worker,
        client: c,
    } = Scenario::new().repo("nc").process().await;
    c.backup_ok(&worker.base, "nc").await;
    let dir = worker.state_dir.path().to_path_buf();
    for f in ["jobs.sqlite3", "audit.jsonl"] {
        assert!(dir.join(f).exists(), "{f} was not written");
    }
    let n = assert_private(&dir);
    assert!(n >= 3, "only {n} entries under state_dir");

    // A state_dir an older version left readable is tightened at start-up.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    for f in ["jobs.sqlite3", "audit.jsonl"] {
        std::fs::set_permissions(dir.join(f), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    worker.restart(&broker).await;
    let c = subscribed(&broker, &worker.base).await;
    c.backup_ok(&worker.base, "nc").await;
    assert_private(&dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_secret_in_the_wrong_field_is_never_echoed() {
    use rumqttc::v5::mqttbytes::v5::PublishProperties;
    let broker = Broker::start();
    let repos = Repos::new();
    repos.add("nc", "");
    let (worker, url) = start_with_http(
        &broker,
        &repos,
        &[
            WITH_ADMIN,
            ("BMQTT_HTTP__FROM_HEADER", FROM_HEADER),
            ("BMQTT_REPOSITORIES__NC__SSH_PASSPHRASE", SSH_PASSPHRASE),
            // Refusals past the first ten of a window are counted when it ends.
            ("BMQTT_AUDIT__REFUSAL_WINDOW_SECS", "1"),
        ],
    )
    .await;
    let c = subscribed(&broker, &worker.base).await;

    // Where a client may put a secret by mistake: every kind of field.
    let cases = |s: &str| -> Vec<(&'static str, &'static str, serde_json::Value)> {
        vec![
            ("job/list", READ_TOKEN, json!({"request_id": s})),
            ("job/get", READ_TOKEN, json!({"job_id": s})),
            ("backup/run", WRITE_TOKEN, json!({"repository": s})),
            ("config/show", READ_TOKEN, json!({"repository": s})),
            (
                "archive/info",
                READ_TOKEN,
                json!({"repository": "nc", "archive": s}),
            ),
            (
                "archive/extract",
                WRITE_TOKEN,
                json!({"repository": "nc", "archive": "x", "paths": [s]}),
            ),
            ("ssh-key/show", READ_TOKEN, json!({"name": s})),
            ("net/tcp-check", READ_TOKEN, json!({"host": s, "port": 22})),
            ("job/list", READ_TOKEN, json!({ s: 1 })),
            (
                "job/list",
                READ_TOKEN,
                json!({"request_id": format!("{s}-2")}),
            ),
        ]
    };
    let mut answers = String::new();
    for secret in all_secrets() {
        for (i, (command, token, mut body)) in cases(secret).into_iter().enumerate() {
            // MQTT: the answer is found by its correlation data (its request id may
            // be the very thing that is withheld).
            body["token"] = json!(token);
            let corr = format!("c-{}-{i}", &secret[..4]);
            let props = PublishProperties {
                correlation_data: Some(corr.clone().into_bytes().into()),
                ..Default::default()
            };
            c.publish_with(&worker.base, command, body.to_string().into_bytes(), props)
                .await;
            let resp = c
                .wait_for(|m| {
                    m.topic.contains("/response/")
                        && m.correlation.as_deref() == Some(corr.as_bytes())
                })
                .await
                .json();
            assert_eq!(resp["error"]["code"], "invalid", "{command} {body}: {resp}");
            assert!(resp["request_id"].is_null(), "{resp}");
            answers.push_str(&resp.to_string());

            // HTTP: the same body, the token in the header.
            body.as_object_mut().unwrap().remove("token");
            let r = http()
                .post(format!("{url}/api/v1/cmd/{command}"))
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 400, "{command} {body}");
            answers.push_str(&r.text().await.unwrap());
        }
        // HTTP paths and query strings.
        for path in [
            format!("/api/v1/jobs/{secret}"),
            format!("/api/v1/jobs/{secret}/log"),
            format!("/api/v1/jobs?{secret}=1"),
            format!("/api/v1/cmd/job/{secret}"),
        ] {
            let req = if path.starts_with("/api/v1/cmd") {
                http().post(format!("{url}{path}")).json(&json!({}))
            } else {
                http().get(format!("{url}{path}"))
            };
            let r = req.bearer_auth(READ_TOKEN).send().await.unwrap();
            assert_eq!(r.status(), 400, "{path}");
            answers.push_str(&r.text().await.unwrap());
        }
    }
    assert_nothing_of_a_secret("answers", &answers);
    // Nothing ran, and the worker still answers.
    let list = c
        .request(&worker.base, "job/list", json!({"token": READ_TOKEN}))
        .await;
    assert_eq!(list["status"], "ok");
    assert_eq!(list["data"]["jobs"].as_array().unwrap().len(), 0, "{list}");
    assert_nothing_of_a_secret("published payloads", &c.all_text());
    // Refusals before authentication are itemised up to a limit per window, the
    // rest counted (`count`) when the window ends: together they account for
    // every request.
    let deadline = std::time::Instant::now() + WAIT;
    let (audit, accounted) = loop {
        let audit = std::fs::read_to_string(worker.state_dir.path().join("audit.jsonl")).unwrap();
        let accounted: u64 = audit
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .map(|l| l["count"].as_u64().unwrap_or(1))
            .sum();
        if accounted > 100 || std::time::Instant::now() > deadline {
            break (audit, accounted);
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert!(accounted > 100, "refusals are audited: {accounted}");
    assert_nothing_of_a_secret("the audit trail", &audit);
    assert_nothing_of_a_secret("the worker's log", &worker.log_text());
}
