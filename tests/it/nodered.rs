//! The example Node-RED flow in real Node-RED (headless), against a real broker and
//! the real worker: pressing its inject node through the admin API runs a backup.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::helpers::*;
use serde_json::json;

struct NodeRed(Child);

impl Drop for NodeRed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_example_flow_runs_a_backup() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let bin = root.join(".node-red/node_modules/.bin/node-red");
    assert!(bin.exists(), "node-red is not installed: run scripts/setup");
    let Scenario {
        broker,
        repos,
        worker,
        client: c,
    } = Scenario::new().repo("nc").app().await;

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    std::fs::copy(
        root.join("examples/node-red/flows.json"),
        dir.path().join("flows.json"),
    )
    .unwrap();
    // The broker node's credentials, as the editor would store them (unencrypted).
    std::fs::write(
        dir.path().join("flows_cred.json"),
        json!({"borgmatic_broker": {"user": "client", "password": CLIENT_PASSWORD}}).to_string(),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("settings.js"),
        format!(
            "module.exports = {{ uiPort: {port}, uiHost: '127.0.0.1', flowFile: 'flows.json', \
             credentialSecret: false, logging: {{ console: {{ level: 'warn' }} }} }};\n"
        ),
    )
    .unwrap();
    let base = worker.base.clone();
    let log = std::fs::File::create(dir.path().join("node-red.log")).unwrap();
    let child = Command::new(&bin)
        .arg("--userDir")
        .arg(dir.path())
        .arg("--settings")
        .arg(dir.path().join("settings.js"))
        .env("MQTT_HOST", "127.0.0.1")
        .env("MQTT_PORT", broker.port.to_string())
        .env("BORGMATIC_BASE", &base)
        .env("BORGMATIC_REPOSITORY", "nc")
        .env("BORGMATIC_WRITE_TOKEN", WRITE_TOKEN)
        .env("BORGMATIC_READ_TOKEN", READ_TOKEN)
        .env("BORGMATIC_RESPONSES", format!("{base}/response/#"))
        .env("BORGMATIC_RESULTS", format!("{base}/jobs/+/result"))
        .env("BORGMATIC_LOGS", format!("{base}/jobs/+/log"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("cannot start node-red");
    let _nodered = NodeRed(child);

    // Press "Run backup" until the flow's request reaches the broker (the flow's
    // MQTT connection comes up a moment after the editor answers).
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/inject/inject_backup");
    let cmd_topic = format!("{base}/cmd/backup/run");
    let request = tokio::time::timeout(Duration::from_secs(90), async {
        loop {
            let _ = http.post(&url).send().await;
            let seen = c
                .seen
                .lock()
                .unwrap()
                .iter()
                .find(|m| m.topic == cmd_topic)
                .cloned();
            if let Some(m) = seen {
                return m.json();
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "the flow never sent backup/run; node-red said:\n{}",
            std::fs::read_to_string(dir.path().join("node-red.log")).unwrap_or_default()
        )
    });
    let rid = request["request_id"].as_str().unwrap().to_string();
    assert!(rid.starts_with("nodered-"), "{request}");

    // The worker answered the flow's request and the backup succeeded.
    let response_topic = format!("{base}/response/backup/run");
    let rid2 = rid.clone();
    let resp = c
        .wait_for(move |m| m.topic == response_topic && m.json()["request_id"] == json!(rid2))
        .await
        .json();
    assert_eq!(resp["status"], "ok", "{resp}");
    let result = c.job_result(&base, resp["job_id"].as_str().unwrap()).await;
    assert_eq!(result["state"], "succeeded", "{result}");
    assert!(!repos.archives("nc").is_empty());

    // The flow's summary never shows a partial backup as a success: its function,
    // run by Node.js as Node-RED runs it, on this real result and on the same
    // result as a backup that left files out.
    let mut partial = result.clone();
    partial["state"] = json!("warning");
    partial["data"]["partial"] = json!(true);
    partial["data"]["skipped_files"] = json!(5);
    let mut warning = result.clone();
    warning["state"] = json!("warning");
    warning["data"]["partial"] = json!(false);
    let verdicts = run_summary(root, &[result.clone(), warning, partial]);
    assert_eq!(verdicts[0]["verdict"], "ok", "{verdicts}");
    assert_eq!(verdicts[0]["fill"], "green", "{verdicts}");
    assert_eq!(verdicts[1]["verdict"], "warning", "{verdicts}");
    assert_eq!(verdicts[2]["verdict"], "problem", "{verdicts}");
    assert_eq!(verdicts[2]["fill"], "red", "{verdicts}");
    assert!(
        verdicts[2]["text"].as_str().unwrap().contains("partial: 5"),
        "{verdicts}"
    );

    // "List archives" works too, with the read token.
    let list_url = format!("http://127.0.0.1:{port}/inject/inject_list");
    let status = http.post(&list_url).send().await.unwrap().status();
    assert!(status.is_success(), "{status}");
    let list_topic = format!("{base}/response/archive/list");
    let listed = c.wait_for(move |m| m.topic == list_topic).await.json();
    assert_eq!(listed["status"], "ok", "{listed}");
}

/// Runs the example flow's `summary` function node over `results` with Node.js, the
/// way Node-RED calls a function node (`msg`, `node`, `env`), and returns each
/// output's verdict with the node status it set.
fn run_summary(root: &std::path::Path, results: &[serde_json::Value]) -> serde_json::Value {
    let flows: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("examples/node-red/flows.json")).unwrap(),
    )
    .unwrap();
    let func = flows
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "summary")
        .expect("no summary node")["func"]
        .as_str()
        .unwrap()
        .to_string();
    let script = format!(
        "const f = new Function('msg', 'node', 'env', {func});\n\
         const out = {results}.map(r => {{ let st = null;\n\
           const m = f({{payload: r}}, {{status: s => st = s}}, {{get: () => ''}});\n\
           return {{verdict: m.payload.verdict, fill: st.fill, text: st.text}}; }});\n\
         console.log(JSON.stringify(out));",
        func = serde_json::to_string(&func).unwrap(),
        results = serde_json::to_string(results).unwrap(),
    );
    let out = Command::new("node").arg("-e").arg(script).output().unwrap();
    assert!(
        out.status.success(),
        "node: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}
