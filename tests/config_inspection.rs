//! Looking at the borgmatic configurations: list, show (redacted), validate, and the
//! Nextcloud AIO conventions check.

mod support;

use serde_json::json;
use support::*;

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
    let c = Client::connect(&broker).await;
    c.subscribe(&worker.topic("#")).await;

    let list = c
        .request(&worker.base, "config/list", json!({"token": READ_TOKEN}))
        .await;
    assert_eq!(list["status"], "ok", "{list}");
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
        .request(
            &worker.base,
            "config/show",
            json!({"token": READ_TOKEN, "repository": "secretful"}),
        )
        .await;
    assert_eq!(show["status"], "ok", "{show}");
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
    let res = c
        .run_job(
            &worker.base,
            "config/validate",
            json!({"token": READ_TOKEN, "repository": "plain"}),
        )
        .await;
    assert_eq!(res["state"], "succeeded", "{res}");
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
    let resp = c
        .request(
            &worker.base,
            "config/show",
            json!({"token": READ_TOKEN, "repository": "../../etc/passwd"}),
        )
        .await;
    assert_eq!(resp["error"]["code"], "invalid");
    let resp = c
        .request(
            &worker.base,
            "config/show",
            json!({"token": READ_TOKEN, "repository": "nope"}),
        )
        .await;
    assert_eq!(resp["error"]["code"], "not_found");
    let resp = c.request(&worker.base, "config/list", json!({})).await;
    assert_eq!(resp["error"]["code"], "unauthorized");
}
