//! The envelope: ids, tokens and bounds checked before any command is parsed.
//!
//! Test code: may import any module (`scripts/import-cycles` counts production code only).

use super::*;

/// The configured defaults.
impl Default for RequestLimits {
    fn default() -> Self {
        let s = crate::config::LimitSettings::default();
        Self {
            max_bytes: s.max_request_bytes,
            max_depth: s.max_request_depth,
        }
    }
}

#[test]
fn envelope_extracts_request_id_and_token() {
    let lim = RequestLimits::default();
    let e = Envelope::parse(br#"{"request_id":"a","token":"t","repository":"x"}"#, &lim).unwrap();
    assert_eq!(e.request_id.unwrap().as_str(), "a");
    assert_eq!(e.token.as_deref(), Some("t"));
    assert_eq!(e.fields.len(), 1);
    assert!(Envelope::parse(b"[1]", &lim).is_err());
    assert!(Envelope::parse(b"{", &lim).is_err());
    assert!(Envelope::parse(b"", &lim).unwrap().fields.is_empty());
    let (rid, err) = Envelope::parse(br#"{"request_id":"a","token":5}"#, &lim).unwrap_err();
    assert_eq!(rid.unwrap().as_str(), "a");
    assert_eq!(err.code, ErrorCode::Invalid);
}

#[test]
fn timeout_secs_is_an_envelope_field_of_whole_positive_seconds() {
    let lim = RequestLimits::default();
    let e = Envelope::parse(
        br#"{"request_id":"a","timeout_secs":2,"repository":"x"}"#,
        &lim,
    )
    .unwrap();
    assert_eq!(e.timeout_secs, Some(2));
    assert!(!e.fields.contains_key("timeout_secs"));
    assert_eq!(
        Envelope::parse(br#"{"timeout_secs":null}"#, &lim)
            .unwrap()
            .timeout_secs,
        None
    );
    for bad in [
        &br#"{"request_id":"a","timeout_secs":0}"#[..],
        br#"{"request_id":"a","timeout_secs":-1}"#,
        br#"{"request_id":"a","timeout_secs":1.5}"#,
        br#"{"request_id":"a","timeout_secs":"2"}"#,
        br#"{"request_id":"a","timeout_secs":18446744073709551616}"#,
    ] {
        let (rid, err) = Envelope::parse(bad, &lim).unwrap_err();
        assert_eq!(rid.unwrap().as_str(), "a");
        assert_eq!(err.code, ErrorCode::Invalid);
    }
}

#[test]
fn oversize_and_deep_requests_are_refused_before_parsing() {
    let lim = RequestLimits {
        max_bytes: 1024,
        max_depth: 4,
    };
    let big = format!(r#"{{"x":"{}"}}"#, "a".repeat(2000));
    let (_, e) = Envelope::parse(big.as_bytes(), &lim).unwrap_err();
    assert!(e.message.contains("at most 1024"), "{}", e.message);
    let (_, e) = Envelope::parse(b"[[[[[[1]]]]]]", &lim).unwrap_err();
    assert!(e.message.contains("deeper than 4"), "{}", e.message);
    // Unclosed brackets: refused on depth as soon as the fifth opens.
    assert!(Envelope::parse(&[b'['; 900], &lim).is_err());
    // Brackets inside strings (escaped quotes included) do not count.
    let ok = br#"{"a":{"b":{"c":"[[[[[[\"{{{{{{"}}}"#;
    assert!(Envelope::parse(ok, &lim).is_ok());
    assert!(Envelope::parse(br#"{"a":[[[1]]]}"#, &lim).is_ok());
    assert!(Envelope::parse(br#"{"a":[[[[1]]]]}"#, &lim).is_err());
}

#[test]
fn topic_bases() {
    assert!(validate_topic_base("borgmatic/host").is_ok());
    for bad in ["", "a/#", "a/+/b", "$SYS/x", "a//b", "/a"] {
        assert!(validate_topic_base(bad).is_err(), "{bad}");
    }
}
