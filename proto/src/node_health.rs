//! FO node health as automatic failover and failback see it: whether a node is up,
//! since when, and whether it is flapping (going down again and again), so that
//! banks are not bounced between nodes by an unstable link.
//!
//! Sans-IO: the driver reports link changes with `now` and asks questions with
//! `now`; tests use virtual time.
//!
//! A node is *flapping* while it went down at least `max_downs` times within the
//! last `window`. Failback to a node is allowed only once it has been up, without
//! a break, for `failback_after`, and is not flapping.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// When a node counts as flapping and when it is stable enough to fail back to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlapPolicy {
    /// How far back down events are counted.
    pub window: Duration,
    /// Down events within `window` that make the node flapping.
    pub max_downs: usize,
    /// How long a node must have been up before banks fail back to it.
    pub failback_after: Duration,
}

impl Default for FlapPolicy {
    fn default() -> Self {
        Self { window: Duration::from_secs(300), max_downs: 3, failback_after: Duration::from_secs(30) }
    }
}

/// One node's link history.
#[derive(Debug, Clone, Default)]
pub struct NodeHealth {
    up_since: Option<Instant>,
    downs: VecDeque<Instant>,
    total_downs: u64,
}

impl NodeHealth {
    /// A node whose link has not come up yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The link came up or went down. Repeated reports of the same state change
    /// nothing (`up_since` keeps the first). Returns whether the state changed.
    pub fn link(&mut self, now: Instant, up: bool, policy: &FlapPolicy) -> bool {
        match (up, self.up_since) {
            (true, None) => self.up_since = Some(now),
            (false, Some(_)) => {
                self.up_since = None;
                self.downs.push_back(now);
                self.total_downs += 1;
            }
            _ => return false,
        }
        self.forget(now, policy);
        true
    }

    /// We closed the link ourselves (a standby appliance talks to no node): the
    /// node is not up for us, but it did not fail, so nothing counts against it.
    pub fn closed_by_us(&mut self) {
        self.up_since = None;
    }

    /// Whether the node went down at `since` or later (within the policy window).
    pub fn down_since(&self, since: Instant) -> bool {
        self.downs.back().is_some_and(|&t| t >= since)
    }

    fn forget(&mut self, now: Instant, policy: &FlapPolicy) {
        while self.downs.front().is_some_and(|&t| now.saturating_duration_since(t) > policy.window) {
            self.downs.pop_front();
        }
    }

    /// Whether the link is up.
    pub fn is_up(&self) -> bool {
        self.up_since.is_some()
    }

    /// How long the link has been up, if it is.
    pub fn up_for(&self, now: Instant) -> Option<Duration> {
        self.up_since.map(|t| now.saturating_duration_since(t))
    }

    /// Down events within the policy window before `now`.
    pub fn recent_downs(&self, now: Instant, policy: &FlapPolicy) -> usize {
        self.downs.iter().filter(|&&t| now.saturating_duration_since(t) <= policy.window).count()
    }

    /// Down events since start.
    pub fn total_downs(&self) -> u64 {
        self.total_downs
    }

    /// Whether the node went down `max_downs` times or more within the window.
    pub fn is_flapping(&self, now: Instant, policy: &FlapPolicy) -> bool {
        self.recent_downs(now, policy) >= policy.max_downs
    }

    /// Whether banks may fail back to the node now: up for `failback_after`
    /// without a break, and not flapping.
    pub fn failback_ready(&self, now: Instant, policy: &FlapPolicy) -> bool {
        self.up_for(now).is_some_and(|d| d >= policy.failback_after) && !self.is_flapping(now, policy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> FlapPolicy {
        FlapPolicy { window: Duration::from_secs(60), max_downs: 3, failback_after: Duration::from_secs(10) }
    }

    #[test]
    fn a_link_we_closed_is_not_a_failure() {
        let p = policy();
        let t0 = Instant::now();
        let mut h = NodeHealth::new();
        h.link(t0, true, &p);
        h.closed_by_us();
        assert!(!h.is_up());
        assert_eq!((h.total_downs(), h.recent_downs(t0, &p)), (0, 0));
        assert!(!h.down_since(t0));
        assert!(h.link(t0 + Duration::from_secs(1), true, &p), "it comes up again");
        h.link(t0 + Duration::from_secs(2), false, &p);
        assert!(h.down_since(t0 + Duration::from_secs(2)) && !h.down_since(t0 + Duration::from_secs(3)));
    }

    #[test]
    fn failback_waits_for_a_stable_link() {
        let p = policy();
        let t0 = Instant::now();
        let mut h = NodeHealth::new();
        assert!(!h.failback_ready(t0, &p));
        assert!(h.link(t0, true, &p));
        assert!(!h.link(t0 + Duration::from_secs(1), true, &p), "a repeated up changes nothing");
        assert!(!h.failback_ready(t0 + Duration::from_secs(9), &p));
        assert!(h.failback_ready(t0 + Duration::from_secs(10), &p));
        h.link(t0 + Duration::from_secs(11), false, &p);
        h.link(t0 + Duration::from_secs(12), true, &p);
        assert!(!h.failback_ready(t0 + Duration::from_secs(21), &p), "the clock restarts at each up");
        assert!(h.failback_ready(t0 + Duration::from_secs(22), &p));
    }

    #[test]
    fn a_node_that_keeps_going_down_is_flapping_until_the_window_passes() {
        let p = policy();
        let t0 = Instant::now();
        let mut h = NodeHealth::new();
        for i in 0..3 {
            h.link(t0 + Duration::from_secs(i * 2), true, &p);
            h.link(t0 + Duration::from_secs(i * 2 + 1), false, &p);
        }
        h.link(t0 + Duration::from_secs(6), true, &p);
        let later = t0 + Duration::from_secs(30);
        assert!(h.is_flapping(later, &p));
        assert!(!h.failback_ready(later, &p), "up for long enough, but flapping");
        assert_eq!((h.recent_downs(later, &p), h.total_downs()), (3, 3));
        // The first down (t0+1s) leaves the window at t0+61s.
        let calm = t0 + Duration::from_secs(62);
        assert!(!h.is_flapping(calm, &p));
        assert!(h.failback_ready(calm, &p));
    }
}
