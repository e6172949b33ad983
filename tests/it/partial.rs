//! Never a silent partial backup, with real borg and borgmatic: a backup that could
//! not read part of its sources (root without `CAP_DAC_READ_SEARCH`, as in a
//! container with `cap_drop: [ALL]`) is a `warning` with every skipped file counted
//! and named, `partial` in the retained summary, in the metrics and in Home
//! Assistant's last-result sensor; an extract without `CAP_CHOWN` names the owners
//! it could not restore. The capabilities are dropped for borgmatic alone with
//! `setpriv` (util-linux); the test runs as root.

use std::collections::BTreeSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::helpers::*;
use serde_json::{json, Value};

/// The test needs root (to own files as uid 33 and to have capabilities to drop)
/// and setpriv; it fails loudly without them.
fn require_root_and_setpriv() {
    let uid = Command::new("id").arg("-u").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&uid.stdout).trim(),
        "0",
        "this test runs as root (it owns files as uid 33 and drops capabilities)"
    );
    let found = Command::new("sh")
        .args(["-c", "command -v setpriv"])
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(found.success(), "setpriv (util-linux) is not installed");
}

fn chown_33(path: &Path) {
    std::os::unix::fs::lchown(path, Some(33), Some(33)).unwrap();
}

fn write_file(path: &Path, mode: u32) {
    std::fs::write(path, format!("data of {}\n", path.display())).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    chown_33(path);
}

fn make_dir(path: &Path, mode: u32) {
    std::fs::create_dir_all(path).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    chown_33(path);
}

/// Renders one of Home Assistant's discovery templates with Jinja2 (what Home
/// Assistant renders them with) against a payload.
fn render_ha_template(template: &str, payload: &Value) -> String {
    let out = Command::new("python3")
        .args([
            "-c",
            "import sys, json, jinja2\n\
             t = jinja2.Environment().from_string(sys.argv[1])\n\
             print(t.render(value_json=json.loads(sys.argv[2])), end='')",
            template,
            &payload.to_string(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python3 with jinja2 is needed to render Home Assistant templates: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Scrapes `/metrics` until `needle` shows up (the metrics task follows the job
/// events on its own; there is no event to await over HTTP).
async fn metrics_with(url: &str, needle: &str) -> String {
    let mut text = String::new();
    for _ in 0..200 {
        text = reqwest::get(format!("{url}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if text.contains(needle) {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{needle} never appeared in the metrics:\n{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn unreadable_files_make_a_partial_backup_that_nobody_can_mistake_for_success() {
    require_root_and_setpriv();
    let broker = Broker::start();
    let repos = Repos::new();
    repos.add("nc", "");
    // Nextcloud's data as www-data keeps it: the directory is listable, four files
    // are 0640, one subdirectory is 0750 (borg cannot even open it: it counts once),
    // one file is world-readable.
    let src = repos.source("nc");
    let www = src.join("www");
    make_dir(&www, 0o755);
    let mut unreadable = BTreeSet::new();
    for i in 0..4 {
        let f = www.join(format!("f{i}.txt"));
        write_file(&f, 0o640);
        unreadable.insert(f.display().to_string());
    }
    let private = www.join("private");
    make_dir(&private, 0o750);
    write_file(&private.join("secret.txt"), 0o640);
    unreadable.insert(private.display().to_string());
    write_file(&www.join("public.txt"), 0o644);

    let (bin, drop) = setpriv_borgmatic(repos.dir.path());
    let prefix = format!("test/{}/homeassistant", uuid_like());
    let bin_s = bin.display().to_string();
    let (worker, url) = start_with_http_process(
        &broker,
        &repos,
        &[
            ("BMQTT_BORGMATIC__BINARY", bin_s.as_str()),
            ("BMQTT_HOMEASSISTANT__DISCOVERY", "true"),
            ("BMQTT_HOMEASSISTANT__PREFIX", prefix.as_str()),
        ],
    )
    .await;
    let c = subscribed(&broker, &worker.base).await;
    let ha = Client::connect_as(&broker, "homeassistant", HA_PASSWORD).await;
    ha.subscribe(&format!("{prefix}/#")).await;
    let result_cfg = ha
        .wait_for(|m| m.topic.ends_with("_nc/last_result/config"))
        .await
        .json();

    // Root without CAP_DAC_READ_SEARCH / CAP_DAC_OVERRIDE, as under cap_drop: [ALL].
    std::fs::write(&drop, "-dac_read_search,-dac_override").unwrap();
    let res = c.backup(&worker.base, "nc").await;
    assert_eq!(res["state"], "warning", "{res}");
    assert_eq!(res["exit_code"], 0, "borgmatic itself called it a warning");
    let data = &res["data"];
    assert_eq!(data["partial"], true, "{res}");
    assert_eq!(data["skipped_files"], unreadable.len(), "{res}");
    assert_eq!(
        data["skipped_reasons"],
        json!({"permission_denied": unreadable.len()})
    );
    let named: BTreeSet<String> = data["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            assert_eq!(s["reason"], "permission_denied", "{s}");
            assert!(s["error"].as_str().unwrap().contains("[Errno 13]"), "{s}");
            s["path"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(named, unreadable);
    // The archive exists: the data that could be read is in it, and the result
    // says which archive is incomplete.
    let archive = data["archive"].as_str().expect("the archive is named");
    assert!(repos.archives("nc").contains(&archive.to_string()));
    assert!(res["error"].as_str().unwrap().contains(archive), "{res}");
    let listed = repos.borg(&[
        "list",
        "--short",
        &format!("{}::{archive}", repos.repo_path("nc").display()),
    ]);
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.contains("www/public.txt") && listed.contains("hello.txt"));
    assert!(!listed.contains("www/f0.txt") && !listed.contains("secret.txt"));

    // The retained summary says so, to a client that arrives later.
    let late = Client::connect(&broker).await;
    late.subscribe(&worker.topic("last/nc/backup")).await;
    let summary = late.wait_for(|m| m.retain).await.json();
    assert_eq!(summary["job_id"], res["job_id"]);
    assert_eq!(summary["result"], "partial", "{summary}");
    assert_eq!(summary["state"], "warning");
    assert_eq!(summary["partial"], true);
    assert_eq!(summary["skipped_files"], unreadable.len());
    assert_eq!(summary["archive"], archive);

    // Home Assistant's last-result sensor shows `partial`, with what was left out.
    let value = render_ha_template(result_cfg["value_template"].as_str().unwrap(), &summary);
    assert_eq!(value, "partial");
    let attrs: Value = serde_json::from_str(&render_ha_template(
        result_cfg["json_attributes_template"].as_str().unwrap(),
        &summary,
    ))
    .unwrap();
    assert_eq!(attrs["skipped_files"], unreadable.len());
    assert!(attrs["reason"]
        .as_str()
        .unwrap()
        .contains("permission denied"));

    // Metrics: the count per repository, per reason, and no "last success".
    let text = metrics_with(
        &url,
        &format!(
            "bmqtt_last_backup_skipped_files{{repository=\"nc\"}} {}",
            unreadable.len()
        ),
    )
    .await;
    for needle in [
        format!(
            "bmqtt_backup_skipped_files_total{{repository=\"nc\",reason=\"permission_denied\"}} {}",
            unreadable.len()
        ),
        "bmqtt_jobs_total{command=\"backup/run\",outcome=\"partial\"} 1".to_string(),
    ] {
        assert!(text.contains(&needle), "{needle} missing:\n{text}");
    }
    assert!(
        !text.contains("bmqtt_last_backup_success_timestamp_seconds{repository=\"nc\"}"),
        "a partial backup is not a success:\n{text}"
    );

    // With the capabilities back, the same backup is complete and says so.
    std::fs::write(&drop, "").unwrap();
    let res = c.backup_ok(&worker.base, "nc").await;
    assert_eq!(res["data"]["skipped_files"], 0);
    assert_eq!(res["data"]["partial"], false);
    assert!(res["error"].is_null(), "{res}");
    let job = res["job_id"].clone();
    let last = worker.topic("last/nc/backup");
    let summary = c
        .wait_for(|m| m.topic == last && m.json()["job_id"] == job)
        .await
        .json();
    assert_eq!(summary["result"], "succeeded");
    assert_eq!(summary["skipped_files"], 0);
    assert_eq!(
        render_ha_template(result_cfg["value_template"].as_str().unwrap(), &summary),
        "succeeded"
    );
    let text = metrics_with(&url, "bmqtt_last_backup_skipped_files{repository=\"nc\"} 0").await;
    assert!(text.contains("bmqtt_last_backup_success_timestamp_seconds{repository=\"nc\"}"));
}

#[tokio::test(flavor = "multi_thread")]
async fn extract_without_cap_chown_names_the_owners_it_could_not_restore() {
    require_root_and_setpriv();
    let broker = Broker::start();
    let repos = Repos::new();
    repos.add("nc", "");
    let www = repos.source("nc").join("www");
    make_dir(&www, 0o750);
    make_dir(&www.join("sub"), 0o750);
    for f in ["a.txt", "b.txt", "sub/c.txt"] {
        write_file(&www.join(f), 0o640);
    }
    // www, www/sub and three files belong to 33:33.
    let owned_by_33 = 5;

    let (bin, drop) = setpriv_borgmatic(repos.dir.path());
    let bin_s = bin.display().to_string();
    let worker = Worker::start(
        &broker,
        &repos,
        &[("BMQTT_BORGMATIC__BINARY", bin_s.as_str())],
    )
    .await;
    let c = subscribed(&broker, &worker.base).await;
    let res = c.backup_ok(&worker.base, "nc").await;
    let archive = res["data"]["archive"].as_str().unwrap().to_string();
    let rel = www.strip_prefix("/").unwrap().to_path_buf();

    // Without CAP_CHOWN/CAP_FOWNER borg restores 0:0 and says nothing; the worker does.
    std::fs::write(&drop, "-chown,-fowner").unwrap();
    let res = c
        .run_job(
            &worker.base,
            "archive/extract",
            json!({"token": WRITE_TOKEN, "repository": "nc", "archive": archive, "destination": "nocaps"}),
        )
        .await;
    assert_eq!(res["state"], "warning", "{res}");
    let data = &res["data"];
    assert_eq!(data["partial"], true, "{res}");
    assert_eq!(data["unrestored_owners"], owned_by_33, "{res}");
    assert_eq!(data["unrestored_files"], owned_by_33, "{res}");
    assert_eq!(data["unrestored_modes"], 0, "{res}");
    let first = &data["unrestored"][0];
    assert_eq!(first["expected_owner"], "33:33", "{res}");
    assert_eq!(first["owner"], "0:0", "{res}");
    assert!(data["checked_files"].as_u64().unwrap() > owned_by_33);
    assert!(res["error"].as_str().unwrap().contains("owner"), "{res}");
    let restored = repos.restore_root().join("nocaps").join(&rel);
    assert_eq!(std::fs::metadata(restored.join("a.txt")).unwrap().uid(), 0);

    // With the capabilities, every owner and mode comes back, and the job says so.
    std::fs::write(&drop, "").unwrap();
    let res = c.run_job_ok(&worker.base,
            "archive/extract",
            json!({"token": WRITE_TOKEN, "repository": "nc", "archive": archive, "destination": "caps"})).await;
    assert_eq!(res["data"]["partial"], false);
    assert_eq!(res["data"]["unrestored_owners"], 0);
    let restored = repos.restore_root().join("caps").join(&rel);
    for (p, mode) in [
        ("", 0o750),
        ("sub", 0o750),
        ("a.txt", 0o640),
        ("sub/c.txt", 0o640),
    ] {
        let m = std::fs::symlink_metadata(restored.join(p)).unwrap();
        assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (33, 33, mode), "{p}");
    }
}
