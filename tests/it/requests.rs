//! The request envelope: every error code reachable over MQTT, with its cause, and
//! proof that no refused request ran anything.

use crate::helpers::*;
use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5::PublishProperties;
use serde_json::{json, Value};

/// MQTT v5 properties carrying `token` as `authorization: Bearer …`.
fn bearer(token: &str) -> PublishProperties {
    PublishProperties {
        user_properties: vec![("authorization".into(), format!("Bearer {token}"))],
        ..Default::default()
    }
}

/// Publishes `job/list` with request id `rid`, the token only in `props`.
async fn job_list(c: &Client, base: &str, rid: &str, props: PublishProperties) {
    let body = json!({"request_id": rid});
    c.publish_with(base, "job/list", serde_json::to_vec(&body).unwrap(), props)
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_refusal_has_its_code_and_runs_nothing() {
    let broker = Broker::start();
    let repos = Repos::new();
    repos.add("nc", "");
    let worker = Worker::start(&broker, &repos, &[]).await;
    let base = worker.base.clone();
    let c = subscribed(&broker, &worker.base).await;

    // backup/run of nc with a missing, unknown, empty, too weak or mistyped token.
    for (token, code, needle) in [
        (None, "unauthorized", "missing token"),
        (Some(json!("x".repeat(32))), "unauthorized", "unknown token"),
        (Some(json!("")), "unauthorized", "unknown token"),
        (Some(json!(READ_TOKEN)), "forbidden", "write role"),
        (Some(json!(12345)), "invalid", "token must be a string"),
    ] {
        let mut body = json!({"repository": "nc"});
        if let Some(token) = token {
            body["token"] = token;
        }
        c.refused_saying(&base, "backup/run", body, code, needle)
            .await;
    }

    // backup/run with the write token and a body that is wrong.
    for (body, code, needle) in [
        (
            json!({"repository": "nc", "bogus": 1}),
            "invalid",
            "unknown field `bogus`",
        ),
        (
            json!({"repository": "nc", "dry_run": "yes"}),
            "invalid",
            "invalid type",
        ),
        (json!({"repository": ["nc"]}), "invalid", "invalid type"),
        (json!({}), "invalid", "missing field `repository`"),
        (
            json!({"repository": "../nc"}),
            "invalid",
            "repository must match",
        ),
        (
            json!({"repository": "../../etc/passwd"}),
            "invalid",
            "repository must match",
        ),
        (
            json!({"repository": "nc; touch /tmp/pwned"}),
            "invalid",
            "repository must match",
        ),
        (
            json!({"repository": "$(touch /tmp/pwned)"}),
            "invalid",
            "repository must match",
        ),
        (
            json!({"repository": "nc", "token2": "--config=/etc/x"}),
            "invalid",
            "unknown field",
        ),
        (
            json!({"repository": "missing"}),
            "not_found",
            "no repository missing",
        ),
    ] {
        let mut body = body;
        body["token"] = json!(WRITE_TOKEN);
        c.refused_saying(&base, "backup/run", body, code, needle)
            .await;
    }

    // Other commands.
    let job_id = "01a20d1c-b2e3-77de-8821-e6b253038ff0";
    for (command, body, code, needle) in [
        (
            "job/cancel",
            json!({"token": READ_TOKEN, "job_id": job_id}),
            "forbidden",
            "write role",
        ),
        (
            "repo/break-lock",
            json!({"token": WRITE_TOKEN, "repository": "nc"}),
            "forbidden",
            "auth.admin_token is not configured",
        ),
        (
            "archive/list",
            json!({"token": READ_TOKEN, "repository": "nc", "last": "5; id"}),
            "invalid",
            "invalid type",
        ),
        (
            "job/get",
            json!({"token": READ_TOKEN, "job_id": job_id}),
            "not_found",
            "no job",
        ),
        (
            "job/get",
            json!({"token": READ_TOKEN, "job_id": "../../x"}),
            "invalid",
            "job_id",
        ),
        (
            "backup/explode",
            json!({"token": WRITE_TOKEN}),
            "invalid",
            "unknown command",
        ),
    ] {
        c.refused_saying(&base, command, body, code, needle).await;
    }

    // Malformed JSON and a non-object: no request id to echo, still one answer.
    for (payload, needle) in [
        (&b"{not json"[..], "malformed JSON"),
        (&b"[1,2]"[..], "JSON object"),
    ] {
        c.publish_raw(&base, "archive/list", payload.to_vec(), false)
            .await;
        let topic = worker.topic("response/archive/list");
        let m = c
            .wait_for(|m| {
                m.topic == topic
                    && m.json()["error"]["message"]
                        .as_str()
                        .is_some_and(|s| s.contains(needle))
            })
            .await;
        assert_eq!(m.json()["error"]["code"], "invalid");
        assert_eq!(m.json()["request_id"], Value::Null);
    }

    // An unknown command is answered on response/unknown: the command topic's suffix
    // (here a token a client put in the wrong place) is never echoed into a topic.
    c.publish_raw(
        &base,
        &format!("backup/{WRITE_TOKEN}"),
        b"{}".to_vec(),
        false,
    )
    .await;
    let unknown = worker.topic("response/unknown");
    let m = c
        .wait_for(|m| {
            m.topic == unknown
                && m.json()["error"]["message"]
                    .as_str()
                    .is_some_and(|s| s.contains("unknown command"))
        })
        .await;
    assert!(!m.text().contains(WRITE_TOKEN), "{}", m.text());
    assert!(
        c.messages()
            .keys()
            .all(|t| !t.contains(WRITE_TOKEN) || t.contains("/cmd/")),
        "a topic echoes the token: {:?}",
        c.messages().keys().collect::<Vec<_>>()
    );

    // A retained request is refused and never runs, now or on resubscription.
    c.publish_raw(
        &base,
        "backup/run",
        serde_json::to_vec(
            &json!({"token": WRITE_TOKEN, "repository": "nc", "request_id": "retained-1"}),
        )
        .unwrap(),
        true,
    )
    .await;
    let topic = worker.topic("response/backup/run");
    let m = c
        .wait_for(|m| m.topic == topic && m.json()["request_id"] == "retained-1")
        .await;
    assert_eq!(m.json()["error"]["code"], "invalid");
    assert!(m.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("retained"));
    // Clear the retained command so the broker stops offering it.
    c.publish_raw(&base, "backup/run", Vec::new(), true).await;

    // Nothing ran: no job, no archive, no marker file.
    let jobs = c
        .request(&base, "job/list", json!({"token": READ_TOKEN}))
        .await;
    assert_eq!(jobs["data"]["jobs"], json!([]), "{jobs}");
    assert!(repos.archives("nc").is_empty());
    assert!(!std::path::Path::new("/tmp/pwned").exists());

    assert_no_secrets("published payloads", &c.all_text());
    assert_no_secrets("the worker's log", &worker.log_text());
}

#[tokio::test(flavor = "multi_thread")]
async fn v5_bearer_property_response_topic_and_correlation_data() {
    let broker = Broker::start();
    let repos = Repos::new();
    repos.add("nc", "");
    let worker = Worker::start(&broker, &repos, &[]).await;
    let base = worker.base.clone();
    let c = subscribed(&broker, &worker.base).await;

    // Token as `authorization: Bearer …`, reply to a private topic under response/.
    let private = worker.topic("response/nodered/inbox-1");
    let props = PublishProperties {
        response_topic: Some(private.clone()),
        correlation_data: Some(Bytes::from_static(b"corr-42")),
        ..bearer(READ_TOKEN)
    };
    job_list(&c, &base, "v5-1", props).await;
    let m = c.wait_for(|m| m.topic == private).await;
    assert_eq!(m.json()["status"], "ok", "{}", m.text());
    assert_eq!(m.json()["request_id"], "v5-1");
    assert_eq!(m.correlation.as_deref(), Some(&b"corr-42"[..]));

    // A Response Topic outside <base>/response/ is ignored: the default is used.
    let props = PublishProperties {
        response_topic: Some(worker.topic("status")),
        ..bearer(READ_TOKEN)
    };
    job_list(&c, &base, "v5-2", props).await;
    let default = worker.topic("response/job/list");
    let m = c
        .wait_for(|m| m.topic == default && m.json()["request_id"] == "v5-2")
        .await;
    assert_eq!(m.json()["status"], "ok");
    let status_msgs = c
        .messages()
        .remove(&worker.topic("status"))
        .unwrap_or_default();
    assert!(
        status_msgs.iter().all(|m| m.payload == b"online"),
        "a response was published on the status topic"
    );

    // A wrong bearer is unauthorized.
    job_list(&c, &base, "v5-3", bearer("nope-nope-nope-nope-nope")).await;
    let m = c
        .wait_for(|m| m.topic == default && m.json()["request_id"] == "v5-3")
        .await;
    assert_eq!(m.json()["error"]["code"], "unauthorized");

    // The info document is retained and lists the repository and the commands.
    let info = c.wait_for(|m| m.topic.ends_with("/info")).await;
    assert!(info.retain);
    let info = info.json();
    assert_eq!(info["repositories"], json!(["nc"]));
    assert!(info["commands"]
        .as_array()
        .unwrap()
        .contains(&json!("backup/run")));
    assert!(info["borgmatic_version"].as_str().unwrap().starts_with('2'));
}
