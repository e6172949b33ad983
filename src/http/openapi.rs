//! The OpenAPI 3 document of the HTTP API, built from the same route list as the
//! router and the same command list as the command model, so it cannot drift.
//! May import: `command` (names, error codes, each command's field schema).

use serde_json::{json, Map, Value};

use super::ROUTES;
use crate::command::{CommandName, ErrorCode};

fn response_schema() -> Value {
    let codes: Vec<&str> = [
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::Invalid,
        ErrorCode::NotFound,
        ErrorCode::Busy,
        ErrorCode::Conflict,
        ErrorCode::RateLimited,
        ErrorCode::Unavailable,
        ErrorCode::Internal,
    ]
    .iter()
    .map(|c| c.as_str())
    .collect();
    json!({
        "type": "object",
        "required": ["status", "request_id"],
        "properties": {
            "status": { "type": "string", "enum": ["ok", "error"] },
            "request_id": { "type": "string", "nullable": true },
            "job_id": { "type": "string", "format": "uuid" },
            "data": {},
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": { "type": "string", "enum": codes },
                    "message": { "type": "string" }
                }
            }
        }
    })
}

fn responses(codes: &[u16]) -> Value {
    let mut out = Map::new();
    for code in codes {
        out.insert(
            code.to_string(),
            json!({
                "description": description(*code),
                "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Response" } } }
            }),
        );
    }
    Value::Object(out)
}

fn description(code: u16) -> &'static str {
    match code {
        200 => "answered",
        202 => "job started",
        400 => "invalid request",
        401 => "no or unknown token",
        403 => "role too low, policy refusal or X-From-NodeRed missing",
        404 => "not found",
        409 => "busy, or what it would create already exists (conflict)",
        413 => "body too large",
        429 => "rate limited (Retry-After says when to retry)",
        503 => "unavailable",
        _ => "error",
    }
}

fn bearer() -> Value {
    json!([{ "bearer": [] }])
}

fn job_id_param() -> Value {
    json!({ "name": "job_id", "in": "path", "required": true, "schema": { "type": "string", "format": "uuid" } })
}

fn text(description: &str) -> Value {
    json!({ "200": { "description": description, "content": { "text/plain": { "schema": { "type": "string" } } } } })
}

fn sse(description: &str) -> Value {
    json!({
        "200": { "description": description, "content": { "text/event-stream": { "schema": { "type": "string" } } } },
        "400": responses(&[400])["400"],
        "401": responses(&[401])["401"],
        "403": responses(&[403])["403"],
        "404": responses(&[404])["404"]
    })
}

/// One operation per route: the command route, the job routes, the rest. One arm
/// per route reads as the table it is; the router test checks it covers every
/// route.
fn operation(method: &str, path: &str) -> Value {
    if (method, path) == ("post", "/api/v1/cmd/{group}/{action}") {
        return command_operation();
    }
    if method == "get" {
        if let Some(op) = job_operation(path) {
            return op;
        }
    }
    match (method, path) {
        ("get", "/api/v1/openapi.json") => json!({
            "summary": "This document",
            "responses": { "200": { "description": "OpenAPI 3 document", "content": { "application/json": { "schema": { "type": "object" } } } } }
        }),
        ("get", "/healthz") => {
            json!({ "summary": "The process is alive", "responses": text("ok") })
        }
        ("get", "/readyz") => json!({
            "summary": "MQTT connected, borgmatic runnable, store writable, Docker answering",
            "responses": {
                "200": { "description": "ready", "content": { "application/json": { "schema": { "type": "object" } } } },
                "503": { "description": "not ready; parts say why", "content": { "application/json": { "schema": { "type": "object" } } } }
            }
        }),
        ("get", "/metrics") => {
            json!({ "summary": "Prometheus metrics", "responses": text("text exposition format") })
        }
        _ => json!({}),
    }
}

/// `POST /api/v1/cmd/{group}/{action}`: groups and actions from the command table.
fn command_operation() -> Value {
    let groups: Vec<&str> = {
        let mut g: Vec<&str> = CommandName::ALL
            .iter()
            .map(|c| c.as_str().split('/').next().unwrap_or(""))
            .collect();
        g.sort();
        g.dedup();
        g
    };
    let actions: Vec<&str> = {
        let mut a: Vec<&str> = CommandName::ALL
            .iter()
            .map(|c| c.as_str().split('/').nth(1).unwrap_or(""))
            .collect();
        a.sort();
        a.dedup();
        a
    };
    json!({
        "summary": "Run a command (same body as the MQTT request, token in the Authorization header)",
        "security": bearer(),
        "parameters": [
            { "name": "group", "in": "path", "required": true, "schema": { "type": "string", "enum": groups } },
            { "name": "action", "in": "path", "required": true, "schema": { "type": "string", "enum": actions } }
        ],
        "requestBody": { "required": false, "content": { "application/json": { "schema": { "type": "object" } } } },
        "responses": responses(&[200, 202, 400, 401, 403, 404, 409, 413, 429, 503])
    })
}

/// The `GET` routes of job records, logs and event streams.
fn job_operation(path: &str) -> Option<Value> {
    Some(match path {
        "/api/v1/jobs" => json!({
            "summary": "Job records, newest first",
            "security": bearer(),
            "parameters": [
                { "name": "state", "in": "query", "schema": { "type": "string",
                  "enum": ["queued", "running", "succeeded", "warning", "failed", "cancelled", "interrupted"] } },
                { "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 0, "maximum": 4294967295u64 } }
            ],
            "responses": responses(&[200, 400, 401, 403, 429])
        }),
        "/api/v1/jobs/{job_id}" => json!({
            "summary": "One job record (with its result data once finished)",
            "security": bearer(),
            "parameters": [job_id_param()],
            "responses": responses(&[200, 400, 401, 403, 404, 429])
        }),
        "/api/v1/jobs/{job_id}/log" => json!({
            "summary": "Poll log lines after a seq",
            "security": bearer(),
            "parameters": [
                job_id_param(),
                { "name": "after", "in": "query", "schema": { "type": "integer", "minimum": 0 } },
                { "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 0, "maximum": 10000 } }
            ],
            "responses": {
                "200": { "description": "lines", "content": { "application/json": { "schema": {
                    "type": "object", "required": ["job_id", "lines", "next_after"],
                    "properties": {
                        "job_id": { "type": "string" },
                        "lines": { "type": "array", "items": { "type": "object" } },
                        "next_after": { "type": "integer" }
                    } } } } },
                "400": responses(&[400])["400"],
                "401": responses(&[401])["401"],
                "403": responses(&[403])["403"],
                "404": responses(&[404])["404"]
            }
        }),
        "/api/v1/jobs/{job_id}/events" => json!({
            "summary": "Server-Sent Events of one job: state, log (id = seq), lagged, result",
            "security": bearer(),
            "parameters": [
                job_id_param(),
                { "name": "Last-Event-ID", "in": "header", "schema": { "type": "string" } }
            ],
            "responses": sse("event stream")
        }),
        "/api/v1/events" => json!({
            "summary": "Server-Sent Events of every job state change",
            "security": bearer(),
            "responses": sse("event stream")
        }),
        _ => return None,
    })
}

/// `Response`, and each command's fields from the command table, named
/// `<group>_<action>` (`-` becomes `_`): what `POST /api/v1/cmd/<group>/<action>`
/// takes besides the token.
fn schemas() -> Value {
    let mut out = Map::new();
    out.insert("Response".into(), response_schema());
    for c in CommandName::ALL {
        let name = c.as_str().replace(['/', '-'], "_");
        out.insert(name, c.schema());
    }
    Value::Object(out)
}

/// The document served at `/api/v1/openapi.json`.
pub fn document() -> Value {
    let mut paths = Map::new();
    for (method, path) in ROUTES {
        let entry = paths
            .entry(path.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(obj) = entry.as_object_mut() {
            obj.insert(method.to_string(), operation(method, path));
        }
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "borgmatic-mqtt HTTP API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Mirrors the MQTT commands; see topics.md for each command's fields; components.schemas.<group>_<action> holds each command's field schema (an open object where none is written yet); envelope fields shared by every command (request_id; timeout_secs on job commands) come besides them."
        },
        "paths": paths,
        "components": {
            "schemas": schemas(),
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_describes_exactly_the_router() {
        let doc = document();
        let paths = doc["paths"].as_object().unwrap();
        let mut described: Vec<(String, String)> = paths
            .iter()
            .flat_map(|(p, ops)| {
                ops.as_object()
                    .unwrap()
                    .keys()
                    .map(move |m| (m.clone(), p.clone()))
            })
            .collect();
        described.sort();
        let mut routed: Vec<(String, String)> = ROUTES
            .iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
        routed.sort();
        assert_eq!(described, routed);
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        assert_eq!(schemas.len(), CommandName::ALL.len() + 1);
        let files = &schemas["archive_files"];
        assert_eq!(files["additionalProperties"], false, "{files}");
        assert_eq!(
            files["required"],
            serde_json::json!(["repository", "archive"])
        );
        let line = &schemas["ssh_key_authorized_line"];
        assert_eq!(line["required"], serde_json::json!(["name"]), "{line}");
        assert_eq!(line["additionalProperties"], false, "{line}");
        for (m, p) in ROUTES {
            assert!(
                paths[*p][*m]["responses"].is_object(),
                "{m} {p} has no responses"
            );
        }
    }
}
