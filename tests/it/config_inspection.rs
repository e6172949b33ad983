//! Looking at the borgmatic configurations: list, show (redacted), validate, and the
//! Nextcloud AIO conventions check.

use crate::helpers::*;
use serde_json::json;

const AIO_EXTRA: &str = "archive_name_format: '{now:%Y%m%d_%H%M%S}-nextcloud-aio'\n\
match_archives: 'sh:*_*-nextcloud-aio'\n\
keep_within: 7d\nkeep_weekly: 4\nkeep_monthly: 6\n";

#[tokio::test(flavor = "multi_thread")]
async fn list_show_validate_and_check_aio() {
    let broker = Broker::start();
    let repos = Repos::new();
    repos.add("plain", "");
    repos.add("aio", AIO_EXTRA);
    // A configuration holding secrets that config/show must mask.
    let secretful = repos.config_dir().join("secretful.yaml");
    std::fs::write(
        &secretful,
        "source_directories: [/srv]\nrepositories:\n  - path: ssh://borg:url-pw-SECRET1@backup.example.com:2222/./repo\n\
         encryption_passphrase: enc-SECRET2\nssh_command: ssh -i /root/.ssh/key-SECRET3\n\
         postgresql_databases:\n  - name: nc\n    password: db-SECRET4\n\
         healthchecks:\n  ping_url: https://hc-ping.com/uuid-SECRET5\nkeep_daily: 7\n",
    )
    .unwrap();
    std::fs::write(repos.config_dir().join("broken.yaml"), "keep_daily: [\n").unwrap();
    let worker = Worker::start(&broker, &repos, &[]).await;
    let c = subscribed(&broker, &worker.base).await;

    let list = c
        .request_ok(&worker.base, "config/list", json!({"token": READ_TOKEN}))
        .await;
    let configs = list["data"]["configs"].as_array().unwrap();
    let labels: Vec<&str> = configs
        .iter()
        .map(|c| c["repository"].as_str().unwrap())
        .collect();
    assert_eq!(labels, ["aio", "broken", "plain", "secretful"]);
    assert!(configs[1]["error"]
        .as_str()
        .unwrap()
        .contains("not valid YAML"));
    assert_eq!(
        configs[3]["repositories"][0]["location"],
        "ssh://borg@backup.example.com:2222/./repo"
    );

    let show = c
        .request_ok(
            &worker.base,
            "config/show",
            json!({"token": READ_TOKEN, "repository": "secretful"}),
        )
        .await;
    let text = show.to_string();
    for i in 1..=5 {
        assert!(
            !text.contains(&format!("SECRET{i}")),
            "SECRET{i} shown: {text}"
        );
    }
    assert_eq!(show["data"]["config"]["keep_daily"], 7);
    assert!(c.all_text().find("SECRET").is_none());

    // validate: one good config, then all (the broken one fails the job).
    c.run_job_ok(
        &worker.base,
        "config/validate",
        json!({"token": READ_TOKEN, "repository": "plain"}),
    )
    .await;
    let res = c
        .run_job(
            &worker.base,
            "config/validate",
            json!({"token": READ_TOKEN}),
        )
        .await;
    assert_eq!(res["state"], "failed", "{res}");

    // check-aio: the AIO config passes everything; the plain one fails with fixes.
    let aio = c
        .request(
            &worker.base,
            "config/check-aio",
            json!({"token": READ_TOKEN, "repository": "aio"}),
        )
        .await;
    assert_eq!(aio["data"]["repositories"][0]["passed"], true, "{aio}");
    let plain = c
        .request(
            &worker.base,
            "config/check-aio",
            json!({"token": READ_TOKEN, "repository": "plain"}),
        )
        .await;
    let checks = plain["data"]["repositories"][0]["checks"]
        .as_array()
        .unwrap();
    let failed: Vec<&str> = checks
        .iter()
        .filter(|c| c["passed"] == false)
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        failed,
        ["archive_name_format", "match_archives", "retention"],
        "{plain}"
    );
    assert!(checks
        .iter()
        .filter(|c| c["passed"] == false)
        .all(|c| c["fix"].is_string()));
    let reachable = checks.iter().find(|c| c["name"] == "reachable").unwrap();
    assert_eq!(reachable["passed"], true);

    // The repository label is validated before any file is touched.
    c.refused(
        &worker.base,
        "config/show",
        json!({"token": READ_TOKEN, "repository": "../../etc/passwd"}),
        "invalid",
    )
    .await;
    c.refused(
        &worker.base,
        "config/show",
        json!({"token": READ_TOKEN, "repository": "nope"}),
        "not_found",
    )
    .await;
    c.refused(&worker.base, "config/list", json!({}), "unauthorized")
        .await;
}

/// The places the issue found secrets in, and more: each value holds `PLANTED`.
const SECRETFUL: &str = r#"source_directories: [/srv]
repositories:
  - path: ssh://borg:PLANTED-1@backup.example.com:2222/./PLANTED-2
    label: remote
encryption_passcommand: cat /run/PLANTED-3
ssh_command: sshpass -p PLANTED-4 ssh -i /root/.ssh/PLANTED-5
before_backup:
  - curl -fsS -m 10 https://hc-ping.com/PLANTED-6/start
commands:
  - after: action
    run: [curl https://hc-ping.com/PLANTED-7]
apprise:
  services:
    - url: slack://PLANTED-8/PLANTED-9/PLANTED-10
      label: slack
    - url: tgram://PLANTED-11/PLANTED-12
      label: telegram
healthchecks:
  ping_url: PLANTED-13
constants:
  secret: PLANTED-14
some_future_option: PLANTED-15
keep_daily: 7
compression: lz4
"#;

#[tokio::test(flavor = "multi_thread")]
async fn config_show_masks_every_secret_over_mqtt_and_http() {
    let broker = Broker::start();
    let repos = Repos::new();
    std::fs::write(repos.config_dir().join("secretful.yaml"), SECRETFUL).unwrap();
    let (worker, url) = start_with_http(&broker, &repos, &[]).await;
    let c = subscribed(&broker, &worker.base).await;

    let over_mqtt = c
        .request_ok(
            &worker.base,
            "config/show",
            json!({"token": READ_TOKEN, "repository": "secretful"}),
        )
        .await;
    let (_, over_http) = post_cmd(
        &url,
        "config/show",
        Some(READ_TOKEN),
        json!({"repository": "secretful"}),
    )
    .await;
    assert_eq!(over_http["data"], over_mqtt["data"]);
    let config = &over_mqtt["data"]["config"];
    // Harmless options are shown; commands, URLs' secrets and unknown keys are not.
    assert_eq!(config["keep_daily"], 7);
    assert_eq!(config["compression"], "lz4");
    assert_eq!(config["repositories"][0]["label"], "remote");
    assert_eq!(
        config["repositories"][0]["path"],
        "ssh://backup.example.com:2222"
    );
    assert_eq!(
        config["apprise"]["services"][0]["url"],
        "slack://[redacted]"
    );
    assert_eq!(config["apprise"]["services"][1]["label"], "telegram");
    for masked in [
        "ssh_command",
        "before_backup",
        "commands",
        "constants",
        "some_future_option",
    ] {
        assert_eq!(config[masked], "[redacted]", "{masked}: {config}");
    }
    for (what, text) in [
        ("MQTT answer", over_mqtt.to_string()),
        ("HTTP answer", over_http.to_string()),
        ("published payloads", c.all_text()),
        ("the worker's log", worker.log_text()),
    ] {
        assert!(!text.contains("PLANTED"), "{what} shows a secret: {text}");
    }
}
