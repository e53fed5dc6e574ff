//! The HTTP API on the real model, in process: every client error with its body, batching
//! equivalence, concurrency, the API key, CORS, request ids, metrics, the OpenAPI document,
//! and the absence of message text from the logs. The binary itself is started once, to check
//! start-up and shutdown on SIGTERM.

mod http_support;

use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use axum::Router;
use serde_json::{json, Value};

use cybertriage::http::openapi;
use cybertriage::http::request::Limits;
use cybertriage::http::routes::{OPEN_ROUTES, PROTECTED_ROUTES};
use cybertriage::http::Config;
use cybertriage::infer::BatchConfig;
use cybertriage::triage::classification::Classification;
use cybertriage::triage::taxonomy;

use http_support::*;

/// Invented French messages, each with a clear concern.
const MESSAGES: [&str; 6] = [
    "Des élèves de ma classe se moquent de moi tous les jours sur un groupe Snapchat.",
    "Un homme que j'ai connu sur un jeu me demande des photos de moi en sous-vêtements.",
    "Quelqu'un menace de publier mes photos intimes si je ne lui envoie pas d'argent.",
    "On a piraté mon compte Instagram et la personne publie des choses à ma place.",
    "Je n'en peux plus, j'ai envie de mourir.",
    "Bonjour, comment fonctionne votre service ?",
];

fn app() -> Router {
    real_app(test_config()).0
}

fn classification(answer: &Answer) -> Classification {
    assert_eq!(answer.status, 200, "{}", String::from_utf8_lossy(&answer.body));
    serde_json::from_slice(&answer.body).expect("the body is a Classification")
}

/// Equal up to float rounding from batching: same discrete outcome, scores within 1e-4.
fn assert_same(a: &Classification, b: &Classification) {
    let scores = |c: &Classification| c.categories.iter().map(|s| (s.id.clone(), s.score)).collect::<BTreeMap<_, _>>();
    let (sa, sb) = (scores(a), scores(b));
    assert_eq!(sa.keys().collect::<Vec<_>>(), sb.keys().collect::<Vec<_>>());
    for (id, score) in &sa {
        assert!((score - sb[id]).abs() < 1e-4, "category {id}: {score} vs {}", sb[id]);
    }
    assert_eq!(a.detected_categories().len(), b.detected_categories().len());
    assert_eq!(a.urgency.level, b.urgency.level);
    assert_eq!(a.intent.id, b.intent.id);
    assert_eq!(a.speaker.id, b.speaker.id);
    assert_eq!(a.handoff, b.handoff);
    assert_eq!(a.model, b.model);
}

// ---------------------------------------------------------------------------------------------
// Client errors: status, code, and a message that names the field

async fn expect_error(answer: Answer, status: u16, code: &str, mentions: &str) {
    assert_eq!(answer.status.as_u16(), status, "{}", String::from_utf8_lossy(&answer.body));
    assert_eq!(answer.error_code(), code);
    let message = answer.error_message();
    assert!(message.contains(mentions), "the message should mention {mentions:?}: {message}");
    assert!(answer.header("x-request-id").is_some());
}

#[tokio::test]
async fn malformed_bodies_get_400() {
    let app = app();
    expect_error(post_raw(&app, "/v1/classify", "{\"text\": \"j'ai peur\"").await, 400, "invalid_json", "line 1").await;
    expect_error(
        post_raw(&app, "/v1/classify", b"{\"text\": \"\xc3\x28\"}".to_vec()).await,
        400,
        "invalid_utf8",
        "UTF-8",
    )
    .await;
    let repeated = r#"{"text": "salut", "text": "il a des photos de moi"}"#;
    expect_error(post_raw(&app, "/v1/classify", repeated).await, 400, "duplicate_key", "line 1").await;
    expect_error(post_raw(&app, "/v1/classify", repeated).await, 400, "duplicate_key", "field `text` appears twice").await;
    let repeated_in_batch = r#"{"inputs": [{"text": "salut", "context": [], "context": ["re"]}]}"#;
    expect_error(post_raw(&app, "/v1/classify/batch", repeated_in_batch).await, 400, "duplicate_key", "once").await;
    // A nested or unknown key is never named: it may be message text.
    let answer = post_raw(&app, "/v1/classify", r#"{"text": "salut", "kwyjibo marker": 1, "kwyjibo marker": 2}"#).await;
    assert!(!answer.error_message().contains("kwyjibo"), "{}", answer.error_message());
    assert!(!String::from_utf8_lossy(&answer.body).contains("kwyjibo"));
    let bad_id = Request::post("/v1/classify")
        .header("x-request-id", "two words")
        .body(Body::from(r#"{"text": "bonjour"}"#))
        .unwrap();
    expect_error(send(&app, bad_id).await, 400, "invalid_request_id", "x-request-id").await;
    // The same id in the body gets the same status and code.
    let bad_body_id = json!({"text": "bonjour", "request_id": "two words"});
    expect_error(post_json(&app, "/v1/classify", &bad_body_id).await, 400, "invalid_request_id", "`request_id`").await;
    let bad_batch_id = json!({"inputs": [{"text": "bonjour"}], "request_id": 42});
    expect_error(post_json(&app, "/v1/classify/batch", &bad_batch_id).await, 400, "invalid_request_id", "`request_id`")
        .await;
}

#[tokio::test]
async fn invalid_json_error_omits_body() {
    let app = app();
    let body = "{\"text\": \"mon beau-père me frappe\" \"context\": []}";
    let answer = post_raw(&app, "/v1/classify", body).await;
    assert_eq!(answer.status, 400);
    assert!(!String::from_utf8_lossy(&answer.body).contains("beau-père"));
}

#[tokio::test]
async fn wrong_fields_return_422() {
    let app = app();
    expect_error(post_json(&app, "/v1/classify", &json!({})).await, 422, "invalid_field", "`text`").await;
    expect_error(post_json(&app, "/v1/classify", &json!({"text": 42})).await, 422, "invalid_field", "`text`").await;
    expect_error(
        post_json(&app, "/v1/classify", &json!({"text": "a", "langue": "fr"})).await,
        422,
        "invalid_field",
        "`langue`",
    )
    .await;
    expect_error(
        post_json(&app, "/v1/classify", &json!({"text": "a", "context": "b"})).await,
        422,
        "invalid_field",
        "`context`",
    )
    .await;
    expect_error(post_json(&app, "/v1/classify", &json!(["a"])).await, 422, "invalid_field", "JSON object").await;
    let batch = json!({"inputs": [{"text": "a"}, {"texte": "b"}]});
    expect_error(post_json(&app, "/v1/classify/batch", &batch).await, 422, "invalid_field", "`inputs[1].texte`").await;
    expect_error(post_json(&app, "/v1/classify/batch", &json!({"inputs": []})).await, 422, "invalid_field", "`inputs`")
        .await;
}

#[tokio::test]
async fn blank_text_returns_422() {
    let app = app();
    for text in ["", "   ", "\n\t", "\u{200B}\u{FEFF} \u{00AD}"] {
        expect_error(post_json(&app, "/v1/classify", &json!({ "text": text })).await, 422, "empty_text", "`text`")
            .await;
    }
    let batch = json!({"inputs": [{"text": "bonjour"}, {"text": " "}]});
    expect_error(post_json(&app, "/v1/classify/batch", &batch).await, 422, "empty_text", "`inputs[1].text`").await;
}

#[tokio::test]
async fn limits_return_413() {
    let limits = Limits { max_body_bytes: 2048, max_chars: Some(100), max_context_messages: 2, max_batch_inputs: 3 };
    let app = real_app(Config { limits, ..test_config() }).0;
    let big = "a".repeat(3000);
    expect_error(post_json(&app, "/v1/classify", &json!({ "text": big })).await, 413, "body_too_large", "2048 bytes")
        .await;
    let long = "mot ".repeat(30);
    expect_error(post_json(&app, "/v1/classify", &json!({ "text": long })).await, 413, "text_too_long", "`text`").await;
    let context = json!({"text": "a", "context": ["b", "c", "d"]});
    expect_error(post_json(&app, "/v1/classify", &context).await, 413, "context_too_long", "`context`").await;
    let inputs: Vec<_> = (0..4).map(|_| json!({"text": "bonjour"})).collect();
    expect_error(
        post_json(&app, "/v1/classify/batch", &json!({ "inputs": inputs })).await,
        413,
        "batch_too_large",
        "`inputs`",
    )
    .await;
}

#[tokio::test]
async fn character_limit_comes_before_token_limit() {
    let app = app();
    let max_chars = Limits::default().max_chars.unwrap();
    // inputs[0] is under the character limit but above the token limit. inputs[1] and inputs[3]
    // are above the character limit.
    let batch = json!({"inputs": [
        {"text": "é".repeat(3000)},
        {"text": "a".repeat(max_chars + 1)},
        {"text": "il me menace"},
        {"text": "b".repeat(max_chars + 2)},
    ]});
    let answer = post_json(&app, "/v1/classify/batch", &batch).await;
    let message = answer.error_message();
    let first = format!("field `inputs[1].text` has {} characters", max_chars + 1);
    expect_error(answer, 413, "text_too_long", &first).await;
    let second = format!("and so does `inputs[3].text` ({} characters)", max_chars + 2);
    assert!(message.contains(&second), "{message}");
    assert!(!message.contains("inputs[0]"), "{message}");
    assert!(!message.contains("token"), "{message}");

    // Once the texts over the character limit are fixed, the retry names the one over the
    // token limit.
    let batch = json!({"inputs": [{"text": "é".repeat(3000)}, {"text": "il me menace"}]});
    let answer = post_json(&app, "/v1/classify/batch", &batch).await;
    expect_error(answer, 413, "too_many_tokens", "field `inputs[0].text` has").await;
}

#[tokio::test]
async fn long_text_windowed_when_configured() {
    let limits = Limits { max_chars: None, ..Limits::default() };
    let batching = BatchConfig { max_text_tokens: None, ..BatchConfig::default() };
    let app = real_app(Config { limits, batching, ..test_config() }).0;
    let text = MESSAGES[..5].join(" ").repeat(12);
    assert!(text.chars().count() > Limits::default().max_chars.unwrap());
    let result = classification(&classify(&app, &text).await);
    assert!(result.windows > 1, "{} windows", result.windows);
}

#[tokio::test]
async fn token_limit_rejects_before_encoding() {
    let app = app();
    // Under the character limit, but one token per emoji: about 3,000 tokens, or 8 windows.
    let emoji = "😭".repeat(3000);
    assert!(emoji.chars().count() <= Limits::default().max_chars.unwrap());
    let answer = classify(&app, &emoji).await;
    expect_error(answer, 413, "too_many_tokens", "field `text` has").await;

    // In a batch, the message names the input whose text is too long.
    let batch = json!({"inputs": [{"text": "il me menace"}, {"text": "é".repeat(3000)}]});
    expect_error(post_json(&app, "/v1/classify/batch", &batch).await, 413, "too_many_tokens", "`inputs[1].text`").await;

    // Every text above the limit is named, the first one as the field at fault, so that the
    // client can fix them all before it retries.
    let batch = json!({"inputs": [
        {"text": "é".repeat(3000)},
        {"text": "il me menace"},
        {"text": "😭".repeat(3000)},
    ]});
    let answer = post_json(&app, "/v1/classify/batch", &batch).await;
    let message = answer.error_message();
    expect_error(answer, 413, "too_many_tokens", "field `inputs[0].text` has").await;
    assert!(message.contains("`inputs[2].text` ("), "{message}");
    assert!(!message.contains("inputs[1]"), "{message}");

    // French prose of 4,000 characters stays under the token limit.
    let prose = MESSAGES[..5].join(" ").repeat(4);
    let prose: String = prose.chars().take(Limits::default().max_chars.unwrap()).collect();
    assert_eq!(classify(&app, &prose).await.status, 200);

    // The limit counts the normalised text, which the encoder reads: soft hyphens and
    // word joiners, dropped by normalisation, do not count.
    let padded = format!("{}je me sens seule ce soir", "\u{00AD}\u{2060}".repeat(1900));
    assert_eq!(classify(&app, &padded).await.status, 200);
}

#[tokio::test]
async fn routing_and_media_type_errors() {
    let app = app();
    expect_error(get(&app, "/v2/classify").await, 404, "not_found", "/openapi.json").await;
    expect_error(get(&app, "/v1/classify").await, 405, "method_not_allowed", "method").await;
    let form = Request::post("/v1/classify")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from("text=bonjour"))
        .unwrap();
    expect_error(send(&app, form).await, 415, "unsupported_media_type", "application/json").await;
    // No Content-Type at all is accepted.
    let bare = Request::post("/v1/classify").body(Body::from(r#"{"text": "bonjour"}"#)).unwrap();
    assert_eq!(send(&app, bare).await.status, 200);
}

#[tokio::test]
async fn content_encoding_other_than_identity_415() {
    let app = app();
    let encoded = |encoding: &str, body: Vec<u8>| {
        Request::post("/v1/classify")
            .header("content-type", "application/json")
            .header("content-encoding", encoding)
            .body(Body::from(body))
            .unwrap()
    };
    let plain = br#"{"text": "bonjour"}"#.to_vec();
    // The start of a gzip stream: magic bytes, deflate method, no flags.
    let gzip_start = vec![0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03];

    for (encoding, body) in [("gzip", gzip_start), ("gzip", plain.clone()), ("br", plain.clone()), ("identity, gzip", plain.clone())] {
        let answer = send(&app, encoded(encoding, body)).await;
        assert_eq!(answer.header("accept-encoding"), Some("identity"), "{encoding}");
        expect_error(answer, 415, "unsupported_content_encoding", "Content-Encoding").await;
    }
    let batch = Request::post("/v1/classify/batch")
        .header("content-encoding", "deflate")
        .body(Body::from(r#"{"inputs": [{"text": "bonjour"}]}"#))
        .unwrap();
    expect_error(send(&app, batch).await, 415, "unsupported_content_encoding", "uncompressed").await;

    assert_eq!(send(&app, encoded("identity", plain.clone())).await.status, 200);
    assert_eq!(send(&app, encoded("IDENTITY", plain)).await.status, 200);
}

// ---------------------------------------------------------------------------------------------
// Classification

#[tokio::test]
async fn message_cut_inside_emoji_is_classified() {
    // A JavaScript client that cuts a string inside 😭 sends a lone surrogate escape.
    let app = app();
    let cut = classification(&post_raw(&app, "/v1/classify", r#"{"text": "Je n'en peux plus, j'ai envie de mourir. \ud83d"}"#).await);
    let replaced = classification(&post_json(&app, "/v1/classify", &json!({"text": "Je n'en peux plus, j'ai envie de mourir. \u{FFFD}"})).await);
    assert_same(&cut, &replaced);
    assert_eq!(cut.urgency.level, "critical");
}

#[tokio::test]
async fn batch_equals_single_requests() {
    let app = app();
    let inputs: Vec<_> = MESSAGES
        .iter()
        .enumerate()
        .map(|(i, text)| if i == 1 { json!({"text": text, "context": [MESSAGES[5]]}) } else { json!({"text": text}) })
        .collect();
    let answer = post_json(&app, "/v1/classify/batch", &json!({ "inputs": inputs })).await;
    assert_eq!(answer.status, 200);
    let results: Vec<Classification> = serde_json::from_value(answer.json()["results"].clone()).unwrap();
    assert_eq!(results.len(), inputs.len());
    for (input, batched) in inputs.iter().zip(&results) {
        let single = classification(&post_json(&app, "/v1/classify", input).await);
        assert_same(batched, &single);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_64_requests_succeed() {
    let app = app();
    let singles: Vec<Classification> = {
        let mut singles = Vec::new();
        for text in MESSAGES {
            singles.push(classification(&classify(&app, text).await));
        }
        singles
    };
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let app = app.clone();
            tokio::spawn(async move { (i % MESSAGES.len(), classify(&app, MESSAGES[i % MESSAGES.len()]).await) })
        })
        .collect();
    for task in tasks {
        let (which, answer) = task.await.unwrap();
        assert_same(&classification(&answer), &singles[which]);
    }
}

#[tokio::test]
async fn labels_list_french_scheme() {
    let answer = get(&app(), "/v1/labels").await;
    assert_eq!(answer.status, 200);
    let body = answer.json();
    assert_eq!(body, serde_json::to_value(taxonomy::scheme()).unwrap());
    assert_eq!(body["categories"][0]["label"], "Cyberharcèlement");
}

#[tokio::test]
async fn health_and_ready_when_loaded() {
    let app = app();
    assert_eq!(get(&app, "/health").await.json(), json!({"status": "ok"}));
    let ready = get(&app, "/ready").await;
    assert_eq!(ready.status, 200);
    assert_eq!(ready.json()["status"], "ready");
    assert_eq!(ready.json()["model"], serde_json::to_value(real_classifier().model_info()).unwrap());
}

// ---------------------------------------------------------------------------------------------
// Access control

#[tokio::test]
async fn api_key_enforced_when_set() {
    let app = real_app(Config { api_key: Some("cle-de-test-7".into()), ..test_config() }).0;
    let with = |path: &str, auth: Option<&str>| {
        let mut request = Request::builder().uri(path);
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        request
    };
    let classify_with = |auth: Option<&str>| {
        with("/v1/classify", auth).method("POST").body(Body::from(r#"{"text": "bonjour"}"#)).unwrap()
    };

    let missing = send(&app, classify_with(None)).await;
    assert_eq!(missing.header("www-authenticate"), Some("Bearer"));
    expect_error(missing, 401, "unauthorized", "Authorization: Bearer").await;
    expect_error(send(&app, classify_with(Some("Bearer cle-de-test-8"))).await, 401, "unauthorized", "Bearer").await;
    assert_eq!(send(&app, classify_with(Some("Bearer cle-de-test-7"))).await.status, 200);

    for path in PROTECTED_ROUTES.iter().filter(|p| p.starts_with("/v1/labels") || **p == "/metrics") {
        assert_eq!(send(&app, with(path, None).body(Body::empty()).unwrap()).await.status, 401, "{path}");
        assert_eq!(send(&app, with(path, Some("Bearer cle-de-test-7")).body(Body::empty()).unwrap()).await.status, 200);
    }
    for path in OPEN_ROUTES {
        assert_eq!(send(&app, with(path, None).body(Body::empty()).unwrap()).await.status, 200, "{path}");
    }
}

#[tokio::test]
async fn cors_allows_listed_origins_only() {
    let config = Config {
        cors_allow_origins: vec!["https://chat.example.org".parse().unwrap()],
        api_key: Some("cle".into()),
        ..test_config()
    };
    let cors_app = real_app(config).0;
    let preflight = |origin: &str| {
        Request::options("/v1/classify")
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "authorization, content-type")
            .body(Body::empty())
            .unwrap()
    };
    let allowed = send(&cors_app, preflight("https://chat.example.org")).await;
    assert_eq!(allowed.status, 200, "a preflight needs no API key");
    assert_eq!(allowed.header("access-control-allow-origin"), Some("https://chat.example.org"));
    let refused = send(&cors_app, preflight("https://evil.example.com")).await;
    assert_eq!(refused.header("access-control-allow-origin"), None);

    let answer = send(&app(), preflight("https://chat.example.org")).await;
    assert_eq!(answer.header("access-control-allow-origin"), None, "no CORS headers by default");
}

// ---------------------------------------------------------------------------------------------
// Request ids, metrics, API description

#[tokio::test]
async fn request_id_accepted_or_generated() {
    let app = app();
    let from_header = Request::post("/v1/classify")
        .header("x-request-id", "chat-1234:msg-5")
        .body(Body::from(r#"{"text": "bonjour", "request_id": "from-body"}"#))
        .unwrap();
    assert_eq!(send(&app, from_header).await.header("x-request-id"), Some("chat-1234:msg-5"));
    let from_body = post_json(&app, "/v1/classify", &json!({"text": "bonjour", "request_id": "from-body"})).await;
    assert_eq!(from_body.header("x-request-id"), Some("from-body"));
    let generated = classify(&app, "bonjour").await;
    let id = generated.header("x-request-id").unwrap();
    assert_eq!(id.len(), 36, "a UUID: {id}");
    assert_ne!(classify(&app, "bonjour").await.header("x-request-id"), Some(id));
}

#[tokio::test]
async fn metrics_cover_requests_and_batches() {
    let (app, state) = real_app(test_config());
    state.metrics().model_loaded(Duration::from_millis(1500));
    let secret = "Zorglub métrique confidentiel";
    assert_eq!(classify(&app, secret).await.status, 200);
    assert_eq!(post_json(&app, "/v1/classify", &json!({})).await.status, 422);
    let answer = get(&app, "/metrics").await;
    assert_eq!(answer.status, 200);
    assert!(answer.header("content-type").unwrap().starts_with("application/openmetrics-text"));
    let text = String::from_utf8(answer.body.to_vec()).unwrap();
    for expected in [
        r#"cybertriage_http_requests_total{route="/v1/classify",method="POST",status="200"} 1"#,
        r#"cybertriage_http_requests_total{route="/v1/classify",method="POST",status="422"} 1"#,
        r#"cybertriage_http_request_duration_seconds_count{route="/v1/classify"} 2"#,
        "cybertriage_queue_depth 0",
        "cybertriage_batch_inputs_count 1",
        "cybertriage_batch_tokens_count 1",
        "cybertriage_model_load_seconds 1.5",
        "cybertriage_ready 1",
        "cybertriage_worker_restarts_total 0",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
    assert!(!text.contains("Zorglub"));
}

#[tokio::test]
async fn openapi_describes_every_route() {
    let document = openapi::document();
    for path in PROTECTED_ROUTES.iter().chain(OPEN_ROUTES) {
        assert!(document["paths"].get(path).is_some(), "{path} is not described");
    }
    assert_eq!(document["paths"].as_object().unwrap().len(), PROTECTED_ROUTES.len() + OPEN_ROUTES.len());
    let served = get(&app(), "/openapi.json").await;
    assert_eq!(served.json(), document);
}

#[tokio::test]
async fn responses_match_openapi_schemas() {
    let app = app();
    let document = openapi::document();
    let check = |name: &str, value: &Value| {
        conforms(&document, &json!({"$ref": format!("#/components/schemas/{name}")}), value, name)
    };
    check("Classification", &classify(&app, MESSAGES[4]).await.json());
    let batch = json!({"inputs": [{"text": MESSAGES[0]}, {"text": MESSAGES[1], "context": [MESSAGES[5]]}]});
    check("BatchResponse", &post_json(&app, "/v1/classify/batch", &batch).await.json());
    check("Labels", &get(&app, "/v1/labels").await.json());
    check("Health", &get(&app, "/health").await.json());
    check("Ready", &get(&app, "/ready").await.json());
    check("Error", &post_json(&app, "/v1/classify", &json!({})).await.json());
    check("ClassifyRequest", &json!({"text": "a", "context": ["b"], "request_id": "x-1"}));
}

/// Checks `value` against `schema` with a small subset of JSON Schema covering what the document uses: `$ref`, `type`, `required`,
/// `properties`, `additionalProperties`, `items` and `enum`.
fn conforms(document: &Value, schema: &Value, value: &Value, at: &str) {
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference.rsplit('/').next().unwrap();
        return conforms(document, &document["components"]["schemas"][name], value, at);
    }
    if let Some(types) = schema.get("type") {
        let types: Vec<&str> = match types {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().map(|t| t.as_str().unwrap()).collect(),
            _ => panic!("bad type in schema at {at}"),
        };
        let actual = match value {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        };
        let ok = types.contains(&actual) || (actual == "integer" && types.contains(&"number"));
        assert!(ok, "{at}: {actual} is not {types:?}");
    }
    if let Some(allowed) = schema["enum"].as_array() {
        assert!(allowed.contains(value), "{at}: {value} is not one of {allowed:?}");
    }
    if let Value::Object(object) = value {
        for required in schema["required"].as_array().into_iter().flatten() {
            assert!(object.contains_key(required.as_str().unwrap()), "{at}: missing {required}");
        }
        let properties = schema["properties"].as_object();
        for (key, item) in object {
            match properties.and_then(|p| p.get(key)) {
                Some(property) => conforms(document, property, item, &format!("{at}.{key}")),
                None => match &schema["additionalProperties"] {
                    Value::Bool(false) => panic!("{at}: field {key} is not described"),
                    Value::Object(_) => {
                        conforms(document, &schema["additionalProperties"], item, &format!("{at}.{key}"))
                    }
                    _ => {}
                },
            }
        }
    }
    if let (Value::Array(items), Some(item_schema)) = (value, schema.get("items")) {
        for (i, item) in items.iter().enumerate() {
            conforms(document, item_schema, item, &format!("{at}[{i}]"));
        }
    }
}

#[tokio::test]
async fn docs_page_renders_offline() {
    let answer = get(&app(), "/docs").await;
    assert_eq!(answer.status, 200);
    assert!(answer.header("content-type").unwrap().starts_with("text/html"));
    assert!(answer.header("content-security-policy").unwrap().contains("default-src 'none'"));
    let page = String::from_utf8(answer.body.to_vec()).unwrap();
    assert!(page.contains("openapi.json"));
    assert!(!page.contains("http://"), "the page links to no other host");
    assert!(!page.contains("https://"), "the page links to no other host");
}

// ---------------------------------------------------------------------------------------------
// Privacy

#[tokio::test]
async fn logs_contain_no_message_text() {
    let logs = logs();
    let app = app();
    let texts = [
        "Zorglub alpha : mon voisin me harcèle sur WhatsApp",
        "Zorglub bravo, il a des photos de moi",
        "Zorglub charlie contexte plus ancien",
    ];
    let mut ids = Vec::new();
    let mut record = |answer: Answer, status: u16| {
        assert_eq!(answer.status.as_u16(), status, "{}", String::from_utf8_lossy(&answer.body));
        ids.push(answer.header("x-request-id").unwrap().to_string());
    };
    record(classify(&app, texts[0]).await, 200);
    record(post_json(&app, "/v1/classify", &json!({"text": texts[1], "context": [texts[2]]})).await, 200);
    let batch = json!({"inputs": [{"text": texts[0]}, {"text": texts[1]}]});
    record(post_json(&app, "/v1/classify/batch", &batch).await, 200);
    record(post_raw(&app, "/v1/classify", format!("{{\"text\": \"{}\"", texts[0])).await, 400);
    record(post_json(&app, "/v1/classify", &json!({"text": texts[1], "unknown": texts[2]})).await, 422);
    record(post_json(&app, "/v1/classify", &json!({"text": [texts[0]]})).await, 422);
    record(post_json(&app, "/v1/classify", &json!({"context": texts[2]})).await, 422);
    record(post_raw(&app, &format!("/v1/{}", "Zorglub-chemin"), "{}").await, 404);

    let log = logs.text();
    for id in &ids {
        assert!(log.contains(id.as_str()), "no access-log line for request {id}");
    }
    assert!(!log.contains("Zorglub"), "a message text reached the log:\n{log}");
}

// ---------------------------------------------------------------------------------------------
// The binary

#[test]
fn serve_exits_0_on_sigterm() {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpStream;
    use std::process::{Command, Stdio};

    let mut child = Command::new(env!("CARGO_BIN_EXE_cybertriage"))
        .args(["serve", "--addr", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut log = String::new();
    let addr = loop {
        let mut line = String::new();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "serve exited before listening:\n{log}");
        let line = strip_ansi(&line);
        log.push_str(&line);
        if let Some(rest) = line.split("addr=").nth(1) {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    let request = |method: &str, path: &str, body: &str| {
        let mut stream = TcpStream::connect(&addr).unwrap();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
    };
    while !request("GET", "/ready", "").starts_with("HTTP/1.1 200") {
        std::thread::sleep(Duration::from_millis(50));
    }
    let secret = "Zorglub binaire : on me fait du chantage";
    let response = request("POST", "/v1/classify", &json!({ "text": secret }).to_string());
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");

    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).unwrap();
    log.push_str(&strip_ansi(&rest));
    assert_eq!(exit.code(), Some(0), "{log}");
    assert!(log.contains("shutdown requested"), "{log}");
    assert!(!log.contains("Zorglub"), "{log}");
    let base_line = log.lines().find(|line| line.contains("base encoder found on disk")).unwrap_or_else(|| panic!("{log}"));
    assert!(base_line.contains("dir="), "{base_line}");
    assert!(base_line.contains("checksum="), "{base_line}");
}

/// Removes terminal colour sequences (`ESC [ ... m`) from a log line.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(|&c| c == 'm');
        } else {
            out.push(c);
        }
    }
    out
}
