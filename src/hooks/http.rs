//! [`HttpHooks`]: each hook is a JSON `POST` to the namespace's `hooks.url` + `/` +
//! the hook's name, over a keep-alive connection pool.
//!
//! Every request carries `X-Wtgate-Signature` (see [`super::sign`]) and, for the
//! backend's routing and logs, `X-Wtgate-Namespace`, `X-Wtgate-User` and
//! `X-Wtgate-Session`. The JSON body has `namespace`, `user`, `session`, and per
//! hook `room` (join, publish), `method` (rpc) and the client's payload: `data`
//! when it is JSON, else `body_base64`. The backend answers 200 with a JSON
//! object:
//!
//! | Hook | Yes | No |
//! |---|---|---|
//! | connect | `{}`, or `{"data": …}` to attach data | `{"error": {"message": "…", "code": 4001}}` (`code` optional, 1000–4999) |
//! | join | `{}`, or `{"history": false}` | `{"error": …}` |
//! | publish | `{}`, or `{"data": …}` / `{"body_base64": "…"}` to replace the body | `{"error": …}` |
//! | rpc | `{"data": …}` / `{"body_base64": "…"}` | `{"error": …}` |
//!
//! Any other status, a body that is not such an object, a connection failure or a
//! reply larger than the frame limit counts as unavailable.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use bytes::Bytes;
use serde_json::{json, Map, Value};

use super::{Caller, ConnectReply, HookError, Hooks, JoinReply, PublishReply};
use crate::config::Config;

/// How long connecting to the backend may take (within the hook's timeout).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Idle keep-alive connections are kept this long.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Hooks served by the application's HTTP backend.
pub struct HttpHooks {
    http: reqwest::Client,
    /// Namespace path → base URL, for namespaces with a `hooks.url`.
    urls: HashMap<String, String>,
    secret: Vec<u8>,
    /// Largest reply body read, in bytes (the frame limit).
    max_reply: usize,
}

impl std::fmt::Debug for HttpHooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpHooks")
            .field("urls", &self.urls)
            .finish_non_exhaustive()
    }
}

impl HttpHooks {
    /// Hooks for the namespaces of `config` that have a `hooks.url`, signed with
    /// `secret`; HTTPS backends are checked against the system's roots.
    pub fn new(config: &Config, secret: &[u8]) -> Result<Self, HookError> {
        let tls = crate::api_client::tls_config(&crate::client::Trust::System)
            .map_err(|e| HookError::Unavailable(e.to_string()))?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .connect_timeout(CONNECT_TIMEOUT)
            .pool_idle_timeout(IDLE_TIMEOUT)
            .tcp_nodelay(true)
            .user_agent(concat!("wtgate/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| HookError::Unavailable(e.to_string()))?;
        let urls = config
            .namespaces
            .iter()
            .filter(|(_, ns)| !ns.hooks.url.is_empty())
            .map(|(path, ns)| (path.clone(), ns.hooks.url.trim_end_matches('/').to_owned()))
            .collect();
        Ok(HttpHooks {
            http,
            urls,
            secret: secret.to_vec(),
            max_reply: config.limits.max_frame,
        })
    }

    /// POSTs `fields` (plus who is calling) to the hook; the backend's yes, or its no.
    async fn call(
        &self,
        caller: Caller<'_>,
        hook: &str,
        mut fields: Map<String, Value>,
    ) -> Result<Map<String, Value>, HookError> {
        let Some(base) = self.urls.get(caller.ns) else {
            return Err(HookError::Unavailable(format!(
                "no hooks.url for namespace {}",
                caller.ns
            )));
        };
        fields.insert("namespace".into(), json!(caller.ns));
        fields.insert("user".into(), json!(caller.user));
        fields.insert("session".into(), json!(caller.session));
        let body = serde_json::to_vec(&Value::Object(fields)).expect("JSON always serializes");
        let t = super::sign::unix_now();
        let mut resp = self
            .http
            .post(format!("{base}/{hook}"))
            .header("content-type", "application/json")
            .header(
                super::sign::HEADER,
                super::signature_header(&self.secret, t, &body),
            )
            .header("x-wtgate-namespace", caller.ns)
            .header("x-wtgate-user", caller.user)
            .header("x-wtgate-session", caller.session.to_string())
            .body(body)
            .send()
            .await
            .map_err(|e| HookError::Unavailable(describe(&e)))?;
        let status = resp.status();
        let mut reply = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| HookError::Unavailable(describe(&e)))?
        {
            if reply.len() + chunk.len() > self.max_reply {
                return Err(HookError::Unavailable(format!(
                    "the {hook} hook's reply exceeds {} bytes",
                    self.max_reply
                )));
            }
            reply.extend_from_slice(&chunk);
        }
        if !status.is_success() {
            return Err(HookError::Unavailable(format!(
                "the {hook} hook answered {status}"
            )));
        }
        let Ok(Value::Object(map)) = serde_json::from_slice(&reply) else {
            return Err(HookError::Unavailable(format!(
                "the {hook} hook's reply is not a JSON object"
            )));
        };
        match map.get("error") {
            None | Some(Value::Null) => Ok(map),
            Some(error) => {
                let message = error
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("refused by the application");
                let code = error
                    .get("code")
                    .and_then(Value::as_u64)
                    .and_then(|c| u32::try_from(c).ok());
                Err(HookError::refused_with(code, message))
            }
        }
    }
}

/// Puts a client payload into a request: `data` when it is JSON, else `body_base64`.
fn with_body(mut fields: Map<String, Value>, body: &[u8]) -> Map<String, Value> {
    match serde_json::from_slice::<Value>(body) {
        Ok(value) => fields.insert("data".into(), value),
        Err(_) => fields.insert(
            "body_base64".into(),
            json!(base64::engine::general_purpose::STANDARD.encode(body)),
        ),
    };
    fields
}

/// The payload of a reply: `data` (serialized back to JSON) or `body_base64`.
fn body_of(reply: &Map<String, Value>, hook: &str) -> Result<Option<Bytes>, HookError> {
    if let Some(data) = reply.get("data") {
        let bytes = serde_json::to_vec(data).expect("JSON always serializes");
        return Ok(Some(Bytes::from(bytes)));
    }
    match reply.get("body_base64") {
        None => Ok(None),
        Some(Value::String(b64)) => base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map(|b| Some(Bytes::from(b)))
            .map_err(|_| {
                HookError::Unavailable(format!("the {hook} hook's body_base64 is not base64"))
            }),
        Some(_) => Err(HookError::Unavailable(format!(
            "the {hook} hook's body_base64 is not a string"
        ))),
    }
}

/// reqwest's error with its causes: "error sending request" alone says little.
fn describe(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[async_trait]
impl Hooks for HttpHooks {
    async fn connect(&self, caller: Caller<'_>) -> Result<ConnectReply, HookError> {
        let reply = self.call(caller, "connect", Map::new()).await?;
        Ok(ConnectReply {
            data: body_of(&reply, "connect")?,
        })
    }

    async fn join(&self, caller: Caller<'_>, room: &str) -> Result<JoinReply, HookError> {
        let mut fields = Map::new();
        fields.insert("room".into(), json!(room));
        let reply = self.call(caller, "join", fields).await?;
        Ok(JoinReply {
            history: reply
                .get("history")
                .and_then(Value::as_bool)
                .unwrap_or(true),
        })
    }

    async fn publish(
        &self,
        caller: Caller<'_>,
        room: &str,
        body: &Bytes,
    ) -> Result<PublishReply, HookError> {
        let mut fields = Map::new();
        fields.insert("room".into(), json!(room));
        let reply = self
            .call(caller, "publish", with_body(fields, body))
            .await?;
        Ok(PublishReply {
            body: body_of(&reply, "publish")?,
        })
    }

    async fn rpc(&self, caller: Caller<'_>, method: &str, body: Bytes) -> Result<Bytes, HookError> {
        let mut fields = Map::new();
        fields.insert("method".into(), json!(method));
        let reply = self.call(caller, "rpc", with_body(fields, &body)).await?;
        Ok(body_of(&reply, "rpc")?.unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_travel_as_json_or_base64() {
        let json_body = with_body(Map::new(), br#"{"text":"hi"}"#);
        assert_eq!(json_body["data"], json!({"text": "hi"}));
        let binary = with_body(Map::new(), &[0xff, 0x00]);
        assert_eq!(binary["body_base64"], json!("/wA="));
        let text = with_body(Map::new(), b"hello");
        assert_eq!(text["body_base64"], json!("aGVsbG8="));

        let reply = |v: Value| v.as_object().unwrap().clone();
        assert_eq!(
            body_of(&reply(json!({"data": {"a": 1}})), "rpc").unwrap(),
            Some(Bytes::from_static(br#"{"a":1}"#))
        );
        assert_eq!(
            body_of(&reply(json!({"body_base64": "/wA="})), "rpc").unwrap(),
            Some(Bytes::from_static(&[0xff, 0x00]))
        );
        assert_eq!(body_of(&reply(json!({})), "rpc").unwrap(), None);
        assert!(body_of(&reply(json!({"body_base64": "!"})), "rpc").is_err());
        assert!(body_of(&reply(json!({"body_base64": 5})), "rpc").is_err());
    }
}
