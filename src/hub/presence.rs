//! Counting users by their sessions, so a user with several sessions counts once;
//! and holding a churning room's presence changes so its members get one batch
//! per window instead of a frame per change. Clock passed in.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// How many sessions each user has in one place (a room or a namespace).
#[derive(Debug, Default)]
pub struct UserCounts {
    counts: BTreeMap<String, usize>,
}

impl UserCounts {
    /// Counts one more session of `user`; true when it is the user's first.
    pub fn add(&mut self, user: &str) -> bool {
        let n = self.counts.entry(user.to_owned()).or_insert(0);
        *n += 1;
        *n == 1
    }

    /// Counts one session of `user` less; true when it was the user's last.
    pub fn remove(&mut self, user: &str) -> bool {
        match self.counts.get_mut(user) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            Some(_) => {
                self.counts.remove(user);
                true
            }
            None => false,
        }
    }

    /// The users present, sorted.
    pub fn users(&self) -> Vec<String> {
        self.counts.keys().cloned().collect()
    }

    /// The users after `after` (all for `None`), sorted, at most `limit`.
    pub fn page(&self, after: Option<&str>, limit: usize) -> Vec<String> {
        use std::ops::Bound;
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        self.counts
            .range::<str, _>((start, Bound::Unbounded))
            .take(limit)
            .map(|(user, _)| user.clone())
            .collect()
    }

    /// Whether `user` has at least one session here.
    pub fn contains(&self, user: &str) -> bool {
        self.counts.contains_key(user)
    }

    /// Number of distinct users.
    pub fn len(&self) -> usize {
        self.counts.len()
    }

    /// True when nobody is present.
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }
}

/// The presence changes of one room, held while it churns.
///
/// A change in a room that was quiet for a whole window goes out at once; the
/// next ones within the window are held and go out together when it ends. A user
/// who leaves and comes back (or the reverse) within it is no change at all, so a
/// reconnect storm costs each member one small batch, not a frame per user.
#[derive(Debug, Default)]
pub struct Churn {
    last_sent: Option<Instant>,
    /// Boxed: most rooms are calm, and every room has a `Churn`.
    held: Option<Box<Held>>,
}

#[derive(Debug)]
struct Held {
    joins: BTreeSet<String>,
    leaves: BTreeSet<String>,
    due: Instant,
}

/// What to do with a presence change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Send it now, alone.
    Now,
    /// Held for the batch; [`Churn::due`] gives it at the window's end.
    Held,
}

impl Churn {
    /// `user` entered (`joined`) or left the room at `now`.
    pub fn change(&mut self, user: &str, joined: bool, now: Instant, window: Duration) -> Change {
        let quiet = self.last_sent.is_none_or(|last| now >= last + window);
        if self.held.is_none() && quiet {
            self.last_sent = Some(now);
            return Change::Now;
        }
        let due = self.last_sent.map_or(now, |last| last + window).max(now);
        let held = self.held.get_or_insert_with(|| {
            Box::new(Held {
                joins: BTreeSet::new(),
                leaves: BTreeSet::new(),
                due,
            })
        });
        let (undo, add) = if joined {
            (&mut held.leaves, &mut held.joins)
        } else {
            (&mut held.joins, &mut held.leaves)
        };
        // The opposite change still held: together they change nothing.
        if !undo.remove(user) {
            add.insert(user.to_owned());
        }
        Change::Held
    }

    /// When the held changes are due, if any are held.
    pub fn deadline(&self) -> Option<Instant> {
        self.held.as_ref().map(|h| h.due)
    }

    /// The held changes, `(joins, leaves)` sorted, once due at `now` (possibly
    /// both empty: they cancelled out).
    pub fn due(&mut self, now: Instant) -> Option<(Vec<String>, Vec<String>)> {
        if self.held.as_ref()?.due > now {
            return None;
        }
        let held = self.held.take()?;
        self.last_sent = Some(now);
        Some((
            held.joins.into_iter().collect(),
            held.leaves.into_iter().collect(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_millis(100);

    #[test]
    fn a_calm_room_sends_at_once_a_churning_one_in_batches() {
        let t0 = Instant::now();
        let mut churn = Churn::default();
        assert_eq!(churn.change("ann", true, t0, WINDOW), Change::Now);
        assert_eq!(churn.deadline(), None);
        let t1 = t0 + Duration::from_millis(10);
        assert_eq!(churn.change("bob", true, t1, WINDOW), Change::Held);
        assert_eq!(churn.change("cy", true, t1, WINDOW), Change::Held);
        assert_eq!(churn.change("dee", false, t1, WINDOW), Change::Held);
        assert_eq!(churn.deadline(), Some(t0 + WINDOW));
        assert_eq!(churn.due(t1), None, "not before the window ends");
        let (joins, leaves) = churn.due(t0 + WINDOW).unwrap();
        assert_eq!(
            (joins, leaves),
            (vec!["bob".into(), "cy".into()], vec!["dee".into()])
        );
        assert_eq!(churn.due(t0 + WINDOW * 5), None, "sent once");
        // Quiet for a whole window again: at once.
        assert_eq!(
            churn.change("eve", true, t0 + WINDOW * 3, WINDOW),
            Change::Now
        );
    }

    #[test]
    fn leaving_and_coming_back_within_a_window_is_no_change() {
        let t0 = Instant::now();
        let mut churn = Churn::default();
        assert_eq!(churn.change("ann", false, t0, WINDOW), Change::Now);
        for user in ["bob", "cy"] {
            churn.change(user, false, t0, WINDOW);
            churn.change(user, true, t0, WINDOW);
        }
        churn.change("dee", true, t0, WINDOW);
        churn.change("dee", false, t0, WINDOW);
        assert_eq!(churn.due(t0 + WINDOW), Some((vec![], vec![])));
    }

    #[test]
    fn a_user_with_two_sessions_counts_once() {
        let mut p = UserCounts::default();
        assert!(p.add("ann"));
        assert!(!p.add("ann"));
        assert!(p.add("bob"));
        assert_eq!(p.users(), ["ann", "bob"]);
        assert!(!p.remove("ann"));
        assert!(p.contains("ann"));
        assert!(p.remove("ann"));
        assert!(!p.contains("ann"));
        assert!(!p.remove("ann"), "removing an absent user is not a leave");
        assert_eq!(p.len(), 1);
        for user in ["cy", "dee", "eve"] {
            p.add(user);
        }
        assert_eq!(p.page(None, 2), ["bob", "cy"]);
        assert_eq!(p.page(Some("cy"), 2), ["dee", "eve"]);
        assert_eq!(p.page(Some("d"), 10), ["dee", "eve"]);
        assert!(p.page(Some("eve"), 10).is_empty());
    }
}
