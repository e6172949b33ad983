//! Completeness of what operators asked of the predecessor scripts: an
//! `authorized_keys` line that confines a worker's key to `borg serve` below one
//! path (proved against a real sshd and a real borg client), allow-listed FUSE
//! mount options (proved on a real mount), and a per-request job timeout bounded
//! by the configured one (proved on a backup whose hook sleeps).

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::*;

/// `ssh` options that use only `key` and trust the throwaway host key.
fn ssh_options(key: &Path) -> String {
    format!(
        "ssh -i {} -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR",
        key.display()
    )
}

/// Asks the test sshd, as root with `key`, to run a shell command that prints
/// 42PWNED and the user's id.
fn client_command(ssh: &SshServer, key: &Path) -> std::process::Output {
    Command::new("ssh")
        .args(ssh_options(key).split(' ').skip(1))
        .args([
            "-p",
            &ssh.port.to_string(),
            "root@127.0.0.1",
            "echo $((6*7))PWNED; id",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// `borg list` of `repo` on the test sshd, as a borg client with `key`.
fn borg_list_over_ssh(repos: &Repos, ssh: &SshServer, key: &Path, repo: &Path) -> (bool, String) {
    let out = Command::new("borg")
        .args(["list", "--short"])
        .arg(format!(
            "ssh://root@127.0.0.1:{}{}",
            ssh.port,
            repo.display()
        ))
        .envs(repos.borg_env())
        .env("BORG_PASSPHRASE", PASSPHRASE)
        .env("BORG_RELOCATED_REPO_ACCESS_IS_OK", "yes")
        .env("BORG_RSH", ssh_options(key))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_authorized_line_confines_the_key_to_borg_serve_below_its_path() {
    let broker = Broker::start();
    let repos = Repos::new();
    let ssh = SshServer::start("");
    repos.add("local", "");
    repos.add("other", "");
    let key_dir = repos.dir.path().join("keys");
    let key = key_dir.join("k");
    let local = repos.repo_path("local");
    // The worker reaches repository `local` over SSH, as `remote`, with its own key.
    std::fs::write(
        repos.config_dir().join("remote.yaml"),
        format!(
            "source_directories:\n  - {}\nrepositories:\n  - path: ssh://root@127.0.0.1:{}{}\n    label: remote\n\
             ssh_command: {}\nrelocated_repo_access_is_ok: true\nkeep_daily: 7\n",
            repos.source("local").display(),
            ssh.port,
            local.display(),
            ssh_options(&key),
        ),
    )
    .unwrap();
    let key_dir_s = key_dir.display().to_string();
    let worker = TestApp::spawn(
        &broker,
        &repos,
        &[
            WITH_ADMIN,
            ("BMQTT_SSH__KEY_DIR", key_dir_s.as_str()),
            ("BMQTT_DOCKER__ENABLED", "false"),
        ],
    )
    .await;
    let c = subscribed(&broker, &worker.base).await;
    let base = worker.base.clone();

    let created = c
        .request_ok(
            &base,
            "ssh-key/create",
            json!({"token": ADMIN_TOKEN, "name": "k"}),
        )
        .await;
    let public = created["data"]["public_key"].as_str().unwrap().to_string();

    // From the repository's configured ssh:// path, append-only; read role suffices.
    let resp = c
        .request_ok(
            &base,
            "ssh-key/authorized-line",
            json!({"token": READ_TOKEN, "name": "k", "repository": "remote", "append_only": true}),
        )
        .await;
    let line = resp["data"]["line"].as_str().unwrap().to_string();
    assert_eq!(
        line,
        format!(
            "command=\"borg serve --restrict-to-path {} --append-only\",restrict {public}",
            local.display()
        )
    );
    assert_eq!(resp["data"]["path"], json!(local.display().to_string()));
    assert_eq!(resp["data"]["append_only"], true);
    assert_eq!(resp["data"]["fingerprint"], created["data"]["fingerprint"]);

    // From a path the request names, without --append-only.
    let resp = c
        .request(
            &base,
            "ssh-key/authorized-line",
            json!({"token": READ_TOKEN, "name": "k", "path": "/srv/borg/nc/"}),
        )
        .await;
    assert_eq!(
        resp["data"]["line"],
        json!(format!(
            "command=\"borg serve --restrict-to-path /srv/borg/nc\",restrict {public}"
        )),
        "{resp}"
    );

    // Refusals: bad paths, both or neither source, a repository without ssh://.
    for (body, code) in [
        (json!({"path": "srv/borg"}), "invalid"),
        (json!({"path": "/srv/borg nc"}), "invalid"),
        (json!({"path": "/srv/../etc"}), "invalid"),
        (json!({"path": "/srv/x\",no-restrict"}), "invalid"),
        (json!({"path": "/srv/$(id)"}), "invalid"),
        (json!({"path": "/srv/x\ny"}), "invalid"),
        (json!({"path": "-/x"}), "invalid"),
        (json!({"path": "/"}), "invalid"),
        (json!({"path": 7}), "invalid"),
        (json!({"path": "/srv", "repository": "remote"}), "invalid"),
        (json!({}), "invalid"),
        (json!({"repository": "local"}), "invalid"),
        (json!({"repository": "missing"}), "not_found"),
        (json!({"path": "/srv", "extra": 1}), "invalid"),
    ] {
        let mut body = body;
        body["token"] = json!(READ_TOKEN);
        body["name"] = json!("k");
        let resp = c
            .request(&base, "ssh-key/authorized-line", body.clone())
            .await;
        assert_eq!(resp["error"]["code"], code, "{body} -> {resp}");
    }
    // Only a key this worker made; an unknown one is not found.
    std::fs::copy(ssh.client_key(), key_dir.join("foreign")).unwrap();
    std::fs::copy(
        ssh.dir.path().join("client_key.pub"),
        key_dir.join("foreign.pub"),
    )
    .unwrap();
    for (name, code) in [("foreign", "invalid"), ("nokey", "not_found")] {
        let resp = c
            .request(
                &base,
                "ssh-key/authorized-line",
                json!({"token": READ_TOKEN, "name": name, "path": "/srv"}),
            )
            .await;
        assert_eq!(resp["error"]["code"], code, "{name}: {resp}");
    }

    // Control: the unrestricted key of the sshd helper does run the command.
    let out = client_command(&ssh, &ssh.client_key());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("42PWNED") && text.contains("uid="), "{text}");

    // The server trusts the worker's key with this line only.
    std::fs::write(ssh.dir.path().join("authorized_keys"), format!("{line}\n")).unwrap();

    // Any command the client asks for is replaced by borg serve. A shell would
    // print 42PWNED and `id` would print uid=…; borg serve only sees the original
    // command as text (it reads SSH_ORIGINAL_COMMAND for client options, split
    // like a shell but never expanded, and refuses it), so neither appears.
    let out = client_command(&ssh, &key);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !text.contains("42PWNED"),
        "the client's command ran: {text}"
    );
    assert!(!text.contains("uid="), "the client's command ran: {text}");
    assert!(text.contains("borg"), "borg serve did not answer: {text}");

    // A borg client works on the repository below the path and is refused elsewhere.
    let (ok, text) = borg_list_over_ssh(&repos, &ssh, &key, &local);
    assert!(ok, "borg list below the path: {text}");
    let (ok, text) = borg_list_over_ssh(&repos, &ssh, &key, &repos.repo_path("other"));
    assert!(!ok, "borg list outside the path succeeded: {text}");
    assert!(
        text.contains("not allowed") || text.contains("PathNotAllowed"),
        "{text}"
    );

    // The worker backs up through the append-only line.
    let res = c.backup_ok(&base, "remote").await;
    let archive = res["data"]["archive"].as_str().unwrap();
    assert_eq!(repos.archives("local"), vec![archive.to_string()]);
}

fn mounted(dir: &Path) -> bool {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let needle = format!(" {} ", dir.display());
    mountinfo.lines().any(|l| l.contains(&needle))
}

#[tokio::test(flavor = "multi_thread")]
async fn mount_options_set_owner_and_mode_and_nothing_else_is_accepted() {
    let Scenario {
        broker: _broker,
        repos,
        worker,
        client: c,
    } = Scenario::new().repo("nc").app().await;
    let base = worker.base.clone();
    let res = c.backup_ok(&base, "nc").await;
    let archive = res["data"]["archive"].as_str().unwrap().to_string();

    // Refused before anything runs: unknown options, bad values; nothing mounted.
    for options in [
        // borg 1.2 cannot mount with an id that names no user or group here.
        json!({"uid": 4242}),
        json!({"gid": 4343}),
        json!({"default_permissions": true}),
        json!({"allow_root": true}),
        json!({"uid": -1}),
        json!({"uid": "1000"}),
        json!({"uid": 4294967295u64}),
        json!({"gid": "0,allow_other"}),
        json!({"umask": "0999"}),
        json!({"umask": "022,allow_other"}),
        json!({"umask": 18}),
        json!({"allow_other": "yes"}),
        json!("allow_other"),
    ] {
        let resp = c
            .request(
                &base,
                "archive/mount",
                json!({"token": WRITE_TOKEN, "repository": "nc", "archive": archive,
                       "mount_point": "refused", "options": options}),
            )
            .await;
        assert_eq!(resp["error"]["code"], "invalid", "{options} -> {resp}");
        assert!(resp.get("job_id").is_none(), "{resp}");
    }
    let refused = repos.mount_root().join("refused");
    assert!(
        !refused.exists(),
        "a mount point was made for a refused request"
    );
    assert!(!mounted(&refused));
    // umount takes no options.
    c.refused(
        &base,
        "archive/umount",
        json!({"token": WRITE_TOKEN, "repository": "nc", "mount_point": "m",
                   "options": {"uid": 1}}),
        "invalid",
    )
    .await;

    // `daemon` (1) and `bin` (2) exist in every Debian image; neither is ours (root).
    let body = json!({"token": WRITE_TOKEN, "repository": "nc", "archive": archive,
                      "mount_point": "owned",
                      "options": {"uid": 1, "gid": 2, "umask": "0027", "allow_other": true}});
    if !fuse_or_skip("mount_options_set_owner_and_mode_and_nothing_else_is_accepted") {
        c.refused(&base, "archive/mount", body, "unavailable").await;
        return;
    }
    let res = c.run_job_ok(&base, "archive/mount", body).await;
    assert_eq!(
        res["data"]["options"],
        json!({"allow_other": true, "uid": 1, "gid": 2, "umask": "0027"})
    );
    let point = repos.mount_root().join("owned");
    assert!(mounted(&point));
    let file = point
        .join(repos.source("nc").strip_prefix("/").unwrap())
        .join("hello.txt");
    let meta = std::fs::metadata(&file).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (1, 2), "{file:?}");
    let source_mode = std::fs::metadata(repos.source("nc").join("hello.txt"))
        .unwrap()
        .mode();
    assert_eq!(meta.mode() & 0o777, source_mode & 0o777 & !0o027);
    assert_eq!(std::fs::read(&file).unwrap(), b"hello world\n");
    let options = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .find(|l| l.contains(&format!(" {} ", point.display())))
        .unwrap()
        .to_string();
    assert!(options.contains("allow_other"), "{options}");

    c.run_job_ok(
        &base,
        "archive/umount",
        json!({"token": WRITE_TOKEN, "repository": "nc", "mount_point": "owned"}),
    )
    .await;
    assert!(!mounted(&point));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_timeout_ends_a_job_early_within_the_configured_maximum() {
    // A sleep length of this run only, so that a process is recognised as ours.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let sleep = format!("sleep {}", 3000 + nanos % 5000);
    let marker = tempfile::tempdir().unwrap();
    let started_file = marker.path().join("hook-started");
    let hook = format!("touch {} && {sleep}", started_file.display());
    let Scenario {
        broker: _broker,
        repos,
        worker,
        client: c,
    } = Scenario::new()
        .repo_with(
            "slow",
            &format!(
                "commands:\n  - before: action\n    when:\n      - create\n    run:\n      - {hook}\n"
            ),
        )
        .setting("BMQTT_JOBS__TIMEOUTS__BACKUP_RUN", "30")
        .setting("BMQTT_JOBS__KILL_GRACE_SECS", "3")
        .app()
        .await;
    let base = worker.base.clone();

    // Bounds: never above the command's maximum, never 0, only whole seconds,
    // only for job commands.
    for (command, timeout, says) in [
        ("backup/run", json!(31), "30"),
        ("backup/run", json!(0), "at least 1"),
        ("backup/run", json!(-1), "at least 1"),
        ("backup/run", json!(2.5), "at least 1"),
        ("backup/run", json!("2"), "at least 1"),
        ("job/list", json!(2), "takes no timeout_secs"),
    ] {
        let resp = c
            .request(
                &base,
                command,
                json!({"token": WRITE_TOKEN, "repository": "slow", "timeout_secs": timeout}),
            )
            .await;
        assert_eq!(resp["error"]["code"], "invalid", "{timeout} -> {resp}");
        let message = resp["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{message}");
        assert!(resp.get("job_id").is_none(), "{resp}");
    }
    assert!(!started_file.exists(), "a refused request ran");

    let started = Instant::now();
    let job = c
        .start_job(
            &base,
            "backup/run",
            json!({"token": WRITE_TOKEN, "repository": "slow", "timeout_secs": 2}),
        )
        .await;
    let result: Value = c.job_result(&base, &job).await;
    let took = started.elapsed();
    assert_eq!(result["state"], "failed", "{result}");
    assert_eq!(result["error"], "timed out after 2s", "{result}");
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(15),
        "took {took:?}"
    );
    // The hook did run, and nothing of the job is left: not the hook, not
    // borgmatic, not borg.
    assert!(started_file.exists(), "the hook never ran");
    assert_eq!(processes_with(&sleep), Vec::<String>::new());
    // (The health probe's `repo-list` may run; a backup's processes say `create`.)
    let dir = repos.dir.path().display().to_string();
    let backups: Vec<String> = processes_with(&dir)
        .into_iter()
        .filter(|l| l.contains("create"))
        .collect();
    assert_eq!(backups, Vec::<String>::new());
    assert!(
        repos.archives("slow").is_empty(),
        "{:?}",
        repos.archives("slow")
    );

    // The job record says the same.
    let rec = c.job(&base, &job).await;
    assert_eq!(rec["state"], "failed", "{rec}");
    assert_eq!(rec["error"], "timed out after 2s", "{rec}");
}
