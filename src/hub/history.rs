//! Per-room sequence numbers and the bounded history used to recover missed messages.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::protocol::Since;

/// What a rejoining client can get back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// This life of the room's sequence.
    pub epoch: u64,
    /// The room's last sequence number.
    pub last_seq: u64,
    /// Encoded `Message` frames after `since`, oldest first; `None` when history no
    /// longer reaches back that far (or `since` is from another life of the room).
    pub replay: Option<Vec<(u64, Bytes)>>,
}

/// Sequence counter and ring of the last `cap` encoded messages of one room, at
/// most `max_bytes` of them.
#[derive(Debug)]
pub struct History {
    epoch: u64,
    cap: usize,
    max_bytes: usize,
    bytes: usize,
    last_seq: u64,
    frames: VecDeque<(u64, Bytes)>,
}

impl History {
    /// Empty history of a room life called `epoch`, keeping at most `cap` messages.
    pub fn new(epoch: u64, cap: usize) -> Self {
        History {
            epoch,
            cap,
            max_bytes: usize::MAX,
            bytes: 0,
            last_seq: 0,
            frames: VecDeque::with_capacity(cap.min(16)),
        }
    }

    /// Keeps at most `max_bytes` of messages too (the oldest go first).
    pub fn with_max_bytes(mut self, max_bytes: usize) -> Self {
        self.max_bytes = max_bytes;
        self.trim();
        self
    }

    /// Bytes of the messages held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Drops every held message (the seq keeps counting): a `since` before now is
    /// answered `recovered: false`, never with a partial replay.
    pub fn clear(&mut self) {
        self.frames.clear();
        self.bytes = 0;
    }

    fn trim(&mut self) {
        while self.frames.len() > self.cap || self.bytes > self.max_bytes {
            match self.frames.pop_front() {
                Some((_, f)) => self.bytes -= f.len(),
                None => break,
            }
        }
    }

    /// A history as saved earlier: `frames` oldest first, at most `cap` kept.
    pub fn restore(epoch: u64, cap: usize, last_seq: u64, frames: Vec<(u64, Bytes)>) -> Self {
        let skip = frames.len().saturating_sub(cap);
        let frames: VecDeque<(u64, Bytes)> = frames.into_iter().skip(skip).collect();
        History {
            epoch,
            cap,
            max_bytes: usize::MAX,
            bytes: frames.iter().map(|(_, f)| f.len()).sum(),
            last_seq,
            frames,
        }
    }

    /// The held messages, oldest first.
    pub fn frames(&self) -> impl Iterator<Item = &(u64, Bytes)> {
        self.frames.iter()
    }

    /// The sequence number the next message gets.
    pub fn next_seq(&self) -> u64 {
        self.last_seq + 1
    }

    /// Stores the encoded message `frame`, which must carry [`Self::next_seq`].
    pub fn push(&mut self, frame: Bytes) -> u64 {
        self.last_seq += 1;
        if self.cap > 0 {
            self.bytes += frame.len();
            self.frames.push_back((self.last_seq, frame));
            self.trim();
        }
        self.last_seq
    }

    /// The room's last sequence number (0 before the first message).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// This life of the room's sequence.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Messages after `since`, if they are all still held and from this epoch.
    pub fn recover(&self, since: Option<Since>) -> Recovery {
        let replay = since
            .filter(|s| s.epoch == self.epoch)
            .and_then(|s| self.since(s.seq));
        Recovery {
            epoch: self.epoch,
            last_seq: self.last_seq,
            replay,
        }
    }

    fn since(&self, since: u64) -> Option<Vec<(u64, Bytes)>> {
        if since > self.last_seq {
            return None;
        }
        if since == self.last_seq {
            return Some(Vec::new());
        }
        let oldest = self.frames.front()?.0;
        if since + 1 < oldest {
            return None;
        }
        Some(
            self.frames
                .iter()
                .filter(|(seq, _)| *seq > since)
                .cloned()
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EPOCH: u64 = 7;

    fn at(seq: u64) -> Option<Since> {
        Some(Since { epoch: EPOCH, seq })
    }

    fn filled(cap: usize, n: u64) -> History {
        let mut h = History::new(EPOCH, cap);
        for i in 1..=n {
            assert_eq!(h.next_seq(), i);
            assert_eq!(h.push(Bytes::from(i.to_string())), i);
        }
        h
    }

    fn seqs(r: &Recovery) -> Option<Vec<u64>> {
        r.replay
            .as_ref()
            .map(|v| v.iter().map(|(s, _)| *s).collect())
    }

    #[test]
    fn replays_what_was_missed() {
        let h = filled(3, 5);
        assert_eq!(h.last_seq(), 5);
        assert_eq!(seqs(&h.recover(at(2))), Some(vec![3, 4, 5]));
        assert_eq!(seqs(&h.recover(at(4))), Some(vec![5]));
        assert_eq!(seqs(&h.recover(at(5))), Some(vec![]));
    }

    #[test]
    fn says_when_history_is_gone() {
        let h = filled(3, 5);
        assert_eq!(seqs(&h.recover(at(1))), None, "seq 2 fell out");
        assert_eq!(seqs(&h.recover(at(9))), None, "from another life");
        assert_eq!(seqs(&h.recover(None)), None);
        assert_eq!(h.recover(None).last_seq, 5);
    }

    #[test]
    fn another_epoch_is_not_recovered() {
        let h = filled(10, 5);
        let old = Some(Since { epoch: 6, seq: 3 });
        assert_eq!(seqs(&h.recover(old)), None);
        assert_eq!(h.recover(old).epoch, EPOCH);
    }

    #[test]
    fn restored_history_recovers_and_keeps_counting() {
        let h = filled(3, 5);
        let saved: Vec<_> = h.frames().cloned().collect();
        let mut back = History::restore(EPOCH, 2, h.last_seq(), saved);
        assert_eq!(seqs(&back.recover(at(3))), Some(vec![4, 5]));
        assert_eq!(seqs(&back.recover(at(2))), None, "only 2 kept");
        assert_eq!(back.push(Bytes::new()), 6);
    }

    #[test]
    fn bytes_are_capped_and_evicted_history_is_not_recovered() {
        let mut h = History::new(EPOCH, 100).with_max_bytes(10);
        for _ in 0..4 {
            h.push(Bytes::from_static(b"abcd"));
        }
        assert_eq!(h.bytes(), 8, "two of 4 bytes fit in 10");
        assert_eq!(seqs(&h.recover(at(2))), Some(vec![3, 4]));
        assert_eq!(seqs(&h.recover(at(1))), None, "no partial replay");
        h.clear();
        assert_eq!((h.bytes(), h.last_seq()), (0, 4));
        assert_eq!(seqs(&h.recover(at(3))), None);
        assert_eq!(seqs(&h.recover(at(4))), Some(vec![]));
        assert_eq!(h.push(Bytes::from_static(b"x")), 5);
    }

    #[test]
    fn zero_capacity_keeps_counting() {
        let h = filled(0, 3);
        assert_eq!(h.last_seq(), 3);
        assert_eq!(seqs(&h.recover(at(3))), Some(vec![]));
        assert_eq!(seqs(&h.recover(at(2))), None);
    }

    #[test]
    fn a_new_room_recovers_from_zero() {
        let h = History::new(EPOCH, 10);
        assert_eq!(seqs(&h.recover(at(0))), Some(vec![]));
        let h = filled(10, 2);
        assert_eq!(seqs(&h.recover(at(0))), Some(vec![1, 2]));
    }
}
