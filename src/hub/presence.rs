//! Counting users by their sessions, so a user with several sessions counts once.

use std::collections::BTreeMap;

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

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
