//! `backup/verify`, the restore drill, against real borg and borgmatic.

use crate::helpers::*;
use serde_json::{json, Value};

/// `backup/verify` of nc with the write token and `options`: its result.
async fn verify(c: &Client, base: &str, options: Value) -> Value {
    let mut body = json!({"token": WRITE_TOKEN, "repository": "nc"});
    let options = options.as_object().unwrap().clone();
    body.as_object_mut().unwrap().extend(options);
    c.run_job(base, "backup/verify", body).await
}

fn restore_root_is_empty(repos: &Repos) {
    let left: Vec<_> = std::fs::read_dir(repos.restore_root())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "the drill left {left:?} behind");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_clean_archive_verifies_and_a_tampered_file_does_not() {
    let Scenario {
        broker,
        repos,
        worker,
        client: c,
    } = Scenario::new().repo("nc").app().await;
    c.backup_ok(&worker.base, "nc").await;

    let res = verify(&c, &worker.base, json!({})).await;
    assert_eq!(res["state"], "succeeded", "{res}");
    let d = &res["data"];
    assert_eq!(d["verified"], true);
    assert_eq!(d["check"]["passed"], true);
    assert!(d["matched"].as_u64().unwrap() >= 2, "{d}");
    assert_eq!(d["mismatched"], 0);
    assert!(d["bytes_extracted"].as_u64().unwrap() >= 200_000);
    restore_root_is_empty(&repos);
    // The summary is retained for dashboards that connect later.
    let late = Client::connect(&broker).await;
    let topic = worker.topic("last/nc/verify");
    late.subscribe(&topic).await;
    let last = late.wait_for(|m| m.topic == topic).await;
    assert!(last.retain);
    assert_eq!(last.json()["verified"], true);

    // Flip bytes of a file without changing its size, and put its mtime back: only
    // the comparison can notice. Another file changes after the backup: that is
    // not a failure.
    let data = repos.source("nc").join("data.bin");
    let mtime = std::fs::metadata(&data).unwrap().modified().unwrap();
    let mut bytes = std::fs::read(&data).unwrap();
    bytes[1000] ^= 0xff;
    std::fs::write(&data, &bytes).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&data)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    std::fs::write(
        repos.source("nc").join("hello.txt"),
        "changed after the backup, longer\n",
    )
    .unwrap();

    let res = verify(&c, &worker.base, json!({})).await;
    assert_eq!(res["state"], "failed", "{res}");
    let d = &res["data"];
    assert_eq!(d["verified"], false);
    let data_rel = data.strip_prefix("/").unwrap().display().to_string();
    assert_eq!(d["mismatches"], json!([data_rel]), "{d}");
    assert!(
        d["changed"].as_u64().unwrap() >= 1,
        "hello.txt counts as changed: {d}"
    );
    assert_eq!(d["check"]["passed"], true);
    restore_root_is_empty(&repos);

    // The sample caps: one file, and no more bytes than allowed.
    let res = verify(&c, &worker.base, json!({"sample": 1})).await;
    assert_eq!(res["data"]["sampled"], 1, "{res}");
    let res = verify(&c, &worker.base, json!({"max_bytes": 100})).await;
    let d = &res["data"];
    assert!(d["bytes_extracted"].as_u64().unwrap() <= 100, "{d}");
    assert!(d["sampled"].as_u64().unwrap() >= 1);
    assert_eq!(
        d["mismatched"], 0,
        "the 200 kB file cannot be in a 100-byte sample: {d}"
    );
    restore_root_is_empty(&repos);

    // verify is a write command; bad fields are refused.
    c.refused(
        &worker.base,
        "backup/verify",
        json!({"token": READ_TOKEN, "repository": "nc"}),
        "forbidden",
    )
    .await;
    c.refused(
        &worker.base,
        "backup/verify",
        json!({"token": WRITE_TOKEN, "repository": "nc", "sample": 0}),
        "invalid",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupted_segment_fails_the_check_part() {
    let Scenario {
        broker: _broker,
        repos,
        worker,
        client: c,
    } = Scenario::new().repo("nc").app().await;
    c.backup_ok(&worker.base, "nc").await;

    // Corrupt the largest segment (where the archive's data lives).
    let mut segments: Vec<std::path::PathBuf> = Vec::new();
    let mut stack = vec![repos.repo_path("nc").join("data")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(d).unwrap().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                segments.push(e.path());
            }
        }
    }
    segments.sort_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0));
    let seg = segments.last().unwrap();
    let mut bytes = std::fs::read(seg).unwrap();
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 64] {
        *b ^= 0x5a;
    }
    std::fs::write(seg, bytes).unwrap();

    let res = verify(&c, &worker.base, json!({})).await;
    assert_eq!(res["state"], "failed", "{res}");
    assert_eq!(res["data"]["check"]["passed"], false, "{res}");
    assert_eq!(res["data"]["verified"], false);
    assert!(res["error"]
        .as_str()
        .unwrap()
        .contains("consistency check failed"));
    restore_root_is_empty(&repos);
}
