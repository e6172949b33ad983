//! Home Assistant MQTT discovery on a real broker: every entity's config, buttons
//! that run a backup without a token in any retained payload, re-announcement on
//! Home Assistant's birth message, removal of vanished repositories.

mod support;

use serde_json::Value;
use support::*;

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
    ha.wait_for(|m| m.topic.ends_with("_nc/running/config"))
        .await;
    let nc = configs("nc");
    assert_eq!(nc.len(), 9, "{nc:#?}");
    for c in &nc {
        assert!(c["unique_id"].is_string() && c["name"].is_string(), "{c}");
        assert!(c["device"]["identifiers"][0]
            .as_str()
            .unwrap()
            .starts_with("borgmatic_mqtt_"));
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
    assert_eq!(buttons.len(), 2);
    let classes: Vec<&str> = nc
        .iter()
        .filter_map(|c| c["device_class"].as_str())
        .collect();
    for class in ["timestamp", "duration", "data_size", "running"] {
        assert!(classes.contains(&class), "{class} missing: {classes:?}");
    }
    assert_no_secrets("discovery payloads", &ha.all_text());

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
    assert_eq!(flips, ["ON", "OFF"]);

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
    let target = before + 9;
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
        .wait_for(|m| m.topic.ends_with("_nc/running/config"))
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
