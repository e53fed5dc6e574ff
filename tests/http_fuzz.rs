//! Property test: whatever body a client sends to /v1/classify, the response is 200 or a 4xx
//! with the error shape, never a 5xx and never a panic.

mod http_support;

use std::sync::OnceLock;

use axum::body::Body;
use axum::http::Request;
use axum::Router;
use proptest::prelude::*;
use serde_json::{Map, Value};

use cybertriage::http::request::Limits;
use cybertriage::http::Config;

use http_support::*;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap())
}

/// Small limits, so that the generated values also reach the 413 paths.
fn app() -> &'static Router {
    static APP: OnceLock<Router> = OnceLock::new();
    APP.get_or_init(|| {
        let limits =
            Limits { max_body_bytes: 4096, max_chars: Some(300), max_context_messages: 3, max_batch_inputs: 4 };
        real_app(Config { limits, ..test_config() }).0
    })
}

fn check(body: Vec<u8>, content_type: Option<&str>) -> Result<(), TestCaseError> {
    let mut request = Request::post("/v1/classify");
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    let answer = runtime().block_on(send(app(), request.body(Body::from(body)).unwrap()));
    let status = answer.status.as_u16();
    prop_assert!(status == 200 || (400..500).contains(&status), "status {}: {:?}", status, answer.body);
    if status != 200 {
        answer.error_code();
    }
    Ok(())
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(field_name(), inner, 0..6).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Mostly the API's own field names, so that objects get past the unknown-field check.
fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec!["text", "context", "request_id"]).prop_map(str::to_string),
        1 => any::<String>(),
    ]
}

/// Objects shaped like a request, with arbitrary Unicode in the strings.
fn request_like() -> impl Strategy<Value = Value> {
    (
        any::<String>(),
        prop::option::of(prop::collection::vec(any::<String>(), 0..5)),
        prop::option::of("[A-Za-z0-9._:-]{0,20}|.{0,10}"),
    )
        .prop_map(|(text, context, request_id)| {
            let mut object = Map::new();
            object.insert("text".into(), Value::String(text));
            if let Some(context) = context {
                object.insert("context".into(), context.into_iter().map(Value::String).collect());
            }
            if let Some(id) = request_id {
                object.insert("request_id".into(), Value::String(id));
            }
            Value::Object(object)
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_get_200_or_4xx(body in prop::collection::vec(any::<u8>(), 0..512)) {
        check(body, Some("application/json"))?;
    }

    #[test]
    fn arbitrary_json_values_get_200_or_4xx(value in json_value()) {
        check(serde_json::to_vec(&value).unwrap(), Some("application/json"))?;
    }

    #[test]
    fn arbitrary_content_types_get_200_or_4xx(content_type in "[ -~]{0,40}") {
        check(br#"{"text": "bonjour"}"#.to_vec(), Some(&content_type))?;
    }
}

proptest! {
    // Most of these reach the model: fewer cases keep the run short.
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_gets_200_or_4xx(value in request_like()) {
        check(serde_json::to_vec(&value).unwrap(), None)?;
    }
}
