//! schemathesis (property-based API testing) against the live sidecar: no server
//! error and no response that breaks the OpenAPI document.

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread")]
async fn schemathesis_finds_no_server_error_and_no_schema_violation() {
    let st = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/st");
    assert!(
        st.exists(),
        "schemathesis is not installed: run scripts/setup"
    );
    let broker = Broker::start();
    let repos = Repos::new();
    repos.add("nc", "");
    let (_worker, url) = start_with_http(&broker, &repos, &[]).await;
    let run = tokio::process::Command::new(&st)
        .args([
            "--config-file",
            concat!(env!("CARGO_MANIFEST_DIR"), "/tests/schemathesis.toml"),
            "run",
            &format!("{url}/api/v1/openapi.json"),
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
            "--header",
            &format!("Authorization: Bearer {READ_TOKEN}"),
            // A stream of every job's changes never ends by design.
            "--exclude-path",
            "/api/v1/events",
            "--max-examples",
            "30",
            "--request-timeout",
            "10",
            "--no-color",
        ])
        .env("SCHEMATHESIS_HOOKS", "")
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(600), run)
        .await
        .expect("schemathesis did not finish in 10 minutes")
        .unwrap();
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "schemathesis found problems:\n{text}");
    assert!(text.contains("passed"), "schemathesis ran nothing:\n{text}");
}
