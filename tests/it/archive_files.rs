//! `archive/files`: browsing an archive before restoring one file, against real
//! borg, over MQTT and HTTP: the root, a path prefix, pages that join up exactly,
//! and refusals (option look-alikes, traversal, bad limits) that start nothing.

use crate::helpers::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

fn paths(result: &Value) -> Vec<String> {
    result["data"]["files"]
        .as_array()
        .unwrap_or_else(|| panic!("no files: {result}"))
        .iter()
        .map(|f| f["path"].as_str().unwrap().to_string())
        .collect()
}

async fn files(c: &Client, base: &str, fields: Value) -> Value {
    let mut body = json!({"token": READ_TOKEN, "repository": "nc"});
    body.as_object_mut()
        .unwrap()
        .extend(fields.as_object().unwrap().clone());
    let res = c.run_job_ok(base, "archive/files", body).await;
    res
}

#[tokio::test(flavor = "multi_thread")]
async fn browse_an_archive_by_path_and_page_over_both_transports() {
    let broker = Broker::start();
    let repos = Repos::new();
    repos.add("nc", "");
    let src = repos.source("nc");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    for i in 0..5 {
        std::fs::write(src.join(format!("sub/f{i}.txt")), format!("{i}")).unwrap();
    }
    let (worker, url) = start_with_http(&broker, &repos, &[]).await;
    let base = worker.base.clone();
    let c = subscribed(&broker, &worker.base).await;
    // The start-up health probe holds the repository briefly: await its report.
    let health = worker.topic("repos/nc/health");
    c.wait_for(move |m| m.topic == health).await;
    let backup = c.backup_ok(&base, "nc").await;
    let archive = backup["data"]["archive"].as_str().unwrap().to_string();
    let rel = src.strip_prefix("/").unwrap().display().to_string();

    // The root: every file, read role suffices, no further page.
    let all = files(&c, &base, json!({"archive": archive, "limit": 1000})).await;
    let all_paths = paths(&all);
    for f in ["hello.txt", "data.bin", "sub/f0.txt", "sub/f4.txt"] {
        assert!(
            all_paths.contains(&format!("{rel}/{f}")),
            "{f}: {all_paths:?}"
        );
    }
    assert_eq!(all["data"]["next"], Value::Null, "{all}");
    assert_eq!(all["data"]["matched"], all_paths.len(), "{all}");

    // A prefix (given absolute, as users copy it): only what lies below it.
    let sub = format!("/{rel}/sub");
    let below = files(&c, &base, json!({"archive": archive, "path": sub})).await;
    let below_paths = paths(&below);
    assert_eq!(
        below_paths.len(),
        6,
        "the directory and its 5 files: {below_paths:?}"
    );
    assert!(below_paths
        .iter()
        .all(|p| p == &format!("{rel}/sub") || p.starts_with(&format!("{rel}/sub/"))));

    // Pages of 2 over MQTT join up to exactly the unpaged list, in order.
    let (mut after, mut joined) = (0u64, Vec::new());
    loop {
        let page = files(
            &c,
            &base,
            json!({"archive": archive, "path": sub, "after": after, "limit": 2}),
        )
        .await;
        let got = paths(&page);
        assert!(got.len() <= 2, "{page}");
        joined.extend(got);
        match page["data"]["next"].as_u64() {
            Some(n) => after = n,
            None => break,
        }
    }
    assert_eq!(joined, below_paths);

    // The same page over HTTP: 202, and the job's result equals MQTT's.
    let (status, resp) = post_cmd(
        &url,
        "archive/files",
        Some(READ_TOKEN),
        json!({"repository": "nc", "archive": archive, "path": sub, "after": 2, "limit": 2}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{resp}");
    let over_http = c.job_result(&base, resp["job_id"].as_str().unwrap()).await;
    assert_eq!(paths(&over_http), below_paths[2..4].to_vec());
    assert_eq!(over_http["data"]["next"], 4);

    // Refusals: option look-alikes, traversal, bad limits, unknown fields. None
    // starts a job, on either transport.
    let jobs_before = c.job_count(&base).await;
    for bad in [
        json!({"archive": archive, "path": "-rf"}),
        json!({"archive": archive, "path": "--help"}),
        json!({"archive": archive, "path": "/ -x"}),
        json!({"archive": archive, "path": "../../etc"}),
        json!({"archive": archive, "path": format!("{rel}/../../etc")}),
        json!({"archive": archive, "path": "a\nb"}),
        json!({"archive": "--format={path}", "path": "x"}),
        json!({"archive": "sh:*"}),
        json!({"archive": archive, "limit": 0}),
        json!({"archive": archive, "limit": 100000}),
        json!({"archive": archive, "after": -1}),
        json!({"archive": archive, "pattern": "*"}),
    ] {
        let mut body = json!({"token": READ_TOKEN, "repository": "nc"});
        body.as_object_mut()
            .unwrap()
            .extend(bad.as_object().unwrap().clone());
        c.refused(&base, "archive/files", body.clone(), "invalid")
            .await;
        body.as_object_mut().unwrap().remove("token");
        let (status, resp) = post_cmd(&url, "archive/files", Some(READ_TOKEN), body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "HTTP {bad}: {resp}");
    }
    let jobs_after = c.job_count(&base).await;
    assert_eq!(jobs_before, jobs_after, "a refused request started a job");

    // An archive that does not exist fails the job with no page (no silent empty
    // listing), and the worker keeps answering.
    let res = c
        .run_job(
            &base,
            "archive/files",
            json!({"token": READ_TOKEN, "repository": "nc", "archive": "no-such-archive"}),
        )
        .await;
    assert_eq!(res["state"], "failed", "{res}");
    assert_eq!(res["data"], Value::Null, "{res}");
    let again = files(&c, &base, json!({"archive": archive, "limit": 1})).await;
    assert_eq!(paths(&again).len(), 1);
}
