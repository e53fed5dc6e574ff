//! Queue mechanics that the real model cannot produce on demand, on a classifier double:
//! overload, timeout, panics, worker restart, batching of queued requests, readiness before
//! the model loads, and graceful shutdown.

mod http_support;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use axum::Router;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use cybertriage::http::{self, AppState, Config};
use cybertriage::infer::BatchConfig;
use cybertriage::triage::classifier::MessageInput;

use http_support::*;

fn config(queue_size: usize) -> Config {
    Config { batching: BatchConfig { queue_size, ..BatchConfig::default() }, ..Config::default() }
}

/// Polls `/ready` until it returns `status`; a broken restart makes the test hang, not pass.
async fn wait_for_ready_status(app: &Router, status: u16) {
    while get(app, "/ready").await.status.as_u16() != status {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn wait_for_queue_depth(state: &AppState, depth: usize) {
    while state.engine().queue_depth() != depth {
        tokio::task::yield_now().await;
    }
}

/// Polls a future once. A request submitted to the engine is in its queue when this returns
/// `Pending`, so tests need no sleep to order requests.
async fn poll_once<F: Future + Unpin>(future: &mut F) -> Poll<F::Output> {
    std::future::poll_fn(|context| Poll::Ready(Pin::new(&mut *future).poll(context))).await
}

/// Runs a blocking wait on the double without stalling the runtime.
async fn held(fake: &Arc<Fake>, count: usize) {
    let fake = fake.clone();
    tokio::task::spawn_blocking(move || fake.wait_for_held(count)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_returns_503_then_recovers() {
    let fake = Fake::new();
    let (app, state) = app_with(config(1), fake.clone());
    fake.hold();

    let running = tokio::spawn({
        let app = app.clone();
        async move { classify(&app, "première demande").await }
    });
    held(&fake, 1).await;
    let queued = tokio::spawn({
        let app = app.clone();
        async move { classify(&app, "deuxième demande").await }
    });
    wait_for_queue_depth(&state, 1).await;
    let metrics = String::from_utf8(get(&app, "/metrics").await.body.to_vec()).unwrap();
    assert!(metrics.contains("cybertriage_queue_depth 1\n"), "one request waits: {metrics}");

    // The worker is busy and the queue of one is full.
    let refused = classify(&app, "troisième demande").await;
    assert_eq!(refused.status, 503);
    assert_eq!(refused.error_code(), "overloaded");
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert!(refused.error_message().contains("human listener"));

    // A request that the rules raise to critical still gets a place, up to twice the queue size.
    let urgent = tokio::spawn({
        let app = app.clone();
        async move { classify(&app, CRITICAL_TEXT).await }
    });
    while state.engine().queue_depth() != 2 {
        assert!(!urgent.is_finished(), "the urgent request was answered while the worker is held");
        tokio::task::yield_now().await;
    }
    let rejected_urgent = classify(&app, CRITICAL_TEXT).await;
    assert_eq!(rejected_urgent.status, 503, "the reserve for urgent requests is full too");
    assert_eq!(rejected_urgent.error_code(), "overloaded");

    fake.release();
    assert_eq!(running.await.unwrap().status, 200);
    assert_eq!(queued.await.unwrap().status, 200);
    assert_eq!(urgent.await.unwrap().status, 200);
    let after = classify(&app, "quatrième demande").await;
    assert_eq!(after.status, 200, "the service recovers once the queue drains");

    let metrics = String::from_utf8(get(&app, "/metrics").await.body.to_vec()).unwrap();
    assert!(
        metrics.contains(r#"cybertriage_http_requests_total{route="/v1/classify",method="POST",status="503"} 2"#),
        "{metrics}"
    );
    assert!(metrics.contains("cybertriage_queue_depth 0\n"), "the queue drained: {metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_returns_504() {
    let fake = Fake::new();
    let (app, _state) = app_with(Config { timeout: Duration::from_millis(50), ..config(4) }, fake.clone());
    fake.hold();
    let answer = classify(&app, "une demande lente").await;
    fake.release();
    assert_eq!(answer.status, 504);
    assert_eq!(answer.error_code(), "timeout");
    // The worker skipped or finished the abandoned request; the next one is served.
    assert_eq!(classify(&app, "une autre demande").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_panic_returns_500_and_restarts() {
    let logs = logs();
    let fake = Fake::new();
    let (app, _state) = app_with(config(4), fake.clone());
    assert_eq!(get(&app, "/ready").await.status, 200);

    fake.hold_rewarm();
    let answer = classify(&app, PANIC_TEXT).await;
    assert_eq!(answer.status, 500);
    assert_eq!(answer.error_code(), "internal");
    assert!(!answer.error_message().contains("panic"), "the client gets a generic message");

    // The replacement worker is blocked in its warm-up: the service is not ready.
    held(&fake, 1).await;
    let not_ready = get(&app, "/ready").await;
    assert_eq!(not_ready.status, 503);
    assert_eq!(not_ready.error_code(), "not_ready");

    fake.release();
    wait_for_ready_status(&app, 200).await;
    assert_eq!(classify(&app, "après le redémarrage").await.status, 200);

    let metrics = String::from_utf8(get(&app, "/metrics").await.body.to_vec()).unwrap();
    assert!(metrics.contains("cybertriage_worker_restarts_total 1"), "{metrics}");
    assert!(logs.text().contains("model worker died; restarting it"));
}

#[tokio::test]
async fn handler_panic_returns_500() {
    let state = AppState::new(config(4));
    state.start(Fake::new()).unwrap();
    let routes = Router::new().route(
        "/boom",
        axum::routing::get(|| async {
            if true {
                panic!("handler failure");
            }
            "unreachable"
        }),
    );
    let app = http::with_middleware(routes, state);

    let answer = get(&app, "/boom").await;
    assert_eq!(answer.status, 500);
    assert_eq!(answer.error_code(), "internal");
    assert!(answer.header("x-request-id").is_some());
    assert_eq!(get(&app, "/boom").await.status, 500);
}

#[tokio::test]
async fn internal_error_detail_only_in_log() {
    let logs = logs();
    let (app, _state) = app_with(config(4), Fake::new());
    let answer = classify(&app, INTERNAL_TEXT).await;
    assert_eq!(answer.status, 500);
    assert_eq!(answer.error_code(), "internal");
    assert!(!answer.error_message().contains(INTERNAL_DETAIL));
    let id = answer.header("x-request-id").unwrap().to_string();
    let log = logs.text();
    let line = log.lines().find(|line| line.contains(&id)).expect("an access-log line for the request");
    assert!(line.contains(INTERNAL_DETAIL), "{line}");
    assert!(line.contains("status=500"), "{line}");
}

#[tokio::test]
async fn failed_token_count_is_500() {
    let logs = logs();
    let fake = Fake::new();
    let (app, _state) = app_with(config(4), fake.clone());
    // The default configuration has a token limit, which a failed count must not trip.
    assert!(BatchConfig::default().max_text_tokens.is_some());
    let batch = json!({"inputs": [{"text": "bonjour"}, {"text": UNCOUNTABLE_TEXT}]});
    for answer in [classify(&app, UNCOUNTABLE_TEXT).await, post_json(&app, "/v1/classify/batch", &batch).await] {
        assert_eq!(answer.status, 500, "{}", String::from_utf8_lossy(&answer.body));
        assert_eq!(answer.error_code(), "internal");
        assert!(!answer.error_message().contains(&usize::MAX.to_string()), "{}", answer.error_message());
        let id = answer.header("x-request-id").unwrap().to_string();
        let log = logs.text();
        let line = log.lines().find(|line| line.contains(&id)).expect("an access-log line for the request");
        assert!(line.contains(INTERNAL_DETAIL), "{line}");
    }
    assert!(fake.calls().is_empty(), "no classify call ran: {:?}", fake.calls());
}

#[tokio::test]
async fn unloaded_model_is_not_ready() {
    let state = AppState::new(config(4));
    let app = http::router(state);
    assert_eq!(get(&app, "/health").await.status, 200);
    let ready = get(&app, "/ready").await;
    assert_eq!((ready.status.as_u16(), ready.error_code().as_str()), (503, "not_ready"));
    assert_eq!(ready.header("retry-after"), Some("5"));
    let answer = classify(&app, "trop tôt").await;
    assert_eq!((answer.status.as_u16(), answer.error_code().as_str()), (503, "not_ready"));
    // Validation still runs first: a client mistake is reported as such.
    assert_eq!(classify(&app, "   ").await.status, 422);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_requests_share_one_call() {
    let fake = Fake::new();
    let (app, state) = app_with(config(8), fake.clone());
    fake.hold();
    let first = tokio::spawn({
        let app = app.clone();
        async move { classify(&app, "la première").await }
    });
    held(&fake, 1).await;
    let queued: Vec<_> = ["a", "b", "c"]
        .into_iter()
        .map(|text| {
            let app = app.clone();
            tokio::spawn(async move { classify(&app, text).await })
        })
        .collect();
    wait_for_queue_depth(&state, 3).await;
    fake.release();

    assert_eq!(first.await.unwrap().status, 200);
    for answer in queued {
        assert_eq!(answer.await.unwrap().status, 200);
    }
    assert_eq!(fake.calls(), [1, 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn critical_request_runs_before_older_ones() {
    let fake = Fake::new();
    // Each text below costs its words + 2, at least 5 tokens, so each request gets a classifier
    // call of its own.
    let batching = BatchConfig { max_batch_tokens: 5, ..BatchConfig::default() };
    let (app, state) = app_with(Config { batching, ..config(8) }, fake.clone());
    let engine = state.engine();
    let timeout = Duration::from_secs(600);
    let submit = |text: &str| Box::pin(engine.submit(vec![MessageInput::new(text)], timeout));
    fake.hold();

    let mut running = submit("la toute première");
    assert!(poll_once(&mut running).await.is_pending());
    held(&fake, 1).await;
    let mut queued = Vec::new();
    for text in ["demande normale un", "demande normale deux", CRITICAL_TEXT] {
        let mut answer = submit(text);
        assert!(poll_once(&mut answer).await.is_pending(), "{text} waits behind the held request");
        queued.push(answer);
    }
    assert_eq!(engine.queue_depth(), 3);
    fake.release();

    assert!(running.await.is_ok());
    let mut results = Vec::new();
    for answer in queued {
        results.push(answer.await.expect("every queued request gets its result"));
    }
    assert_eq!(fake.texts(), ["la toute première", CRITICAL_TEXT, "demande normale un", "demande normale deux"]);
    assert_eq!(fake.calls(), [1, 1, 1, 1]);
    // Priority changes the order of work only: the result is the classifier's own.
    assert_eq!(results[2].results, [fake_classification(&MessageInput::new(CRITICAL_TEXT))]);
    let metrics = String::from_utf8(get(&app, "/metrics").await.body.to_vec()).unwrap();
    assert!(metrics.contains("cybertriage_prioritized_requests_total 1\n"), "{metrics}");
}

#[tokio::test]
async fn lone_request_skips_batch_wait() {
    // With an hour-long window, a lone request that waited would time out instead.
    let config = Config {
        batching: BatchConfig { max_wait: Duration::from_secs(3600), ..BatchConfig::default() },
        timeout: Duration::from_secs(600),
        ..Config::default()
    };
    let (app, _state) = app_with(config, Fake::new());
    assert_eq!(classify(&app, "seul").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_input_fails_only_its_request() {
    let fake = Fake::new();
    let (app, state) = app_with(config(8), fake.clone());
    fake.hold();
    let first = tokio::spawn({
        let app = app.clone();
        async move { classify(&app, "la première").await }
    });
    held(&fake, 1).await;
    let good = tokio::spawn({
        let app = app.clone();
        async move { classify(&app, "une bonne demande").await }
    });
    let bad = tokio::spawn({
        let app = app.clone();
        async move { classify(&app, INVALID_TEXT).await }
    });
    wait_for_queue_depth(&state, 2).await;
    fake.release();

    assert_eq!(first.await.unwrap().status, 200);
    assert_eq!(good.await.unwrap().status, 200);
    let bad = bad.await.unwrap();
    assert_eq!((bad.status.as_u16(), bad.error_code().as_str()), (422, "invalid_input"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_above_token_budget_splits() {
    let fake = Fake::new();
    let config =
        Config { batching: BatchConfig { max_batch_tokens: 10, ..BatchConfig::default() }, ..Config::default() };
    let (app, _state) = app_with(config, fake.clone());
    // Each input costs 3 words + 2 = 5 tokens: two per call.
    let inputs: Vec<_> = (0..5).map(|i| json!({ "text": format!("message numéro {i}") })).collect();
    let answer = post_json(&app, "/v1/classify/batch", &json!({ "inputs": inputs })).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json()["results"].as_array().unwrap().len(), 5);
    assert_eq!(fake.calls(), [2, 2, 1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timed_out_batch_stops_early() {
    let fake = Fake::new();
    let batching = BatchConfig { max_batch_tokens: 10, ..BatchConfig::default() };
    let (app, _state) = app_with(Config { batching, timeout: Duration::from_millis(50), ..Config::default() }, fake.clone());
    fake.hold();
    // Each input costs 5 tokens, so the batch needs three calls of 2, 2 and 1 inputs.
    let inputs: Vec<_> = (0..5).map(|i| json!({ "text": format!("message numéro {i}") })).collect();
    let answer = post_json(&app, "/v1/classify/batch", &json!({ "inputs": inputs })).await;
    assert_eq!(answer.status, 504);
    fake.release();

    assert_eq!(classify(&app, "une autre demande").await.status, 200);
    assert_eq!(fake.calls(), [2, 1], "the two calls left of the abandoned batch must be skipped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn critical_request_runs_between_batch_passes() {
    // Bounds every wait, so that a wrong schedule fails the test instead of hanging it.
    const BOUND: Duration = Duration::from_secs(30);
    let fake = Fake::new();
    let batching = BatchConfig { max_batch_tokens: 10, ..BatchConfig::default() };
    let (app, state) = app_with(Config { batching, ..config(8) }, fake.clone());
    fake.hold();
    // Each input costs 5 tokens, so the batch needs three calls of 2, 2 and 1 inputs.
    let batch_texts: Vec<String> = (0..5).map(|i| format!("message numéro {i}")).collect();
    let batch = tokio::spawn({
        let app = app.clone();
        let inputs: Vec<_> = batch_texts.iter().map(|text| json!({ "text": text })).collect();
        async move { post_json(&app, "/v1/classify/batch", &json!({ "inputs": inputs })).await }
    });
    tokio::time::timeout(BOUND, held(&fake, 1)).await.expect("the first pass starts");
    // The critical text costs 6 tokens and the short one 5, so they run in two interleaved
    // batches, one after each of the first two passes.
    let critical = tokio::spawn({
        let app = app.clone();
        async move { classify(&app, CRITICAL_TEXT).await }
    });
    tokio::time::timeout(BOUND, wait_for_queue_depth(&state, 1)).await.expect("the critical request is queued");
    let short = tokio::spawn({
        let app = app.clone();
        async move { classify(&app, "une question courte").await }
    });
    tokio::time::timeout(BOUND, wait_for_queue_depth(&state, 2)).await.expect("the short request is queued");
    fake.release();

    let critical = tokio::time::timeout(BOUND, critical).await.expect("the critical request ends").unwrap();
    assert_eq!(critical.status, 200);
    let short = tokio::time::timeout(BOUND, short).await.expect("the short request ends").unwrap();
    assert_eq!(short.status, 200);
    let batch = tokio::time::timeout(BOUND, batch).await.expect("the batch request ends").unwrap();
    assert_eq!(batch.status, 200);
    // The service rounds scores to 3 decimals, so results are compared on category ids and
    // rounded scores, which differ between these five texts.
    let scores = |result: &serde_json::Value| -> Vec<(String, i64)> {
        let categories = result["categories"].as_array().unwrap();
        let score = |category: &serde_json::Value| (category["score"].as_f64().unwrap() * 1000.0).round() as i64;
        categories.iter().map(|category| (category["id"].as_str().unwrap().to_string(), score(category))).collect()
    };
    let expected: Vec<_> = batch_texts
        .iter()
        .map(|text| scores(&serde_json::to_value(fake_classification(&MessageInput::new(text.as_str()))).unwrap()))
        .collect();
    let results: Vec<_> = batch.json()["results"].as_array().unwrap().iter().map(scores).collect();
    assert_eq!(results.len(), 5);
    for (index, (result, expected)) in results.iter().zip(&expected).enumerate() {
        assert_eq!(result, expected, "result {index} is that of input {index}");
    }
    for pair in expected.windows(2) {
        assert_ne!(pair[0], pair[1], "neighbouring texts must have different results for the order check");
    }
    let expected_texts = [
        &batch_texts[0],
        &batch_texts[1],
        CRITICAL_TEXT,
        &batch_texts[2],
        &batch_texts[3],
        "une question courte",
        &batch_texts[4],
    ];
    let order = "the critical text runs after the first pass, the short one after the second";
    assert_eq!(fake.texts(), expected_texts, "{order}");
    assert_eq!(fake.calls(), [2, 1, 2, 1, 1], "one interleaved call after each of the first two passes");
    assert_eq!(state.engine().queue_depth(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_requests_in_flight() {
    let fake = Fake::new();
    let state = AppState::new(config(4));
    state.start(fake.clone()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(http::serve(listener, state.clone(), async move {
        let _ = stopped.await;
    }));

    fake.hold();
    let in_flight = tokio::spawn(async move {
        let body = r#"{"text": "une demande en cours"}"#;
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!(
            "POST /v1/classify HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    });
    held(&fake, 1).await;
    stop.send(()).unwrap();
    fake.release();

    let response = in_flight.await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    server.await.unwrap().expect("the server stops cleanly");
    let closing = state.clone();
    tokio::task::spawn_blocking(move || closing.engine().close()).await.unwrap();
    assert!(!state.engine().status().is_ready());
}

#[tokio::test]
async fn mechanics_logs_contain_no_text() {
    let logs = logs();
    let (app, _state) = app_with(config(4), Fake::new());
    let texts = ["Zorglub mécanique numéro un", "Zorglub mécanique numéro deux"];
    for text in texts {
        assert_eq!(classify(&app, text).await.status, 200);
    }
    assert_eq!(classify(&app, INTERNAL_TEXT).await.status, 500);
    assert_eq!(classify(&app, INVALID_TEXT).await.status, 422);
    let log = logs.text();
    for text in texts.iter().chain(&[INTERNAL_TEXT, INVALID_TEXT]) {
        assert!(!log.contains(text), "the log holds a message text: {text}");
    }
}
