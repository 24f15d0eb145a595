//! Property tests of the JSON bodies: whatever bytes arrive, each body type decodes or
//! gives the contract's error through the same mapping the server uses (`json_error`):
//! `invalid_request` (400) for bytes that are not JSON, `validation_failed` (422) for JSON
//! of the wrong shape. Never a panic, never another code. The handlers' private body
//! types are thrown random bodies at the live server in `tests/it/fuzz.rs`.

use actix_web::error::JsonPayloadError;
use proptest::prelude::*;
use serde::de::DeserializeOwned;

use super::json_error;
use crate::domain::attendance::RecordRequest;
use crate::domain::chat::SendMessage;
use crate::domain::checkins::CheckInRequest;
use crate::domain::users::{CreateUser, PatchUser};

const FIELDS: &[&str] = &[
    "conversation_id",
    "content",
    "client_msg_id",
    "attachment_id",
    "member_id",
    "location",
    "notes",
    "idempotency_key",
    "employee_id",
    "status",
    "device",
    "timestamp",
    "username",
    "password",
    "role",
    "display_name",
    "account_status",
];

/// Decodes `bytes` as `T` the way `web::Json<T>` does; on failure, the code it answers.
fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Option<&'static str> {
    match serde_json::from_slice::<T>(bytes) {
        Ok(_) => None,
        Err(e) => {
            let syntax = !e.is_data();
            let err = json_error(&JsonPayloadError::Deserialize(e));
            let code = err.code();
            assert!(matches!(err.status().as_u16(), 400 | 422), "{err}");
            if syntax {
                assert_eq!(code, "invalid_request", "{err}");
            }
            Some(code)
        }
    }
}

fn every_type(bytes: &[u8]) {
    for code in [
        decode::<SendMessage>(bytes),
        decode::<CheckInRequest>(bytes),
        decode::<RecordRequest>(bytes),
        decode::<CreateUser>(bytes),
        decode::<PatchUser>(bytes),
    ]
    .into_iter()
    .flatten()
    {
        assert!(
            code == "invalid_request" || code == "validation_failed",
            "{code}"
        );
    }
}

fn value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,20}".prop_map(Value::from),
        (0usize..20_000).prop_map(|n| Value::from("é".repeat(n))),
    ];
    leaf.prop_recursive(4, 24, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    prop::sample::select(FIELDS).prop_map(String::from),
                    ".{0,6}"
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        every_type(&bytes);
    }

    #[test]
    fn arbitrary_json_with_real_field_names(v in value()) {
        every_type(v.to_string().as_bytes());
    }

    #[test]
    fn objects_of_real_fields_with_wrong_values(
        fields in prop::collection::btree_map(prop::sample::select(FIELDS), value(), 0..8)
    ) {
        let obj: serde_json::Map<_, _> = fields.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        every_type(serde_json::Value::Object(obj).to_string().as_bytes());
    }
}

#[test]
fn huge_numbers_nesting_invalid_utf8_and_nulls() {
    let deep = format!("{}1{}", "[".repeat(5000), "]".repeat(5000));
    let cases: Vec<Vec<u8>> = vec![
        br#"{"conversation_id":1e400,"content":"x","client_msg_id":"a"}"#.to_vec(),
        br#"{"conversation_id":99999999999999999999,"content":"x","client_msg_id":"a"}"#.to_vec(),
        br#"{"member_id":-9223372036854775809}"#.to_vec(),
        br#"{"member_id":null}"#.to_vec(),
        br#"{"employee_id":1,"status":null}"#.to_vec(),
        br#"{"username":"a","password":"b","role":["admin"]}"#.to_vec(),
        br#"{"unknown_field":1}"#.to_vec(),
        b"{\"content\":\"\xff\xfe\"}".to_vec(),
        br#"{"content":"\ud800"}"#.to_vec(),
        deep.into_bytes(),
        b"".to_vec(),
        b"null".to_vec(),
    ];
    for bytes in cases {
        every_type(&bytes);
    }
    // Unknown fields on a user change are refused (`deny_unknown_fields`), as 422.
    assert_eq!(
        decode::<PatchUser>(br#"{"rolee":"admin"}"#),
        Some("validation_failed")
    );
}
