//! The event queue: events ordered by `(virtual time, sequence number)`.
//!
//! The sequence number is assigned at push time and only grows, so two events due at the same
//! millisecond come out in the order they were scheduled: the order never depends on anything
//! but the run itself (no hash order, no allocation addresses).

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use crate::consensus::Millis;

struct Entry<E> {
    at: Millis,
    seq: u64,
    event: E,
}

impl<E> PartialEq for Entry<E> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl<E> Eq for Entry<E> {}

impl<E> PartialOrd for Entry<E> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<E> Ord for Entry<E> {
    // Reversed: `BinaryHeap` is a max-heap and we want the earliest `(at, seq)` first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// A priority queue of events by `(time, sequence number)`.
pub struct EventQueue<E> {
    heap: BinaryHeap<Entry<E>>,
    next_seq: u64,
}

impl<E> Default for EventQueue<E> {
    fn default() -> Self {
        EventQueue {
            heap: BinaryHeap::new(),
            next_seq: 0,
        }
    }
}

impl<E> EventQueue<E> {
    /// An empty queue.
    pub fn new() -> EventQueue<E> {
        EventQueue::default()
    }

    /// Schedules `event` at `at`; returns its sequence number.
    pub fn push(&mut self, at: Millis, event: E) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.heap.push(Entry { at, seq, event });
        seq
    }

    /// Removes and returns the earliest event as `(time, sequence number, event)`.
    pub fn pop(&mut self) -> Option<(Millis, u64, E)> {
        self.heap.pop().map(|e| (e.at, e.seq, e.event))
    }

    /// The time of the earliest event.
    pub fn peek_time(&self) -> Option<Millis> {
        self.heap.peek().map(|e| e.at)
    }

    /// Number of pending events.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether no event is pending.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Events pushed so far (the next sequence number).
    pub fn pushed(&self) -> u64 {
        self.next_seq
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_by_time_then_by_push_order() {
        let mut q = EventQueue::new();
        q.push(10, "c");
        q.push(5, "a");
        q.push(10, "d");
        q.push(5, "b");
        q.push(0, "first");
        assert_eq!(q.len(), 5);
        assert_eq!(q.peek_time(), Some(0));
        let order: Vec<_> = std::iter::from_fn(|| q.pop()).map(|(_, _, e)| e).collect();
        assert_eq!(order, vec!["first", "a", "b", "c", "d"]);
        assert!(q.is_empty());
        assert_eq!(q.pushed(), 5);
    }

    #[test]
    fn same_time_events_keep_fifo_order_at_scale() {
        let mut q = EventQueue::new();
        for i in 0..1000u32 {
            q.push(u64::from(i % 7), i);
        }
        let mut last = (0u64, 0u64);
        let mut n = 0;
        while let Some((at, seq, i)) = q.pop() {
            assert!((at, seq) > last || n == 0);
            assert_eq!(u64::from(i % 7), at);
            last = (at, seq);
            n += 1;
        }
        assert_eq!(n, 1000);
    }
}
