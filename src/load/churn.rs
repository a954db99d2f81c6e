//! Churn (`--churn-rate`): extra sessions that connect, join a room, stay
//! `--churn-life` and leave, at a steady rate while the steady clients chat —
//! what a busy site's reconnects and page loads do to the others' latency.
//! They use their own sockets and users (`churn-k`), publish nothing and are
//! left out of delivery counts; their connect times are reported apart.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::connect::{Dialer, CONNECT_CONCURRENCY};
use super::report::micros_histogram;
use super::Ctx;
use crate::auth::{self, Claims};

/// What the churn sessions measured.
pub(super) struct ChurnFacts {
    /// Churn sessions that connected and joined, started in the measured window.
    pub(super) sessions: u64,
    /// Churn sessions that failed, started in the measured window.
    pub(super) failed: u64,
    /// Their connect times (session + Hello/Welcome), microseconds.
    pub(super) connect_us: Histogram<u64>,
}

/// How churn runs.
pub(super) struct Churn {
    /// New sessions per second.
    pub(super) rate: f64,
    /// How long each stays.
    pub(super) life: Duration,
    /// Where they connect.
    pub(super) url: String,
    /// Token secret.
    pub(super) secret: String,
    /// Their sockets.
    pub(super) dialer: Dialer,
}

impl Churn {
    /// Sessions alive at once at most: sockets to make for them.
    pub(super) fn concurrent(rate: f64, life: Duration) -> u32 {
        (rate * life.as_secs_f64() * 1.5).ceil() as u32 + 1
    }

    /// Starts a session every `1 / rate` s from the run's epoch until the last
    /// send; then waits for those still alive (they close at `stop`).
    pub(super) async fn run(self, ctx: Arc<Ctx>, stop: CancellationToken) -> ChurnFacts {
        let facts = Arc::new(Mutex::new(ChurnFacts {
            sessions: 0,
            failed: 0,
            connect_us: micros_histogram(),
        }));
        let unix_now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let concurrency = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
        let mut alive = JoinSet::new();
        for k in 0u64.. {
            let at_ns = (k as f64 * 1e9 / self.rate) as u64;
            if at_ns >= ctx.window.end_ns {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep_until((ctx.epoch + Duration::from_nanos(at_ns)).into()) => {}
                _ = stop.cancelled() => break,
            }
            let Ok(permit) = concurrency.clone().acquire_owned().await else {
                break;
            };
            let claims = Claims::new(&format!("churn-{k}"), unix_now, 3_600);
            let Ok(token) = auth::mint(self.secret.as_bytes(), &claims) else {
                ctx.error("churn: cannot mint a token", 1);
                continue;
            };
            let dial = self.dialer.dial(k as u32);
            let room = ctx.rooms[(k % u64::from(ctx.plan.rooms)) as usize].clone();
            let (url, life, ctx, facts, stop) = (
                self.url.clone(),
                self.life,
                ctx.clone(),
                facts.clone(),
                stop.clone(),
            );
            alive.spawn(async move {
                let measured = ctx.window.measures(ctx.now_ns());
                let opened = dial.open(&url, &token, &[room]).await;
                drop(permit);
                match opened {
                    Ok(j) => {
                        if measured {
                            let mut f = facts.lock().unwrap_or_else(|p| p.into_inner());
                            f.sessions += 1;
                            f.connect_us
                                .saturating_record(j.connect_time().as_micros().max(1) as u64);
                        }
                        j.linger(life, &stop).await;
                    }
                    Err(e) => {
                        if measured {
                            facts.lock().unwrap_or_else(|p| p.into_inner()).failed += 1;
                        }
                        ctx.error(format!("churn {}: {}", e.kind, e.detail), 1);
                    }
                }
            });
            // Reap the sessions that already left, so the set stays small.
            while alive.try_join_next().is_some() {}
        }
        while alive.join_next().await.is_some() {}
        drop(alive);
        match Arc::try_unwrap(facts) {
            Ok(m) => m.into_inner().unwrap_or_else(|p| p.into_inner()),
            Err(_) => unreachable!("every churn task has ended"),
        }
    }
}
