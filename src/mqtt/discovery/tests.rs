use super::*;

#[test]
fn every_entity_has_what_home_assistant_requires() {
    let t = Topics::new("borgmatic/nas");
    let d = Discovery {
        prefix: "homeassistant",
        node: "nas",
        topics: &t,
        configuration_url: Some("http://nas.lan:8080/"),
    };
    let all = d.entities("next.cloud");
    assert_eq!(all.len(), ENTITIES.len());
    for e in &all {
        let p = e.payload.as_ref().unwrap();
        assert!(p["unique_id"].is_string() && p["name"].is_string(), "{p}");
        assert_eq!(p["device"]["via_device"], "borgmatic_mqtt_nas");
        assert_eq!(p["device"]["configuration_url"], "http://nas.lan:8080/");
        assert_eq!(p["origin"]["name"], "borgmatic-mqtt");
        assert_eq!(p["availability_topic"], "borgmatic/nas/status");
        let component = e.topic.split('/').nth(1).unwrap();
        let object = p["object_id"].as_str().unwrap();
        assert!(object.starts_with("borgmatic_nas_next_cloud_"), "{object}");
        assert_eq!(
            p["default_entity_id"],
            format!("{component}.{object}"),
            "old and new Home Assistant give the same id"
        );
        if component == "button" {
            assert!(p["command_topic"]
                .as_str()
                .unwrap()
                .starts_with("borgmatic/nas/ha/next.cloud/"));
        } else {
            assert!(p["state_topic"].is_string(), "{p}");
        }
        assert!(e.topic.starts_with("homeassistant/") && e.topic.ends_with("/config"));
        assert!(
            !e.topic.contains("next.cloud"),
            "object ids are [a-z0-9_]: {}",
            e.topic
        );
    }
    let find = |k: &str| {
        all.iter()
            .find(|e| e.topic.ends_with(&format!("/{k}/config")))
            .and_then(|e| e.payload.clone())
            .unwrap()
    };
    let result = find("last_result");
    assert_eq!(result["device_class"], "enum");
    assert!(result["options"]
        .as_array()
        .unwrap()
        .contains(&json!("partial")));
    assert_eq!(
        result["json_attributes_topic"],
        "borgmatic/nas/last/next.cloud/backup"
    );
    assert_eq!(
        find("event")["state_topic"],
        "borgmatic/nas/repos/next.cloud/event"
    );
    assert_eq!(find("problem")["device_class"], "problem");
    assert_eq!(find("last_duration")["entity_category"], "diagnostic");
    let worker = d.worker_entities();
    assert_eq!(
        worker[0].payload.as_ref().unwrap()["device"]["identifiers"][0],
        "borgmatic_mqtt_nas"
    );
    assert!(d.removals("x").iter().all(|e| e.payload.is_none()));
    assert_eq!(d.removals("x").len(), ENTITIES.len());
}
