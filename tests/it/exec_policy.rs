//! The exec policy against a real Docker engine, over MQTT and HTTP: a write token
//! reaches no admin capability through `container/exec` (whatever env, spelling or
//! container reference it tries), an exec in an AIO container waits for AIO and
//! borgmatic backups, the deny-list refuses every wrapper and interpreter even when
//! a rule names it, and `security/exec-policy` answers a dry run. Each refusal is
//! proven by the stand-ins' evidence files: nothing ran.

use std::time::Duration;

use crate::helpers::docker::{engine_or_skip, Aio};
use crate::helpers::*;
use serde_json::{json, Value};

/// One worker with MQTT, HTTP, an admin token and Docker.
async fn worker_with(
    broker: &Broker,
    repos: &Repos,
    aio: &Aio,
    extra: &[(&str, &str)],
) -> (TestApp, String) {
    let env = aio.worker_env();
    let mut all: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    all.extend_from_slice(&[
        ("BMQTT_DOCKER__ENABLED", "true"),
        ("BMQTT_LIMITS__WRITE_PER_MINUTE", "1000"),
        WITH_ADMIN,
    ]);
    all.extend_from_slice(extra);
    start_with_http(broker, repos, &all).await
}

/// Sends one command over MQTT and over HTTP; both answers.
async fn both(c: &Client, base: &str, url: &str, command: &str, body: Value) -> [Value; 2] {
    let mqtt = c.request(base, command, body.clone()).await;
    let mut http_body = body.clone();
    let token = http_body
        .as_object_mut()
        .and_then(|o| o.remove("token"))
        .and_then(|t| t.as_str().map(str::to_string));
    let mut req = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
        .post(format!("{url}/api/v1/cmd/{command}"))
        .json(&http_body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let http = req.send().await.unwrap().json().await.unwrap();
    [mqtt, http]
}

fn aio_env(d: u8, c: u8, stop: u8, start: u8, auto: u8) -> Value {
    json!({
        "DAILY_BACKUP": d.to_string(), "CHECK_BACKUP": c.to_string(),
        "STOP_CONTAINERS": stop.to_string(), "START_CONTAINERS": start.to_string(),
        "AUTOMATIC_UPDATES": auto.to_string(),
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_write_token_reaches_no_admin_capability_through_exec() {
    if !engine_or_skip("a_write_token_reaches_no_admin_capability_through_exec") {
        return;
    }
    let broker = Broker::start();
    let repos = Repos::new();
    let aio = Aio::start(&[], &[]);
    let (worker, url) = worker_with(&broker, &repos, &aio, &[]).await;
    let c = subscribed(&broker, &worker.base).await;
    let m = aio.master();
    let backup_ok = aio_env(1, 0, 0, 1, 0);
    let id = Aio::id(&m);

    let exec = |container: &str, command: Value, env: Value| json!({"token": WRITE_TOKEN, "container": container, "command": command, "env": env});
    let cases: Vec<(&str, Value, &str)> = vec![
        // The issue's example, and the same with every flag set.
        (
            "container/exec",
            exec(
                &m,
                json!(["/daily-backup.sh"]),
                json!({"DAILY_BACKUP": "0", "STOP_CONTAINERS": "1"}),
            ),
            "no exec policy rule allows this env",
        ),
        (
            "container/exec",
            exec(&m, json!(["/daily-backup.sh"]), aio_env(0, 0, 1, 0, 0)),
            "needs the admin role (exec policy rule aio-stop)",
        ),
        (
            "container/exec",
            exec(&m, json!(["/daily-backup.sh"]), aio_env(0, 0, 0, 0, 0)),
            "needs the admin role (exec policy rule aio-stop)",
        ),
        // A backup that leaves Nextcloud stopped is aio/stop too.
        (
            "container/exec",
            exec(&m, json!(["/daily-backup.sh"]), aio_env(1, 0, 1, 0, 0)),
            "needs the admin role (exec policy rule aio-backup-leave-stopped)",
        ),
        (
            "aio/backup",
            json!({"token": WRITE_TOKEN, "start_containers": false}),
            "aio-backup-leave-stopped",
        ),
        // Unset flags are inherited from the container, never "off".
        (
            "container/exec",
            exec(&m, json!(["/daily-backup.sh"]), json!({})),
            "unset, it is inherited",
        ),
        // Other env names the script (or the shell) reads.
        (
            "container/exec",
            exec(&m, json!(["/daily-backup.sh"]), {
                let mut e = backup_ok.clone();
                e["LOCK_FILE_PRESENT"] = json!("0");
                e
            }),
            "does not allow env \"LOCK_FILE_PRESEN\"",
        ),
        (
            "container/exec",
            exec(&m, json!(["/daily-backup.sh"]), {
                let mut e = backup_ok.clone();
                e["BASH_ENV"] = json!("/tmp/x");
                e
            }),
            "BASH_ENV",
        ),
        // Other spellings of the script, other scripts.
        (
            "container/exec",
            exec(&m, json!(["//daily-backup.sh"]), backup_ok.clone()),
            "no exec policy rule allows this exact command",
        ),
        (
            "container/exec",
            exec(&m, json!(["/./daily-backup.sh"]), backup_ok.clone()),
            "no exec policy rule allows this exact command",
        ),
        (
            "container/exec",
            exec(&m, json!(["daily-backup.sh"]), backup_ok.clone()),
            "no exec policy rule allows this exact command",
        ),
        (
            "container/exec",
            exec(&m, json!(["/borg-standin.sh"]), json!({})),
            "no exec policy rule allows this exact command",
        ),
        // The mastercontainer by id, id prefix, or another case.
        (
            "container/exec",
            exec(&id, json!(["/daily-backup.sh"]), backup_ok.clone()),
            "no exec policy rule",
        ),
        (
            "container/exec",
            exec(&id[..12], json!(["/daily-backup.sh"]), backup_ok.clone()),
            "no exec policy rule",
        ),
        (
            "container/exec",
            exec(
                &m.to_uppercase(),
                json!(["/daily-backup.sh"]),
                backup_ok.clone(),
            ),
            "no exec policy rule",
        ),
        // The admin command itself.
        ("aio/stop", json!({"token": WRITE_TOKEN}), "admin role"),
    ];
    for (command, body, needle) in &cases {
        for resp in both(&c, &worker.base, &url, command, body.clone()).await {
            assert_eq!(
                resp["error"]["code"], "forbidden",
                "{command} {body}: {resp}"
            );
            let msg = resp["error"]["message"].as_str().unwrap();
            assert!(msg.contains(needle), "{command} {body}: {msg}");
        }
    }
    assert!(
        !aio.master_has("/tmp/daily-backup-ran"),
        "a refused daily-backup.sh ran"
    );
    let jobs = c
        .request(&worker.base, "job/list", json!({"token": READ_TOKEN}))
        .await;
    assert_eq!(
        jobs["data"]["jobs"],
        json!([]),
        "a refused exec became a job"
    );

    // The dry run says the same without running anything.
    let check = |env: Value, token: &str| json!({"token": token, "check": {"container": m, "command": ["/daily-backup.sh"], "env": env}});
    for resp in both(
        &c,
        &worker.base,
        &url,
        "security/exec-policy",
        check(aio_env(0, 0, 1, 0, 0), READ_TOKEN),
    )
    .await
    {
        let d = &resp["data"];
        assert_eq!(d["allowed"], true, "{resp}");
        assert_eq!(d["rule"]["name"], "aio-stop");
        assert_eq!(d["role"], "admin");
        assert_eq!(d["caller_role"], "read");
        assert_eq!(d["caller_allowed"], false);
        assert_eq!(d["aio_exclusive"], true);
    }
    for resp in both(
        &c,
        &worker.base,
        &url,
        "security/exec-policy",
        check(
            json!({"DAILY_BACKUP": "0", "STOP_CONTAINERS": "1"}),
            WRITE_TOKEN,
        ),
    )
    .await
    {
        assert_eq!(resp["data"]["allowed"], false, "{resp}");
        assert_eq!(resp["data"]["refused_by"], "env");
    }
    let resp = c
        .request(
            &worker.base,
            "security/exec-policy",
            json!({"token": WRITE_TOKEN, "check": {"container": m, "command": ["/daily-backup.sh"], "env": backup_ok}}),
        )
        .await;
    assert_eq!(
        (
            &resp["data"]["rule"]["name"],
            &resp["data"]["role"],
            &resp["data"]["caller_allowed"]
        ),
        (&json!("aio-backup"), &json!("write"), &json!(true)),
        "{resp}"
    );
    c.refused(
        &worker.base,
        "security/exec-policy",
        json!({"token": READ_TOKEN, "check": {"container": m, "command": ["/x"], "bogus": 1}}),
        "invalid",
    )
    .await;
    assert!(
        !aio.master_has("/tmp/daily-backup-ran"),
        "the dry run ran it"
    );

    // The admin token may stop Nextcloud through exec (aio-stop).
    let res = c
        .run_job_ok(
            &worker.base,
            "container/exec",
            json!({"token": ADMIN_TOKEN, "container": m, "command": ["/daily-backup.sh"],
                   "env": aio_env(0, 0, 1, 0, 0)}),
        )
        .await;
    let job = res["job_id"].as_str().unwrap();
    assert!(c.job_lines(&worker.base, job).iter().any(|l| l["line"]
        .as_str()
        .unwrap()
        .contains("STOP_CONTAINERS=1 START_CONTAINERS=0")));
    assert!(aio.master_has("/tmp/daily-backup-ran"));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_exec_in_an_aio_container_waits_for_aio_and_borgmatic_backups() {
    if !engine_or_skip("an_exec_in_an_aio_container_waits_for_aio_and_borgmatic_backups") {
        return;
    }
    let broker = Broker::start();
    let repos = Repos::new();
    repos.add("aio", "");
    let mut aio = Aio::start(&["SCRIPT_SLEEP=600"], &[]);
    let plain = aio.start_plain();
    let policy = repos.dir.path().join("policy.toml");
    // A rule naming a container by an id prefix: Docker would resolve it, the
    // worker refuses anything but a container's own name.
    let alias = Aio::id(&plain)[..12].to_string();
    std::fs::write(
        &policy,
        format!(
            "[[allow]]\nname = \"plain-echo\"\ncontainer = \"{plain}\"\nargv = [\"echo\", \"hi\"]\nrole = \"write\"\n\n\
             [[allow]]\nname = \"by-id\"\ncontainer = \"{alias}\"\nargv = [\"touch\", \"/tmp/by-id\"]\nrole = \"write\"\n"
        ),
    )
    .unwrap();
    let policy = policy.display().to_string();
    let (worker, url) = worker_with(
        &broker,
        &repos,
        &aio,
        &[
            ("BMQTT_REPOSITORIES__AIO__AIO", "true"),
            ("BMQTT_DOCKER__EXEC_POLICY_FILE", policy.as_str()),
        ],
    )
    .await;
    let c = subscribed(&broker, &worker.base).await;
    let health =
        json!({"token": WRITE_TOKEN, "container": aio.master(), "command": ["/healthcheck.sh"]});
    let plain_echo = json!({"token": WRITE_TOKEN, "container": plain, "command": ["echo", "hi"]});

    let by_id =
        json!({"token": WRITE_TOKEN, "container": alias, "command": ["touch", "/tmp/by-id"]});
    for resp in both(&c, &worker.base, &url, "container/exec", by_id).await {
        assert_eq!(resp["error"]["code"], "forbidden", "{resp}");
        assert!(resp["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not the name of a container"));
    }
    assert!(!Aio::has(&plain, "/tmp/by-id"), "an exec by id prefix ran");

    // Our own AIO backup runs (its script sleeps).
    let job = c
        .start_job(&worker.base, "aio/backup", json!({"token": WRITE_TOKEN}))
        .await;
    for resp in both(&c, &worker.base, &url, "container/exec", health.clone()).await {
        assert_eq!(resp["error"]["code"], "busy", "{resp}");
        assert_eq!(resp["data"]["job_id"], json!(job));
    }
    // An exec outside AIO is not held up.
    c.run_job_ok(&worker.base, "container/exec", plain_echo.clone())
        .await;
    c.cancel(&worker.base, &job).await;

    // AIO's borgbackup container runs on its own.
    aio.start_borgbackup_running();
    for resp in both(&c, &worker.base, &url, "container/exec", health.clone()).await {
        assert_eq!(resp["error"]["code"], "busy", "{resp}");
        assert!(resp["error"]["message"]
            .as_str()
            .unwrap()
            .contains("borgbackup"));
    }
    aio.stop_borgbackup();

    // AIO's lock file in the repository.
    let lockfile = repos.repo_path("aio").join("aio-lockfile");
    std::fs::write(&lockfile, "").unwrap();
    for resp in both(&c, &worker.base, &url, "container/exec", health.clone()).await {
        assert_eq!(resp["error"]["code"], "busy", "{resp}");
        assert!(resp["error"]["message"]
            .as_str()
            .unwrap()
            .contains("aio-lockfile"));
    }
    std::fs::remove_file(&lockfile).unwrap();

    // A borgmatic backup of the AIO repository (held open by a FIFO).
    repos.block_backups("aio");
    let b = c.start_backup(&worker.base, "aio").await;
    for resp in both(&c, &worker.base, &url, "container/exec", health.clone()).await {
        assert_eq!(resp["error"]["code"], "busy", "{resp}");
        assert_eq!(resp["data"]["job_id"], json!(b));
    }
    c.cancel(&worker.base, &b).await;

    // Free again: the exec runs.
    c.run_job_ok(&worker.base, "container/exec", health).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_deny_list_refuses_wrappers_and_interpreters_a_rule_names() {
    if !engine_or_skip("the_deny_list_refuses_wrappers_and_interpreters_a_rule_names") {
        return;
    }
    let broker = Broker::start();
    let repos = Repos::new();
    let mut aio = Aio::start(&[], &[]);
    let plain = aio.start_plain();
    Aio::exec(&plain, &["touch", "/tmp/keep"]);
    let pwn = "touch /tmp/pwned";
    // (argv, the deny-list entry that refuses it)
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["env", "sh", "-c", pwn], "env"),
        (vec!["nice", "bash", "-c", pwn], "nice"),
        (vec!["timeout", "5", "/bin/sh", "-c", pwn], "timeout"),
        (vec!["python3", "-c", "open('/tmp/pwned','w')"], "python"),
        (vec!["perl", "-e", "open(F,'>/tmp/pwned')"], "perl"),
        (vec!["php", "-r", "touch('/tmp/pwned');"], "php"),
        (
            vec![
                "node",
                "--eval",
                "require('fs').writeFileSync('/tmp/pwned','')",
            ],
            "node",
        ),
        (vec!["awk", "BEGIN{system(\"touch /tmp/pwned\")}"], "awk"),
        (vec!["find", "/tmp/keep", "-delete"], "-delete"),
        (
            vec!["find", "/tmp/keep", "-exec", "touch", "/tmp/pwned", ";"],
            "-exec",
        ),
        (vec!["setsid", "touch", "/tmp/pwned"], "setsid"),
        (
            vec!["xargs", "-a", "/tmp/keep", "touch", "/tmp/pwned"],
            "xargs",
        ),
        (vec!["sed", "-n", "1e touch /tmp/pwned", "/tmp/keep"], "sed"),
        (vec!["busybox", "touch", "/tmp/pwned"], "busybox"),
        (
            vec![
                "tar",
                "-cf",
                "/tmp/x.tar",
                "--checkpoint=1",
                "--checkpoint-action=exec=touch /tmp/pwned",
                "/tmp/keep",
            ],
            "--checkpoint-action",
        ),
    ];
    let mut file = String::new();
    for (argv, _) in &cases {
        file.push_str(&format!(
            "[[allow]]\ncontainer = \"{plain}\"\nargv = {argv:?}\nrole = \"write\"\n\n"
        ));
    }
    // A control rule: the file is live and the evidence check would see a run.
    file.push_str(&format!(
        "[[allow]]\nname = \"control\"\ncontainer = \"{plain}\"\nargv = [\"touch\", \"/tmp/allowed\"]\nrole = \"write\"\n"
    ));
    let policy = repos.dir.path().join("policy.toml");
    std::fs::write(&policy, file).unwrap();
    let policy = policy.display().to_string();
    let (worker, url) = worker_with(
        &broker,
        &repos,
        &aio,
        &[("BMQTT_DOCKER__EXEC_POLICY_FILE", policy.as_str())],
    )
    .await;
    let c = subscribed(&broker, &worker.base).await;

    for (argv, entry) in &cases {
        let body = json!({"token": WRITE_TOKEN, "container": plain, "command": argv});
        for resp in both(&c, &worker.base, &url, "container/exec", body).await {
            assert_eq!(resp["error"]["code"], "forbidden", "{argv:?}: {resp}");
            let msg = resp["error"]["message"].as_str().unwrap();
            assert!(
                msg.contains(&format!("deny-list entry `{entry}`")),
                "{argv:?}: {msg}"
            );
        }
        // The dry run names the same entry.
        let check = json!({"token": READ_TOKEN, "check": {"container": plain, "command": argv}});
        for resp in both(&c, &worker.base, &url, "security/exec-policy", check).await {
            assert_eq!(resp["data"]["allowed"], false, "{resp}");
            assert_eq!(resp["data"]["refused_by"], "deny_list");
            assert_eq!(resp["data"]["deny"]["entry"], *entry, "{resp}");
        }
    }
    assert!(!Aio::has(&plain, "/tmp/pwned"), "a denied command ran");
    assert!(Aio::has(&plain, "/tmp/keep"), "a denied find -delete ran");

    // Malformed requests: invalid, and a read token: forbidden.
    for (body, code) in [
        (
            json!({"token": WRITE_TOKEN, "container": plain, "command": "touch /tmp/pwned"}),
            "invalid",
        ),
        (
            json!({"token": WRITE_TOKEN, "container": "../x", "command": ["touch", "/tmp/allowed"]}),
            "invalid",
        ),
        (
            json!({"token": WRITE_TOKEN, "container": plain, "command": ["touch", "/tmp/allowed"], "env": {"A": 1}}),
            "invalid",
        ),
        (
            json!({"token": READ_TOKEN, "container": plain, "command": ["touch", "/tmp/allowed"]}),
            "forbidden",
        ),
    ] {
        for resp in both(&c, &worker.base, &url, "container/exec", body.clone()).await {
            assert_eq!(resp["error"]["code"], code, "{body}: {resp}");
        }
    }
    assert!(!Aio::has(&plain, "/tmp/allowed"));

    // The listing marks the rules that can never match.
    let listing = c
        .request(
            &worker.base,
            "security/exec-policy",
            json!({"token": READ_TOKEN}),
        )
        .await;
    let rules = listing["data"]["allow"].as_array().unwrap();
    let inert = rules
        .iter()
        .filter(|r| r["never_matches"].is_object())
        .count();
    assert_eq!(inert, cases.len(), "{listing}");
    assert!(listing["data"]["deny"]["programs"]["wrapper"]
        .as_array()
        .unwrap()
        .contains(&json!("timeout")));

    // The control rule runs: the evidence check works, and the worker still answers.
    c.run_job_ok(
        &worker.base,
        "container/exec",
        json!({"token": WRITE_TOKEN, "container": plain, "command": ["touch", "/tmp/allowed"]}),
    )
    .await;
    assert!(Aio::has(&plain, "/tmp/allowed"));
    assert!(!Aio::has(&plain, "/tmp/pwned"));
}
