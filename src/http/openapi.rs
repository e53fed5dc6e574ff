//! The OpenAPI 3.1 description served at `/openapi.json`, and the offline page at `/docs`
//! that renders it.
//!
//! The document is written by hand. The HTTP tests check it against the router (every route
//! is described) and against real responses (every field is described, none is missing).

use serde_json::{json, Value};

use super::error::{ApiError, NOT_READY_RETRY_AFTER_SECS, OVERLOADED_RETRY_AFTER_SECS};
use super::request_id;

/// Self-contained HTML page that fetches /openapi.json and lists the routes and schemas.
pub const DOCS_PAGE: &str = include_str!("docs.html");

fn schema(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn json_body(name: &str, description: &str) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": schema(name) } } })
}

fn error(description: &str) -> Value {
    json_body("Error", description)
}

fn with_retry_after(mut response: Value) -> Value {
    response["headers"] = json!({
        "Retry-After": {
            "description": format!(
                "Seconds to wait before retrying: {OVERLOADED_RETRY_AFTER_SECS} after `overloaded`, \
                 {NOT_READY_RETRY_AFTER_SECS} after `not_ready`."
            ),
            "schema": { "type": "integer" }
        }
    });
    response
}

/// Error responses that every classify route can return.
fn classify_errors() -> Value {
    json!({
        "400": error("`invalid_json`, `duplicate_key`, `invalid_utf8`, `unreadable_body` or `invalid_request_id` (the x-request-id header or the body's `request_id`)."),
        "401": error("`unauthorized`: the API key is set and the request lacks it."),
        "413": error("`body_too_large`, `text_too_long`, `too_many_tokens`, `context_too_long` or `batch_too_large`. The messages of `text_too_long` and `too_many_tokens` name every text above the limit. The character limit is checked first: a request with texts above both limits gets `text_too_long`, and `too_many_tokens` only once those texts are fixed."),
        "415": {
            "description": "`unsupported_media_type`: a Content-Type other than JSON. `unsupported_content_encoding`: a Content-Encoding other than `identity`, such as `gzip`: send the body uncompressed.",
            "content": { "application/json": { "schema": schema("Error") } },
            "headers": {
                "Accept-Encoding": {
                    "description": "`identity`, sent with `unsupported_content_encoding`: the only content coding accepted.",
                    "schema": { "type": "string" }
                }
            }
        },
        "422": error("`invalid_field` (missing, unknown or mistyped field), `empty_text` or `invalid_input`."),
        "500": error("`internal`, such as a panic or a tokenizer failure: the detail is in the server log under the request id."),
        "503": with_retry_after(
            error("`overloaded` (the queue is full) or `not_ready` (the model is loading or a worker restarts)."),
        ),
        "504": error("`timeout`: no result within the server's timeout, queue wait included."),
    })
}

fn request_id_parameter() -> Value {
    json!({
        "name": request_id::HEADER,
        "in": "header",
        "required": false,
        "description": "Request id to log and return. Generated when absent. Takes precedence over `request_id` in the body.",
        "schema": schema("RequestId")
    })
}

fn paths() -> Value {
    let classify_errors = classify_errors();
    let mut classify_responses = classify_errors.clone();
    classify_responses["200"] = json_body("Classification", "The classification of the message.");
    let mut batch_responses = classify_errors;
    batch_responses["200"] = json_body("BatchResponse", "One classification per input, in input order.");
    json!({
        "/v1/classify": { "post": {
            "summary": "Classify one message",
            "description": "Returns category scores, intent, urgency, speaker, the human handoff decision and help resources. Concurrent requests are batched on the server.",
            "security": [{ "bearer": [] }, {}],
            "parameters": [request_id_parameter()],
            "requestBody": { "required": true, "content": { "application/json": { "schema": schema("ClassifyRequest") } } },
            "responses": classify_responses
        }},
        "/v1/classify/batch": { "post": {
            "summary": "Classify several messages",
            "description": "Classifies up to the server's maximum number of inputs; the results come back in input order.",
            "security": [{ "bearer": [] }, {}],
            "parameters": [request_id_parameter()],
            "requestBody": { "required": true, "content": { "application/json": { "schema": schema("BatchRequest") } } },
            "responses": batch_responses
        }},
        "/v1/labels": { "get": {
            "summary": "The label scheme",
            "description": "Ids and French display labels of the categories, intents, urgency levels and speakers.",
            "security": [{ "bearer": [] }, {}],
            "responses": {
                "200": json_body("Labels", "The label scheme."),
                "401": error("`unauthorized`.")
            }
        }},
        "/health": { "get": {
            "summary": "Liveness",
            "description": "Returns 200 as long as the process serves HTTP, model loaded or not. Never needs the API key.",
            "responses": { "200": json_body("Health", "The process is alive.") }
        }},
        "/ready": { "get": {
            "summary": "Readiness",
            "description": "200 once the model is loaded and warmed up and every model worker runs; 503 before, while a worker restarts, and during shutdown. Use it as the readiness probe. Never needs the API key.",
            "responses": {
                "200": json_body("Ready", "The service accepts classify requests."),
                "503": with_retry_after(error("`not_ready`."))
            }
        }},
        "/metrics": { "get": {
            "summary": "Prometheus metrics",
            "description": "Requests by route and status, latency histograms, queue depth, requests put ahead by the rules, batch sizes, worker restarts and model load time, in the OpenMetrics text format. No message text.",
            "security": [{ "bearer": [] }, {}],
            "responses": {
                "200": { "description": "The metrics.", "content": { "application/openmetrics-text": { "schema": { "type": "string" } } } },
                "401": error("`unauthorized`.")
            }
        }},
        "/openapi.json": { "get": {
            "summary": "This document",
            "responses": { "200": { "description": "The OpenAPI description.", "content": { "application/json": { "schema": { "type": "object" } } } } }
        }},
        "/docs": { "get": {
            "summary": "API reference page",
            "description": "An HTML page that renders this document. It loads nothing from the network.",
            "responses": { "200": { "description": "The page.", "content": { "text/html": { "schema": { "type": "string" } } } } }
        }}
    })
}

fn label_list() -> Value {
    json!({ "type": "array", "items": schema("Label") })
}

fn schemas() -> Value {
    let string_list = json!({ "type": "array", "items": { "type": "string" } });
    let score = json!({ "type": "number", "minimum": 0, "maximum": 1 });
    json!({
        "RequestId": {
            "type": "string",
            "pattern": format!("^[A-Za-z0-9._:-]{{1,{}}}$", request_id::MAX_LEN),
            "description": "Letters, digits, '-', '_', '.' and ':'."
        },
        "ClassifyRequest": {
            "type": "object",
            "additionalProperties": false,
            "required": ["text"],
            "properties": {
                "text": { "type": "string", "description": "The message. Must keep visible characters after normalisation; at most the server's character limit." },
                "context": { "type": ["array", "null"], "items": { "type": "string" }, "description": "Earlier messages from the same person, oldest first. Entries empty after normalisation are ignored; null is the same as no context." },
                "request_id": { "anyOf": [schema("RequestId"), { "type": "null" }], "description": "Null is the same as no request id." }
            }
        },
        "MessageInput": {
            "type": "object",
            "additionalProperties": false,
            "required": ["text"],
            "properties": {
                "text": { "type": "string" },
                "context": { "type": ["array", "null"], "items": { "type": "string" } }
            }
        },
        "BatchRequest": {
            "type": "object",
            "additionalProperties": false,
            "required": ["inputs"],
            "properties": {
                "inputs": { "type": "array", "minItems": 1, "items": schema("MessageInput") },
                "request_id": { "anyOf": [schema("RequestId"), { "type": "null" }], "description": "Null is the same as no request id." }
            }
        },
        "BatchResponse": {
            "type": "object",
            "additionalProperties": false,
            "required": ["results"],
            "properties": { "results": { "type": "array", "items": schema("Classification") } }
        },
        "Classification": {
            "type": "object",
            "additionalProperties": false,
            "required": ["categories", "intent", "urgency", "speaker", "handoff", "uncertain", "unsupported_script", "resources", "model", "windows"],
            "properties": {
                "categories": { "type": "array", "items": schema("CategoryScore"), "description": "Every category, by descending score." },
                "intent": schema("LabelScore"),
                "urgency": schema("Urgency"),
                "speaker": schema("LabelScore"),
                "handoff": schema("Handoff"),
                "uncertain": { "type": "boolean", "description": "The chatbot should ask a follow-up question or offer a human." },
                "unsupported_script": { "type": "boolean", "description": "The message or a context entry has at least half of its letters, or 10 letters, in a script the model cannot read, such as Cyrillic or CJK: the scores say little, and the handoff is at least `soon`." },
                "resources": { "type": "array", "items": schema("Resource"), "description": "Help resources, most urgent first." },
                "model": schema("ModelInfo"),
                "windows": { "type": "integer", "minimum": 1, "description": "Number of 512-token windows the message was split into." }
            }
        },
        "CategoryScore": {
            "type": "object",
            "additionalProperties": false,
            "required": ["id", "label", "score", "detected", "added_by_rule"],
            "properties": {
                "id": { "type": "string" },
                "label": { "type": "string", "description": "French display label." },
                "score": score,
                "detected": { "type": "boolean", "description": "The score cleared the category's threshold and the relative cutoff, or a rule marked the category." },
                "added_by_rule": { "type": "boolean", "description": "A rule marked the category, which the score alone would not have detected." }
            }
        },
        "LabelScore": {
            "type": "object",
            "additionalProperties": false,
            "required": ["id", "label", "score"],
            "properties": { "id": { "type": "string" }, "label": { "type": "string" }, "score": score }
        },
        "Urgency": {
            "type": "object",
            "additionalProperties": false,
            "required": ["level", "label", "score", "scores", "raised_by_rule"],
            "properties": {
                "level": { "type": "string", "enum": ["low", "medium", "high", "critical"] },
                "label": { "type": "string" },
                "score": score,
                "scores": { "type": "object", "additionalProperties": score, "description": "Model probability of every level." },
                "raised_by_rule": { "type": ["string", "null"], "description": "Rule that raised the level above the model's." },
                "rules_matched": { "type": "array", "items": { "type": "string" }, "description": "Every rule whose wording matched, whether or not it raised the level." }
            }
        },
        "Handoff": {
            "type": "object",
            "additionalProperties": false,
            "required": ["action", "reasons"],
            "properties": {
                "action": { "type": "string", "enum": ["now", "soon", "offer", "none"] },
                "reasons": string_list
            }
        },
        "Resource": {
            "type": "object",
            "additionalProperties": false,
            "required": ["id", "title", "links", "category"],
            "properties": {
                "id": { "type": "string" },
                "title": { "type": "string", "description": "French title shown to the person." },
                "links": string_list,
                "category": { "type": "string", "description": "Category id, or `urgent`." }
            }
        },
        "ModelInfo": {
            "type": "object",
            "additionalProperties": false,
            "required": ["name", "version", "base", "rules"],
            "properties": {
                "name": { "type": "string" },
                "version": { "type": "string", "description": "Crate version at training time, then `+` and the first 8 hex digits of the heads file's sha256." },
                "base": { "type": "string" },
                "rules": { "type": "string", "description": "Version of the rule set." }
            }
        },
        "Label": {
            "type": "object",
            "additionalProperties": false,
            "required": ["id", "label"],
            "properties": { "id": { "type": "string" }, "label": { "type": "string", "description": "French display label." } }
        },
        "Labels": {
            "type": "object",
            "additionalProperties": false,
            "required": ["version", "categories", "intents", "urgencies", "speakers"],
            "properties": {
                "version": { "type": "string" },
                "categories": label_list(),
                "intents": label_list(),
                "urgencies": label_list(),
                "speakers": label_list()
            }
        },
        "Health": {
            "type": "object",
            "additionalProperties": false,
            "required": ["status"],
            "properties": { "status": { "type": "string", "enum": ["ok"] } }
        },
        "Ready": {
            "type": "object",
            "additionalProperties": false,
            "required": ["status", "model", "workers"],
            "properties": {
                "status": { "type": "string", "enum": ["ready"] },
                "model": schema("ModelInfo"),
                "workers": { "type": "integer", "minimum": 1 }
            }
        },
        "Error": {
            "type": "object",
            "additionalProperties": false,
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "additionalProperties": false,
                    "required": ["code", "message"],
                    "properties": {
                        "code": { "type": "string", "enum": ApiError::CODES },
                        "message": { "type": "string", "description": "Plain English: the field at fault and how to fix it." }
                    }
                }
            }
        }
    })
}

/// Builds the OpenAPI document.
pub fn document() -> Value {
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "cybertriage",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Triage of messages sent to a French child-protection helpline chatbot: concern, urgency and human handoff. Every error response has the body {\"error\": {\"code\", \"message\"}}; every response carries an x-request-id header. Unknown paths return 404 `not_found`, wrong methods 405 `method_not_allowed`."
        },
        "paths": paths(),
        "components": {
            "schemas": schemas(),
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer", "description": "Needed only when the server sets an API key." } }
        }
    })
}
