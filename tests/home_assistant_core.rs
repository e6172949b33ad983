//! The worker in a real Home Assistant Core: the MQTT integration set up through
//! its config flow against Mosquitto with the project's own ACL and users, as a user
//! would. Entities appear with the documented ids on one device, a button press runs
//! a real backup whose result Home Assistant shows, and availability follows the
//! worker.

mod support;

use support::homeassistant::HomeAssistant;
use support::*;

const NODE: &str = "itest";

fn entity(component: &str, repository: &str, what: &str) -> String {
    format!("{component}.borgmatic_{NODE}_{repository}_{what}")
}

#[tokio::test(flavor = "multi_thread")]
async fn home_assistant_shows_the_worker_and_runs_its_buttons() {
    let broker = Broker::start_shipped();
    let repos = Repos::new();
    repos.add("nc", "");
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
        "[]",
    )
    .await;

    // Every documented entity exists under its documented id, on one device.
    let expected = [
        entity("button", "nc", "run_backup"),
        entity("button", "nc", "verify_backup"),
        entity("sensor", "nc", "last_backup"),
        entity("sensor", "nc", "last_result"),
        entity("sensor", "nc", "last_duration"),
        entity("sensor", "nc", "last_size"),
        entity("sensor", "nc", "last_verified"),
        entity("sensor", "nc", "verify_result"),
        entity("binary_sensor", "nc", "running"),
    ];
    for id in &expected {
        ha.wait_state(id, |s| s["state"] != "unavailable").await;
    }
    let device = ha
        .template(&format!(
            "{{{{ device_attr(device_id('{}'), 'name') }}}}",
            expected[0]
        ))
        .await;
    assert_eq!(device, format!("borgmatic {NODE}"));
    for id in &expected {
        let same = ha
            .template(&format!(
                "{{{{ device_id('{id}') == device_id('{}') }}}}",
                expected[0]
            ))
            .await;
        assert_eq!(same, "True", "{id} is not on the worker's device");
    }
    let size = ha
        .state(&entity("sensor", "nc", "last_size"))
        .await
        .unwrap();
    assert_eq!(size["attributes"]["device_class"], "data_size", "{size}");

    // A press in Home Assistant runs a real backup, and Home Assistant shows its result.
    assert!(repos.archives("nc").is_empty());
    ha.call(
        "button",
        "press",
        serde_json::json!({ "entity_id": entity("button", "nc", "run_backup") }),
    )
    .await;
    let result = ha
        .wait_state(&entity("sensor", "nc", "last_result"), |s| {
            s["state"] == "succeeded"
        })
        .await;
    assert_eq!(repos.archives("nc").len(), 1, "{result}");
    let when = ha
        .state(&entity("sensor", "nc", "last_backup"))
        .await
        .unwrap();
    assert!(
        when["state"].as_str().unwrap_or("").starts_with("20"),
        "last backup time is not a timestamp: {when}"
    );
    ha.wait_state(&entity("binary_sensor", "nc", "running"), |s| {
        s["state"] == "off"
    })
    .await;

    // Nothing about the worker's entities in Home Assistant's warnings or errors.
    let log = ha.log();
    let complaints: Vec<&str> = log
        .lines()
        .filter(|l| (l.contains("WARNING") || l.contains("ERROR")) && l.contains("borgmatic"))
        .collect();
    assert!(complaints.is_empty(), "{complaints:#?}");

    // Availability follows the worker: a clean stop makes every entity unavailable.
    assert!(worker.terminate().success());
    for id in &expected {
        ha.wait_state(id, |s| s["state"] == "unavailable").await;
    }
}
