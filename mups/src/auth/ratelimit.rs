//! Login throttling, per source address and per account name.
//!
//! - **Per source address**: a token bucket of [`LimitConfig::ip_burst`] failed attempts that
//!   refills one every [`LimitConfig::ip_refill`]. It stops one address from trying many accounts
//!   (password spraying) and from making us run argon2 without end.
//! - **Per account name**: the first [`LimitConfig::account_free_failures`] consecutive failures
//!   cost nothing; after that, each further attempt must wait `account_base_delay · 2^(n-free-1)`,
//!   capped at `account_max_delay`. It stops guessing one account's password from many
//!   addresses. A backoff rather than a hard lockout, so an attacker cannot lock an admin out for
//!   good, only slow their logins down; a success clears it.
//!
//! Only failures count, and both limits are checked before the password is verified, so a
//! throttled attempt costs no argon2 run. Names are keyed as given, whether or not the user
//! exists, so throttling does not reveal which accounts exist. Both tables are bounded in size.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use time::OffsetDateTime;

/// Limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitConfig {
    /// Failed attempts one address may make at once.
    pub ip_burst: u32,
    /// One more attempt is allowed per address every this long.
    pub ip_refill: Duration,
    /// Consecutive failures on an account before backoff begins.
    pub account_free_failures: u32,
    /// First backoff delay.
    pub account_base_delay: Duration,
    /// Longest backoff delay.
    pub account_max_delay: Duration,
    /// Most addresses and names tracked each; beyond it, the stalest entries are forgotten.
    pub max_entries: usize,
}

impl Default for LimitConfig {
    fn default() -> Self {
        Self {
            ip_burst: 10,
            ip_refill: Duration::from_secs(6),
            account_free_failures: 5,
            account_base_delay: Duration::from_secs(1),
            account_max_delay: Duration::from_secs(15 * 60),
            max_entries: 10_000,
        }
    }
}

/// An attempt may not be made yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    /// How long until it may.
    pub retry_after: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Attempts available, in units of 1/1000 to refill smoothly.
    milli_tokens: u64,
    at: OffsetDateTime,
}

#[derive(Debug, Clone, Copy)]
struct Backoff {
    failures: u32,
    last: OffsetDateTime,
}

/// The limiter's state.
#[derive(Debug, Default)]
pub struct LoginLimiter {
    cfg: LimitConfig,
    ips: HashMap<IpAddr, Bucket>,
    accounts: HashMap<String, Backoff>,
}

impl LoginLimiter {
    /// A limiter with no history.
    pub fn new(cfg: LimitConfig) -> Self {
        Self { cfg, ips: HashMap::new(), accounts: HashMap::new() }
    }

    fn bucket(&self, ip: IpAddr, now: OffsetDateTime) -> Bucket {
        let full = u64::from(self.cfg.ip_burst) * 1000;
        match self.ips.get(&ip) {
            None => Bucket { milli_tokens: full, at: now },
            Some(b) => {
                let elapsed = (now - b.at).max(time::Duration::ZERO).unsigned_abs();
                let refill = self.cfg.ip_refill.as_millis().max(1);
                let gained = (elapsed.as_millis() * 1000 / refill).min(u128::from(full)) as u64;
                Bucket { milli_tokens: (b.milli_tokens + gained).min(full), at: now }
            }
        }
    }

    fn account_delay(&self, failures: u32) -> Duration {
        let over = failures.saturating_sub(self.cfg.account_free_failures);
        if over == 0 {
            return Duration::ZERO;
        }
        let factor = 1u32.checked_shl(over - 1).unwrap_or(u32::MAX);
        self.cfg.account_base_delay.saturating_mul(factor).min(self.cfg.account_max_delay)
    }

    /// Whether a login from `ip` for `account` may be tried at `now`.
    pub fn check(&self, ip: Option<IpAddr>, account: &str, now: OffsetDateTime) -> Result<(), Limited> {
        let mut wait = Duration::ZERO;
        if let Some(ip) = ip {
            let b = self.bucket(ip, now);
            if b.milli_tokens < 1000 {
                let missing = 1000 - b.milli_tokens;
                wait = wait.max(self.cfg.ip_refill.mul_f64(missing as f64 / 1000.0));
            }
        }
        if let Some(a) = self.accounts.get(account) {
            let ready = a.last + self.account_delay(a.failures);
            if ready > now {
                wait = wait.max((ready - now).unsigned_abs());
            }
        }
        if wait.is_zero() { Ok(()) } else { Err(Limited { retry_after: wait.max(Duration::from_secs(1)) }) }
    }

    /// Records a failed attempt.
    pub fn failure(&mut self, ip: Option<IpAddr>, account: &str, now: OffsetDateTime) {
        if let Some(ip) = ip {
            let mut b = self.bucket(ip, now);
            b.milli_tokens = b.milli_tokens.saturating_sub(1000);
            self.ips.insert(ip, b);
        }
        let a = self.accounts.entry(account.to_owned()).or_insert(Backoff { failures: 0, last: now });
        a.failures = a.failures.saturating_add(1);
        a.last = now;
        self.bound(now);
    }

    /// Records a successful login: the account's backoff is cleared. The address keeps its
    /// bucket: one good password must not buy a sprayer a fresh burst.
    pub fn success(&mut self, account: &str) {
        self.accounts.remove(account);
    }

    fn bound(&mut self, now: OffsetDateTime) {
        let cfg = self.cfg;
        if self.ips.len() > cfg.max_entries {
            let full_after = cfg.ip_refill.saturating_mul(cfg.ip_burst);
            self.ips.retain(|_, b| (now - b.at).unsigned_abs() < full_after);
            evict_oldest(&mut self.ips, cfg.max_entries, |b| b.at);
        }
        if self.accounts.len() > cfg.max_entries {
            // Entries with no active backoff and no failures for an hour are history.
            self.accounts.retain(|_, a| (now - a.last).unsigned_abs() < Duration::from_secs(3600));
            evict_oldest(&mut self.accounts, cfg.max_entries, |a| a.last);
        }
    }
}

fn evict_oldest<K: Clone + Eq + std::hash::Hash, V>(
    map: &mut HashMap<K, V>,
    max: usize,
    at: impl Fn(&V) -> OffsetDateTime,
) {
    if map.len() <= max {
        return;
    }
    let mut ages: Vec<(OffsetDateTime, K)> = map.iter().map(|(k, v)| (at(v), k.clone())).collect();
    ages.sort_by_key(|(t, _)| *t);
    for (_, k) in ages.into_iter().take(map.len() - max) {
        map.remove(&k);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::testutil::ManualClock;

    const SEC: Duration = Duration::from_secs(1);

    fn ip(n: u8) -> Option<IpAddr> {
        Some(IpAddr::from([192, 0, 2, n]))
    }

    #[test]
    fn an_address_gets_a_burst_then_one_attempt_per_refill() {
        let clock = ManualClock::new();
        let mut l = LoginLimiter::new(LimitConfig::default());
        for i in 0..10 {
            // Different accounts: spraying.
            let name = format!("user{i}");
            assert_eq!(l.check(ip(1), &name, clock.now()), Ok(()));
            l.failure(ip(1), &name, clock.now());
        }
        assert_eq!(l.check(ip(1), "another", clock.now()), Err(Limited { retry_after: 6 * SEC }));
        assert_eq!(l.check(ip(2), "another", clock.now()), Ok(()), "other addresses are unaffected");
        clock.advance(3 * SEC);
        assert_eq!(l.check(ip(1), "another", clock.now()), Err(Limited { retry_after: 3 * SEC }));
        clock.advance(3 * SEC);
        assert_eq!(l.check(ip(1), "another", clock.now()), Ok(()));
    }

    #[test]
    fn an_account_backs_off_exponentially_from_any_address_and_success_clears_it() {
        let clock = ManualClock::new();
        let mut l = LoginLimiter::new(LimitConfig::default());
        for n in 0..5 {
            assert_eq!(l.check(ip(n), "alice", clock.now()), Ok(()));
            l.failure(ip(n), "alice", clock.now());
        }
        // Sixth failure onwards: 1 s, 2 s, 4 s, ...
        assert_eq!(l.check(ip(50), "alice", clock.now()), Ok(()));
        l.failure(ip(50), "alice", clock.now());
        assert_eq!(l.check(ip(51), "alice", clock.now()), Err(Limited { retry_after: SEC }));
        clock.advance(SEC);
        l.failure(ip(51), "alice", clock.now());
        assert_eq!(l.check(ip(52), "alice", clock.now()), Err(Limited { retry_after: 2 * SEC }));
        clock.advance(2 * SEC);
        l.failure(ip(52), "alice", clock.now());
        assert_eq!(l.check(ip(53), "alice", clock.now()), Err(Limited { retry_after: 4 * SEC }));
        assert_eq!(l.check(ip(53), "bob", clock.now()), Ok(()));
        l.success("alice");
        assert_eq!(l.check(ip(53), "alice", clock.now()), Ok(()));
    }

    #[test]
    fn backoff_is_capped() {
        let clock = ManualClock::new();
        let mut l = LoginLimiter::new(LimitConfig::default());
        for _ in 0..100 {
            l.failure(None, "alice", clock.now());
        }
        assert_eq!(l.check(None, "alice", clock.now()), Err(Limited { retry_after: 15 * 60 * SEC }));
    }

    #[test]
    fn tables_are_bounded() {
        let clock = ManualClock::new();
        let mut l = LoginLimiter::new(LimitConfig { max_entries: 8, ..LimitConfig::default() });
        for i in 0..100u8 {
            clock.advance(SEC);
            l.failure(ip(i), &format!("u{i}"), clock.now());
        }
        assert!(l.ips.len() <= 8 && l.accounts.len() <= 8);
        // The most recent are the ones kept.
        assert!(l.accounts.contains_key("u99"));
    }
}
