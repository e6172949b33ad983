//! Secrets done right: SSH key passphrases through the askpass helper (a real sshd,
//! no agent), per-request secrets only when allowed, and the equal-passphrase guard.

mod support;

use serde_json::json;
use support::*;

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
    let c = Client::connect(&broker).await;
    c.subscribe(&worker.topic("#")).await;
    let res = c
        .run_job(
            &worker.base,
            "backup/run",
            json!({"token": WRITE_TOKEN, "repository": "remote"}),
        )
        .await;
    assert_eq!(res["state"], "failed", "{res}");
    drop(worker);

    // The right one: the backup lands in the repository behind sshd.
    let worker = Worker::start(
        &broker,
        &repos,
        &[("BMQTT_REPOSITORIES__REMOTE__SSH_PASSPHRASE", SSH_PASSPHRASE)],
    )
    .await;
    let c = Client::connect(&broker).await;
    c.subscribe(&worker.topic("#")).await;
    let res = c
        .run_job(
            &worker.base,
            "backup/run",
            json!({"token": WRITE_TOKEN, "repository": "remote"}),
        )
        .await;
    assert_eq!(
        res["state"],
        "succeeded",
        "{res} {:?}",
        c.job_lines(&worker.base, res["job_id"].as_str().unwrap())
    );
    let archive = res["data"]["archive"].as_str().unwrap();
    assert_eq!(repos.archives("local"), vec![archive.to_string()]);

    let text = c.all_text();
    assert!(!text.contains(SSH_PASSPHRASE));
    assert!(!worker.log_text().contains(SSH_PASSPHRASE));
    assert_no_secrets("published payloads", &text);
}

#[tokio::test(flavor = "multi_thread")]
async fn request_secrets_need_permission_and_must_differ() {
    let broker = Broker::start();
    let repos = Repos::new();
    repos.add("nc", "");
    let worker = Worker::start(&broker, &repos, &[]).await;
    let c = Client::connect(&broker).await;
    c.subscribe(&worker.topic("#")).await;
    let resp = c
        .request(
            &worker.base,
            "backup/run",
            json!({"token": WRITE_TOKEN, "repository": "nc", "borg_passphrase": PASSPHRASE}),
        )
        .await;
    assert_eq!(resp["error"]["code"], "invalid");
    assert!(resp["error"]["message"]
        .as_str()
        .unwrap()
        .contains("auth.allow_request_secrets"));
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
    let c = Client::connect(&broker).await;
    c.subscribe(&worker.topic("#")).await;
    let resp = c
        .request(
            &worker.base,
            "backup/run",
            json!({"token": WRITE_TOKEN, "repository": "nc",
                   "borg_passphrase": "same-for-both-1", "ssh_passphrase": "same-for-both-1"}),
        )
        .await;
    assert_eq!(resp["error"]["code"], "invalid", "{resp}");
    assert!(resp["error"]["message"]
        .as_str()
        .unwrap()
        .contains("distinct"));
    let resp = c
        .request(
            &worker.base,
            "job/list",
            json!({"token": READ_TOKEN, "borg_passphrase": PASSPHRASE}),
        )
        .await;
    assert_eq!(resp["error"]["code"], "invalid", "{resp}");

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
