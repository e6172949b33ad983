//! Home Assistant MQTT discovery on a real broker: every entity's config, buttons
//! that run a backup without a token in any retained payload, re-announcement on
//! Home Assistant's birth message, removal of vanished repositories.

use crate::helpers::*;
use serde_json::Value;

/// Discovery configs per repository (5 buttons, 8 sensors, 2 binary sensors, 1
/// event entity).
const PER_REPOSITORY: usize = 16;

#[tokio::test(flavor = "multi_thread")]
async fn discovery_buttons_birth_and_removal() {
    let broker = Broker::start();
    let repos = Repos::new();
    repos.add("nc", "");
    repos.add("old", "");
    // The discovery prefix lives under the test broker's namespace.
    let prefix = format!("test/{}/homeassistant", uuid_like());
    let settings = [
        ("BMQTT_HOMEASSISTANT__DISCOVERY", "true"),
        ("BMQTT_HOMEASSISTANT__PREFIX", prefix.as_str()),
        ("BMQTT_JOBS__LOG_QOS", "1"),
    ];
    let ha = Client::connect_as(&broker, "homeassistant", HA_PASSWORD).await;
    ha.subscribe(&format!("{prefix}/#")).await;
    let mut worker = Worker::start(&broker, &repos, &settings).await;
    ha.subscribe(&worker.topic("#")).await;

    let configs = |label: &str| -> Vec<Value> {
        ha.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|m| {
                m.topic.starts_with(&prefix)
                    && m.topic.contains(&format!("_{label}/"))
                    && !m.payload.is_empty()
            })
            .map(|m| m.json())
            .collect()
    };
    ha.wait_for(|m| m.topic.ends_with("_nc/event/config")).await;
    let nc = configs("nc");
    assert_eq!(nc.len(), PER_REPOSITORY, "{nc:#?}");
    for c in &nc {
        assert!(c["unique_id"].is_string() && c["name"].is_string(), "{c}");
        assert!(c["device"]["identifiers"][0]
            .as_str()
            .unwrap()
            .starts_with("borgmatic_mqtt_"));
        assert!(c["device"]["via_device"]
            .as_str()
            .unwrap()
            .starts_with("borgmatic_mqtt_"));
        let (object, default) = (
            c["object_id"].as_str().unwrap(),
            c["default_entity_id"].as_str().unwrap(),
        );
        assert!(default.ends_with(&format!(".{object}")), "{c}");
        assert_eq!(c["availability_topic"], worker.topic("status"));
        assert!(
            c["command_topic"].is_string() || c["state_topic"].is_string(),
            "{c}"
        );
    }
    let buttons: Vec<&Value> = nc
        .iter()
        .filter(|c| c["command_topic"].is_string())
        .collect();
    assert_eq!(buttons.len(), 5);
    let classes: Vec<&str> = nc
        .iter()
        .filter_map(|c| c["device_class"].as_str())
        .collect();
    for class in [
        "timestamp",
        "duration",
        "data_size",
        "running",
        "enum",
        "problem",
    ] {
        assert!(classes.contains(&class), "{class} missing: {classes:?}");
    }
    assert_no_secrets("discovery payloads", &ha.all_text());

    // The start-up probe read the empty repository: a problem, with its reason.
    // (It holds the repository for a second: press once it is done.)
    let health = worker.topic("repos/nc/health");
    let h = ha.wait_for(|m| m.topic == health).await.json();
    assert_eq!(h["problem"], true, "{h}");
    assert!(h["reason"].as_str().unwrap().contains("no archive"), "{h}");

    // The "Run backup" button runs a backup; the sensors' topics fill in.
    let run = nc
        .iter()
        .find(|c| c["unique_id"].as_str().unwrap().ends_with("run_backup"))
        .unwrap();
    ha.client
        .publish(
            run["command_topic"].as_str().unwrap(),
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
            false,
            "PRESS",
        )
        .await
        .unwrap();
    let last = worker.topic("last/nc/backup");
    let summary = ha.wait_for(|m| m.topic == last).await.json();
    assert_eq!(summary["state"], "succeeded", "{summary}");
    assert!(summary["stats"]["original_size"].as_u64().unwrap() > 0);
    assert_eq!(repos.archives("nc").len(), 1);
    let running = worker.topic("repos/nc/running");
    let flips: Vec<String> = ha
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|m| m.topic == running)
        .map(|m| m.text())
        .collect();
    // OFF retained from the start, ON while the backup writes, OFF after it.
    assert_eq!(flips, ["OFF", "ON", "OFF"]);
    // The summary is out before `running` goes OFF, and the event entity heard it.
    let order: Vec<String> = ha
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|m| m.topic.clone())
        .collect();
    let at = |t: &str| order.iter().rposition(|x| x == t).unwrap();
    assert!(at(&last) < at(&running), "{order:#?}");
    let event = worker.topic("repos/nc/event");
    let e = ha.wait_for(|m| m.topic == event).await;
    assert!(!e.retain);
    assert_eq!(e.json()["event_type"], "backup_succeeded");
    // The repository's health follows the backup.
    let h = ha
        .wait_for(|m| m.topic == health && m.json()["newest_archive"].is_string())
        .await
        .json();
    assert_eq!(h["problem"], false, "{h}");

    // Cancel with nothing running: refused, and the user hears it as an event.
    ha.client
        .publish(
            worker.topic("ha/nc/cancel"),
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
            false,
            "PRESS",
        )
        .await
        .unwrap();
    let refused = ha
        .wait_for(|m| m.topic == event && m.json()["event_type"] == "press_refused")
        .await
        .json();
    assert_eq!(refused["action"], "cancel", "{refused}");

    // Home Assistant restarts: it announces itself and gets every config again.
    let before = configs("nc").len();
    ha.client
        .publish(
            format!("{prefix}/status"),
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
            false,
            "online",
        )
        .await
        .unwrap();
    let target = before + PER_REPOSITORY;
    let count = || {
        ha.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|m| m.topic.contains("_nc/") && m.topic.ends_with("/config"))
            .count()
    };
    tokio::time::timeout(WAIT, async {
        while count() < target {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the configs were not published again after Home Assistant's birth message");

    // A repository that disappears loses its entities (empty retained configs).
    std::fs::remove_file(repos.config_dir().join("old.yaml")).unwrap();
    worker.restart(&broker).await;
    let fresh = Client::connect_as(&broker, "homeassistant", HA_PASSWORD).await;
    fresh.subscribe(&format!("{prefix}/#")).await;
    fresh
        .wait_for(|m| m.topic.ends_with("_nc/event/config"))
        .await;
    let retained_old: Vec<String> = fresh
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|m| m.topic.contains("_old/"))
        .map(|m| m.topic.clone())
        .collect();
    assert!(
        retained_old.is_empty(),
        "the vanished repository's configs are still retained: {retained_old:?}"
    );
    assert_no_secrets("discovery payloads", &fresh.all_text());
}
