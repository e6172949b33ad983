//! The worker in a real Home Assistant Core: the MQTT integration set up through
//! its config flow against Mosquitto with the project's own ACL and users, as a user
//! would, with the example automations of `examples/home-assistant/` loaded (their
//! notifications swapped for counters the test reads). One Home Assistant start
//! walks through: every entity under its documented id on the right device, the
//! repository's health (a stale repository is a problem), the nightly example
//! (backup, then verify of the same archive), two failures in a row notifying
//! twice, a worker restart notifying nobody, no warning in Home Assistant's log,
//! and availability following the worker.

use crate::helpers::homeassistant::{check_config, HomeAssistant};
use crate::helpers::*;
use serde_json::json;

const NODE: &str = "itest";

fn entity(component: &str, repository: &str, what: &str) -> String {
    format!("{component}.borgmatic_{NODE}_{repository}_{what}")
}

/// The example automations for this node and repository, each `notify.notify`
/// replaced by incrementing `counter.notified_<n>` (n-th automation that notifies).
fn example_automations() -> String {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples/home-assistant/automations.yaml"),
    )
    .unwrap()
    .replace("_nas_", &format!("_{NODE}_"))
    .replace("nextcloud", "nc")
    // The nightly trigger, made something the test can fire now.
    .replace(
        "    - trigger: time\n      at: \"02:30:00\"\n",
        "    - trigger: event\n      event_type: borgmatic_test_nightly\n",
    );
    let mut out = String::new();
    for (n, part) in text.split("    - action: notify.notify\n").enumerate() {
        if n > 0 {
            out.push_str(&format!(
                "    - action: counter.increment\n      target:\n        \
                 entity_id: counter.notified_{n}\n    - action: persistent_notification.create\n"
            ));
        }
        out.push_str(part);
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn home_assistant_shows_the_worker_and_runs_its_buttons() {
    let automations = example_automations();
    let (ok, report) = check_config(&automations);
    assert!(ok, "check_config refused the examples: {report}");

    let broker = Broker::start_shipped();
    let repos = Repos::new();
    repos.add("nc", "");
    repos.add("old", "");
    // A repository whose newest archive is years old (named the way borgmatic
    // names its archives, or borgmatic does not list it).
    let old_repo = repos.repo_path("old").display().to_string();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let made = repos.borg(&[
        "create",
        "--timestamp",
        "2020-01-01T00:00:00",
        &format!("{old_repo}::{}-2020-01-01T00:00:00.000000", host.trim()),
        repos.source("old").to_str().unwrap(),
    ]);
    assert!(made.status.success(), "{made:?}");
    let password = shipped_password("borgmatic");
    let mut worker = Worker::start_at(
        &broker,
        &repos,
        &format!("borgmatic/{NODE}"),
        &[
            ("BMQTT_MQTT__USERNAME", "borgmatic"),
            ("BMQTT_MQTT__PASSWORD", password.as_str()),
            ("BMQTT_MQTT__NODE_ID", NODE),
            ("BMQTT_HOMEASSISTANT__DISCOVERY", "true"),
        ],
    )
    .await;
    let ha = HomeAssistant::start(
        broker.port,
        "homeassistant",
        &shipped_password("homeassistant"),
        &automations,
    )
    .await;

    // Every documented entity exists under its documented id, on the repository's
    // device, which hangs off the worker's device.
    let per_repo = [
        ("button", "run_backup"),
        ("button", "verify_backup"),
        ("button", "check_repository"),
        ("button", "prune"),
        ("button", "cancel"),
        ("sensor", "last_backup"),
        ("sensor", "last_result"),
        ("sensor", "last_duration"),
        ("sensor", "last_size"),
        ("sensor", "last_verified"),
        ("sensor", "verify_result"),
        ("sensor", "progress"),
        ("sensor", "last_success"),
        ("binary_sensor", "running"),
        ("binary_sensor", "problem"),
        ("event", "event"),
    ];
    let expected: Vec<String> = per_repo.iter().map(|(c, w)| entity(c, "nc", w)).collect();
    let connectivity = format!("binary_sensor.borgmatic_{NODE}_connectivity");
    ha.wait_state(&connectivity, |s| s["state"] == "on").await;
    for id in &expected {
        ha.wait_state(id, |s| s["state"] != "unavailable").await;
    }
    let device_name = |id: &str| format!("{{{{ device_attr(device_id('{id}'), 'name') }}}}");
    assert_eq!(
        ha.template(&device_name(&connectivity)).await,
        format!("borgmatic {NODE}")
    );
    assert_eq!(
        ha.template(&device_name(&expected[0])).await,
        format!("borgmatic {NODE} nc")
    );
    let via = ha
        .template(&format!(
            "{{{{ device_attr(device_id('{}'), 'via_device_id') == device_id('{connectivity}') }}}}",
            expected[0]
        ))
        .await;
    assert_eq!(
        via, "True",
        "the repository device is not linked to the worker's"
    );
    for id in &expected {
        let same = ha
            .template(&format!(
                "{{{{ device_id('{id}') == device_id('{}') }}}}",
                expected[0]
            ))
            .await;
        assert_eq!(same, "True", "{id} is not on the repository's device");
    }
    for (id, class) in [
        (entity("sensor", "nc", "last_size"), "data_size"),
        (entity("sensor", "nc", "last_result"), "enum"),
        (entity("binary_sensor", "nc", "problem"), "problem"),
        (connectivity.clone(), "connectivity"),
    ] {
        let s = ha.state(&id).await.unwrap();
        assert_eq!(s["attributes"]["device_class"], class, "{s}");
    }
    let size = ha
        .state(&entity("sensor", "nc", "last_size"))
        .await
        .unwrap();
    assert_eq!(size["attributes"]["state_class"], "measurement", "{size}");
    let events = ha.state(&entity("event", "nc", "event")).await.unwrap();
    assert!(
        events["attributes"]["event_types"]
            .as_array()
            .unwrap()
            .contains(&json!("backup_failed")),
        "{events}"
    );

    // Health from the repositories themselves: the stale one is a problem, with
    // its reason; the one without archives too.
    let stale = ha
        .wait_state(&entity("binary_sensor", "old", "problem"), |s| {
            s["state"] == "on"
        })
        .await;
    assert!(
        stale["attributes"]["reason"]
            .as_str()
            .unwrap_or("")
            .contains("h old"),
        "{stale}"
    );
    let when = ha
        .state(&entity("sensor", "old", "last_success"))
        .await
        .unwrap();
    assert!(
        when["state"]
            .as_str()
            .unwrap_or("")
            .starts_with("2020-01-01"),
        "{when}"
    );
    ha.wait_state(&entity("binary_sensor", "nc", "problem"), |s| {
        s["state"] == "on"
    })
    .await;

    // The nightly example: a backup, then a verification of the same archive.
    assert!(automations.contains("borgmatic_test_nightly"));
    ha.post("/api/events/borgmatic_test_nightly", json!({}))
        .await;
    let verified = ha
        .wait_state(&entity("sensor", "nc", "verify_result"), |s| {
            s["state"] == "verified"
        })
        .await;
    let result = ha
        .state(&entity("sensor", "nc", "last_result"))
        .await
        .unwrap();
    assert_eq!(result["state"], "succeeded", "{result}");
    assert_eq!(repos.archives("nc").len(), 1);
    assert_eq!(
        verified["attributes"]["archive"], result["attributes"]["archive"],
        "the verification checked another archive"
    );
    ha.wait_state(&entity("binary_sensor", "nc", "problem"), |s| {
        s["state"] == "off"
    })
    .await;
    let size = ha
        .state(&entity("sensor", "nc", "last_size"))
        .await
        .unwrap();
    assert!(size["state"].as_str().unwrap().parse::<f64>().unwrap() > 0.0);
    ha.wait_state(&entity("binary_sensor", "nc", "running"), |s| {
        s["state"] == "off"
    })
    .await;

    // Two failures in a row notify twice; the size is unknown, not the last
    // success's; the problem sensor turns on and notifies once.
    let repo = repos.repo_path("nc");
    let away = repo.with_extension("away");
    std::fs::rename(&repo, &away).unwrap();
    for n in ["1", "2"] {
        ha.call(
            "button",
            "press",
            json!({ "entity_id": entity("button", "nc", "run_backup") }),
        )
        .await;
        ha.wait_state("counter.notified_1", |s| s["state"] == n)
            .await;
    }
    let failed = ha
        .state(&entity("sensor", "nc", "last_result"))
        .await
        .unwrap();
    assert_eq!(failed["state"], "failed", "{failed}");
    let size = ha
        .state(&entity("sensor", "nc", "last_size"))
        .await
        .unwrap();
    assert_eq!(size["state"], "unknown", "{size}");
    ha.wait_state("counter.notified_2", |s| s["state"] == "1")
        .await;
    std::fs::rename(&away, &repo).unwrap();

    // A worker restart (killed) repeats no notification.
    worker.restart(&broker).await;
    ha.wait_state(&connectivity, |s| s["state"] == "on").await;
    for id in &expected {
        ha.wait_state(id, |s| s["state"] != "unavailable").await;
    }
    ha.wait_state(&entity("binary_sensor", "nc", "problem"), |s| {
        s["state"] == "on"
    })
    .await;
    for (counter, n) in [("counter.notified_1", "2"), ("counter.notified_2", "1")] {
        let c = ha.state(counter).await.unwrap();
        assert_eq!(c["state"], n, "{counter} after the restart: {c}");
    }

    // Nothing about the worker's entities in Home Assistant's warnings or errors.
    let log = ha.log();
    let complaints: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARNING") || l.contains("ERROR"))
        .filter(|l| {
            ["borgmatic", "mqtt", "template", "Template"]
                .iter()
                .any(|w| l.contains(w))
        })
        .collect();
    assert!(complaints.is_empty(), "{complaints:#?}");

    // Availability follows the worker: a clean stop makes every entity unavailable,
    // and the connectivity diagnostic reads off.
    assert!(worker.terminate().success());
    for id in &expected {
        ha.wait_state(id, |s| s["state"] == "unavailable").await;
    }
    ha.wait_state(&connectivity, |s| s["state"] == "off").await;
}
