//! Property tests of the frame decoder: whatever text arrives, `parse` answers a frame or
//! the contract's error (`invalid_request` for a broken envelope or unknown type,
//! `validation_failed` for a bad payload), keeps the `ref` when it could be read, and
//! never panics.

use proptest::prelude::*;
use serde_json::{json, Value};

use super::{parse, BadFrame};

/// Every client frame type of PROTOCOL §4.
const TYPES: &[&str] = &[
    "authenticate",
    "refresh_token",
    "ping",
    "heartbeat",
    "join_conversation",
    "leave_conversation",
    "send_message",
    "typing",
    "read_receipt",
    "check_in",
    "check_out",
    "subscribe_checkins",
    "unsubscribe_checkins",
    "join_attendance_room",
    "leave_attendance_room",
    "join_general_attendance",
    "leave_general_attendance",
    "subscribe_presence",
    "unsubscribe_presence",
];

/// Every payload field name a client frame has, so that generated payloads hit real fields
/// with wrong values, not only unknown ones.
const FIELDS: &[&str] = &[
    "token",
    "timestamp",
    "conversation_id",
    "since_seq",
    "content",
    "client_msg_id",
    "attachment_id",
    "is_typing",
    "seq",
    "member_id",
    "location",
    "notes",
    "idempotency_key",
    "employee_id",
];

fn assert_contract_error(bad: &BadFrame) {
    let code = bad.error.code();
    assert!(
        code == "invalid_request" || code == "validation_failed",
        "unexpected code {code}: {}",
        bad.error
    );
    let status = bad.error.status().as_u16();
    assert!(status == 400 || status == 422, "status {status}");
    assert!(!bad.error.to_string().is_empty());
}

/// Numbers no i64 holds, written as JSON text (serde_json keeps them only as text).
fn huge_number() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("1e400".to_string()),
        Just("-1e400".to_string()),
        Just("99999999999999999999999999999".to_string()),
        Just("-9223372036854775809".to_string()),
        Just("9223372036854775808".to_string()),
        Just("1.5".to_string()),
        Just("-0".to_string()),
        "[1-9][0-9]{19,60}",
        "-[1-9][0-9]{19,60}",
        "[1-9][0-9]{0,4}\\.[0-9]{1,5}[eE][+-]?[0-9]{1,4}",
    ]
}

/// Any JSON value, a few levels deep, with huge and small numbers, nulls and long or odd
/// strings.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,40}".prop_map(Value::from),
        (0usize..70_000).prop_map(|n| Value::from("x".repeat(n))),
        Just(Value::from("\u{0}\u{feff}\u{10ffff}")),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    prop::sample::select(FIELDS).prop_map(String::from),
                    ".{0,8}"
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A payload object whose keys are the frames' real fields with arbitrary values.
fn field_payload() -> impl Strategy<Value = Value> {
    prop::collection::btree_map(prop::sample::select(FIELDS), any_json(), 0..6)
        .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect()))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Arbitrary text (including what lossy UTF-8 decoding of arbitrary bytes gives).
    #[test]
    fn arbitrary_text_never_panics(text in ".{0,300}") {
        if let Err(bad) = parse(&text) {
            assert_contract_error(&bad);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let text = String::from_utf8_lossy(&bytes);
        if let Err(bad) = parse(&text) {
            assert_contract_error(&bad);
        }
    }

    /// A real envelope with arbitrary payloads: decoded, or `validation_failed` (the type
    /// is known), with the `ref` kept either way.
    #[test]
    fn known_types_with_arbitrary_payloads(
        kind in prop::sample::select(TYPES),
        payload in prop_oneof![field_payload(), any_json()],
        reference in any_json(),
    ) {
        let text = json!({"type": kind, "ref": reference, "payload": payload}).to_string();
        match parse(&text) {
            Ok(incoming) => {
                let expected = if reference.is_null() { None } else { Some(&reference) };
                prop_assert_eq!(incoming.reference.as_ref(), expected);
                prop_assert!(payload.is_object() || payload.is_null());
            }
            Err(bad) => {
                assert_contract_error(&bad);
                let expected = if reference.is_null() { None } else { Some(&reference) };
                prop_assert_eq!(bad.reference.as_ref(), expected);
                if payload.is_object() || payload.is_null() {
                    prop_assert_eq!(bad.error.code(), "validation_failed");
                } else {
                    prop_assert_eq!(bad.error.code(), "invalid_request");
                }
            }
        }
    }

    /// Huge numbers where ids and sequence numbers go: refused, never wrapped or panicking.
    /// One that no f64 holds either (`1e400`) fails the JSON parse itself
    /// (`invalid_request`); the others fail the payload (`validation_failed`, `ref` kept).
    #[test]
    fn huge_numbers_are_refused(
        kind in prop::sample::select(&["join_conversation", "read_receipt", "check_in", "check_out", "join_attendance_room"][..]),
        number in huge_number(),
    ) {
        let text = format!(
            r#"{{"type":"{kind}","ref":1,"payload":{{"conversation_id":{number},"seq":{number},"member_id":{number},"employee_id":{number},"since_seq":{number},"is_typing":true}}}}"#
        );
        let bad = parse(&text).expect_err("no i64 holds this number");
        assert_contract_error(&bad);
        if bad.error.code() == "validation_failed" {
            prop_assert_eq!(bad.reference, Some(Value::from(1)));
        } else {
            prop_assert!(bad.error.to_string().contains("out of range"), "{}", bad.error);
        }
    }

    /// Unknown types are `invalid_request`, whatever they look like.
    #[test]
    fn unknown_types_are_invalid_requests(kind in "[a-z_]{0,30}") {
        prop_assume!(!TYPES.contains(&kind.as_str()));
        let bad = parse(&json!({"type": kind, "ref": "r"}).to_string()).expect_err("unknown type");
        prop_assert_eq!(bad.error.code(), "invalid_request");
        prop_assert_eq!(bad.reference, Some(Value::from("r")));
    }

    /// Wrong JSON types in the envelope itself.
    #[test]
    fn envelope_of_wrong_shape(kind in any_json(), payload in any_json()) {
        let text = json!({"type": kind, "payload": payload}).to_string();
        if let Err(bad) = parse(&text) {
            assert_contract_error(&bad);
        } else {
            prop_assert!(kind.is_string());
        }
    }
}

#[test]
fn deep_nesting_is_refused_without_overflowing_the_stack() {
    for depth in [100, 127, 128, 129, 1_000, 100_000] {
        for (open, close) in [("[", "]"), ("{\"a\":", "}")] {
            let nested = format!("{}1{}", open.repeat(depth), close.repeat(depth));
            // Nested as the whole frame, as the payload, and inside a payload field.
            for text in [
                nested.clone(),
                format!(r#"{{"type":"ping","payload":{nested}}}"#),
                format!(r#"{{"type":"ping","payload":{{"timestamp":{nested}}}}}"#),
                format!(r#"{{"type":"send_message","ref":{nested},"payload":{{}}}}"#),
            ] {
                if let Err(bad) = parse(&text) {
                    assert_contract_error(&bad);
                }
            }
        }
    }
}

#[test]
fn nulls_wrong_types_and_odd_strings() {
    let cases = [
        r#"{"type":"send_message","payload":{"conversation_id":null,"content":"hi","client_msg_id":"a"}}"#,
        r#"{"type":"send_message","payload":{"conversation_id":"1","content":"hi","client_msg_id":"a"}}"#,
        r#"{"type":"send_message","payload":{"conversation_id":1,"content":5,"client_msg_id":"a"}}"#,
        r#"{"type":"send_message","payload":{"conversation_id":1,"content":"\ud800","client_msg_id":"a"}}"#,
        r#"{"type":"typing","payload":{"conversation_id":1,"is_typing":"yes"}}"#,
        r#"{"type":"authenticate","payload":{"token":null}}"#,
        r#"{"type":"check_in","payload":{"member_id":[1]}}"#,
        r#"{"type":null}"#,
        r#"{"type":7}"#,
        r#"{"payload":{}}"#,
        r#"{"type":"ping","payload":[]}"#,
        r#"{"type":"ping","payload":"x"}"#,
        "[]",
        "null",
        "\"ping\"",
        "",
        "{\"type\":\"ping\"",
        "{\"type\":\"pi\u{0}ng\"}",
    ];
    for text in cases {
        let bad = parse(text).expect_err(text);
        assert_contract_error(&bad);
    }
    // An oversize string still decodes: the length rules are the domain's (4000 characters
    // for content), which answer `validation_failed` in turn.
    let long = "é".repeat(70_000);
    let text = json!({"type":"send_message","payload":{"conversation_id":1,"content":long,"client_msg_id":"a"}});
    assert!(parse(&text.to_string()).is_ok());
}
