//! Prometheus metrics of one server, in its own registry (no process-wide state, so
//! several servers in one process — the tests — keep separate counts).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Label of per-namespace series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NamespaceLabel {
    /// Namespace path.
    pub namespace: String,
}

/// Label of per-error-code series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    /// Error code name.
    pub code: String,
}

impl CodeLabel {
    fn of(code: crate::protocol::ErrorCode) -> Self {
        CodeLabel {
            code: format!("{code:?}"),
        }
    }
}

/// Labels of backend hook calls.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HookLabel {
    /// `connect`, `join`, `publish` or `rpc`.
    pub hook: String,
    /// `ok`, `refused` or `unavailable`.
    pub result: String,
}

/// Every series the server exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Open sessions by namespace.
    pub sessions: Family<NamespaceLabel, Gauge>,
    /// Rooms with members on this node (set at scrape time).
    pub rooms: Gauge,
    /// Messages accepted for publishing (clients and the server API).
    pub messages_in: Family<NamespaceLabel, Counter>,
    /// Room messages written to sessions.
    pub deliveries: Counter,
    /// Datagrams received from clients.
    pub datagrams_in: Counter,
    /// Datagrams sent to clients.
    pub datagrams_out: Counter,
    /// Datagrams dropped (full queue, too large, room not joined).
    pub datagrams_dropped: Counter,
    /// Reliable frames dropped because a session's queue overflowed (it is closed).
    pub frames_dropped: Counter,
    /// Room presence frames queued for members (single changes and batches;
    /// counted by the hub, set at scrape time).
    pub presence_frames: Counter,
    /// Datagrams dropped because a receiving session's datagram queue was full
    /// (counted by the hub; set at scrape time).
    pub datagrams_overflow: Counter,
    /// Error frames sent and sessions closed, by code.
    pub errors: Family<CodeLabel, Counter>,
    /// Notifications stored.
    pub notifications_pushed: Counter,
    /// Notifications acknowledged by clients.
    pub notifications_acked: Counter,
    /// Notifications dropped from full inboxes.
    pub notifications_evicted: Counter,
    /// Notifications pending in all inboxes (set at scrape time).
    pub notifications_pending: Gauge,
    /// Time from accepting a publish to writing it to a member's stream, seconds.
    pub publish_latency: Histogram,
    /// New connections asked to validate their address (QUIC Retry).
    pub connect_retries: Counter,
    /// Bytes queued for all sessions' writers (set at scrape time).
    pub queued_bytes: Gauge,
    /// Connections not welcomed yet (set at scrape time).
    pub awaiting_hello: Gauge,
    /// Bytes of room history held in memory (set at scrape time; single process).
    pub history_bytes: Gauge,
    /// Backend hook calls by hook and result.
    pub hook_calls: Family<HookLabel, Counter>,
    /// Time backend hook calls took (those that ran), seconds.
    pub hook_latency: Histogram,
    /// Webhook events the backend accepted.
    pub webhooks_sent: Counter,
    /// Webhook delivery attempts that failed (each is retried).
    pub webhooks_failed: Counter,
    /// Webhook events dropped: the queue was at its bound.
    pub webhooks_dropped: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new([])
    }
}

impl Metrics {
    /// A registry with every series registered under the `wtgate_` prefix, each
    /// labelled series of `namespaces` and of every error code exported from the
    /// start at zero (dashboards and alerts need a series before its first event).
    pub fn new<'a>(namespaces: impl IntoIterator<Item = &'a str>) -> Self {
        let mut m = Metrics {
            registry: Registry::with_prefix("wtgate"),
            sessions: Family::default(),
            rooms: Gauge::default(),
            messages_in: Family::default(),
            deliveries: Counter::default(),
            datagrams_in: Counter::default(),
            datagrams_out: Counter::default(),
            datagrams_dropped: Counter::default(),
            frames_dropped: Counter::default(),
            presence_frames: Counter::default(),
            datagrams_overflow: Counter::default(),
            errors: Family::default(),
            notifications_pushed: Counter::default(),
            notifications_acked: Counter::default(),
            notifications_evicted: Counter::default(),
            notifications_pending: Gauge::default(),
            // 50 µs … ~1.6 s.
            publish_latency: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
            connect_retries: Counter::default(),
            queued_bytes: Gauge::default(),
            awaiting_hello: Gauge::default(),
            history_bytes: Gauge::default(),
            hook_calls: Family::default(),
            // 100 µs … ~3.3 s.
            hook_latency: Histogram::new(exponential_buckets(0.000_1, 2.0, 16)),
            webhooks_sent: Counter::default(),
            webhooks_failed: Counter::default(),
            webhooks_dropped: Counter::default(),
        };
        let r = &mut m.registry;
        r.register("sessions", "Open sessions", m.sessions.clone());
        r.register("rooms", "Rooms with members on this node", m.rooms.clone());
        r.register(
            "messages_in",
            "Messages accepted for publishing",
            m.messages_in.clone(),
        );
        r.register(
            "deliveries",
            "Room messages written to sessions",
            m.deliveries.clone(),
        );
        r.register("datagrams_in", "Datagrams received", m.datagrams_in.clone());
        r.register("datagrams_out", "Datagrams sent", m.datagrams_out.clone());
        r.register(
            "datagrams_dropped",
            "Datagrams dropped",
            m.datagrams_dropped.clone(),
        );
        r.register(
            "datagrams_overflow",
            "Datagrams dropped because a receiver's datagram queue was full",
            m.datagrams_overflow.clone(),
        );
        r.register(
            "frames_dropped",
            "Reliable frames dropped by slow consumers' overflowing queues",
            m.frames_dropped.clone(),
        );
        r.register(
            "presence_frames",
            "Room presence frames queued for members (a churning room's changes go in batches)",
            m.presence_frames.clone(),
        );
        r.register(
            "errors",
            "Error frames and closes by code",
            m.errors.clone(),
        );
        r.register(
            "notifications_pushed",
            "Notifications stored",
            m.notifications_pushed.clone(),
        );
        r.register(
            "notifications_acked",
            "Notifications acknowledged",
            m.notifications_acked.clone(),
        );
        r.register(
            "notifications_evicted",
            "Notifications dropped from full inboxes",
            m.notifications_evicted.clone(),
        );
        r.register(
            "notifications_pending",
            "Notifications pending in all inboxes",
            m.notifications_pending.clone(),
        );
        r.register(
            "publish_latency_seconds",
            "Time from accepting a publish to writing it to a member",
            m.publish_latency.clone(),
        );
        r.register(
            "connect_retries",
            "New connections asked to validate their address (QUIC Retry) under connect load",
            m.connect_retries.clone(),
        );
        r.register(
            "queued_bytes",
            "Bytes queued for all sessions' writers",
            m.queued_bytes.clone(),
        );
        r.register(
            "sessions_awaiting_hello",
            "Connections not welcomed yet",
            m.awaiting_hello.clone(),
        );
        r.register(
            "history_bytes",
            "Bytes of room history held in memory",
            m.history_bytes.clone(),
        );
        r.register(
            "hook_calls",
            "Backend hook calls by hook and result (ok, refused, unavailable)",
            m.hook_calls.clone(),
        );
        r.register(
            "hook_latency_seconds",
            "Time backend hook calls took",
            m.hook_latency.clone(),
        );
        r.register(
            "webhooks_sent",
            "Webhook events the backend accepted",
            m.webhooks_sent.clone(),
        );
        r.register(
            "webhooks_failed",
            "Webhook delivery attempts that failed (retried)",
            m.webhooks_failed.clone(),
        );
        r.register(
            "webhooks_dropped",
            "Webhook events dropped at the queue's bound",
            m.webhooks_dropped.clone(),
        );
        for ns in namespaces {
            m.sessions_in(ns);
            let _ = m.messages_in.get_or_create(&NamespaceLabel {
                namespace: ns.to_owned(),
            });
        }
        for code in crate::protocol::ErrorCode::KNOWN {
            let _ = m.errors.get_or_create(&CodeLabel::of(code));
        }
        for hook in ["connect", "join", "publish", "rpc"] {
            for result in ["ok", "refused", "unavailable"] {
                m.hook_call(hook, result);
            }
        }
        m
    }

    /// The counter of `hook` calls that ended with `result`.
    pub fn hook_call(&self, hook: &str, result: &str) -> Counter {
        self.hook_calls
            .get_or_create(&HookLabel {
                hook: hook.to_owned(),
                result: result.to_owned(),
            })
            .clone()
    }

    /// Counts a room message written to a member, accepted at `published`.
    pub fn delivered(&self, published: std::time::Instant) {
        self.deliveries.inc();
        self.publish_latency
            .observe(published.elapsed().as_secs_f64());
    }

    /// Counts an error frame or close with `code`.
    pub fn error(&self, code: crate::protocol::ErrorCode) {
        self.errors.get_or_create(&CodeLabel::of(code)).inc();
    }

    /// The namespace's session gauge.
    pub fn sessions_in(&self, ns: &str) -> Gauge {
        self.sessions
            .get_or_create(&NamespaceLabel {
                namespace: ns.to_owned(),
            })
            .clone()
    }

    /// Counts a message accepted in `ns`.
    pub fn message_in(&self, ns: &str) {
        self.messages_in
            .get_or_create(&NamespaceLabel {
                namespace: ns.to_owned(),
            })
            .inc();
    }

    /// The Prometheus text exposition of every series.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_series_is_exported_from_the_start() {
        let text = Metrics::new(["/chat", "/notifications"]).render();
        for series in [
            "wtgate_sessions{namespace=\"/chat\"} 0",
            "wtgate_sessions{namespace=\"/notifications\"} 0",
            "wtgate_messages_in_total{namespace=\"/chat\"} 0",
            "wtgate_errors_total{code=\"SlowConsumer\"} 0",
            "wtgate_errors_total{code=\"Internal\"} 0",
            "wtgate_rooms 0",
            "wtgate_deliveries_total 0",
            "wtgate_notifications_pending 0",
            "wtgate_publish_latency_seconds_count 0",
            "wtgate_hook_calls_total{hook=\"publish\",result=\"unavailable\"} 0",
            "wtgate_webhooks_dropped_total 0",
        ] {
            assert!(text.contains(&format!("{series}\n")), "{series}: {text}");
        }
        assert_eq!(
            text.matches("wtgate_errors_total{").count(),
            crate::protocol::ErrorCode::KNOWN.len()
        );
    }

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::new([]);
        m.sessions_in("/chat").inc();
        m.message_in("/chat");
        m.error(crate::protocol::ErrorCode::RateLimited);
        m.publish_latency.observe(0.001);
        let text = m.render();
        assert!(
            text.contains("wtgate_sessions{namespace=\"/chat\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("wtgate_messages_in_total{namespace=\"/chat\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("wtgate_errors_total{code=\"RateLimited\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("wtgate_publish_latency_seconds_count 1"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }
}
