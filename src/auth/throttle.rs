//! Login throttling. Every attempt is admitted (and counted) before its password is hashed,
//! so concurrent attempts cannot overtake the limit:
//! - per (username, address): `max_failures` attempts per window, so a guesser on one
//!   address never locks the user out on other addresses; a successful login clears it;
//! - per address: [`ADDRESS_FACTOR`] times as many, across all usernames;
//! - per address, at most `SPOTTER_LOGIN_MAX_CONCURRENT_PER_ADDR` attempts in flight at
//!   once (a gym's members behind one NAT log in at the start of a class: not too few).
//!
//! An attempt counts as a failure unless its outcome says otherwise: a success or an
//! outcome that was not a wrong password (inactive account, storage down) gives it back.
//! An attempt whose request was dropped midway (client gone) stays counted, so hanging up
//! early never buys free guesses. Both maps are bounded: past [`MAX_KEYS`], expired
//! windows are swept out, then idle ones.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Most keys tracked per map before expired windows are swept out.
const MAX_KEYS: usize = 100_000;
/// An address may fail this many times more often than one (username, address).
pub const ADDRESS_FACTOR: u32 = 5;

#[derive(Clone, Copy)]
struct Window {
    started: Instant,
    attempts: u32,
    in_flight: u32,
}

impl Window {
    fn new() -> Window {
        Window {
            started: Instant::now(),
            attempts: 0,
            in_flight: 0,
        }
    }

    /// Starts a new window when the current one is over (attempts in flight stay).
    fn roll(&mut self, window: Duration) {
        if self.started.elapsed() >= window {
            self.started = Instant::now();
            self.attempts = 0;
        }
    }

    fn idle(&self, window: Duration) -> bool {
        self.in_flight == 0 && self.started.elapsed() >= window
    }
}

#[derive(Default)]
struct Maps {
    by_user_addr: HashMap<(String, String), Window>,
    by_addr: HashMap<String, Window>,
}

/// Why an attempt was refused before hashing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Too many failed attempts in the window.
    TooManyFailures,
    /// Too many attempts running at once from this address.
    TooManyAtOnce,
}

/// Counts login attempts; see the module docs.
pub struct LoginThrottle {
    max_failures: u32,
    window: Duration,
    /// Password hashes one address may have running at once; more get 429 at once.
    max_in_flight: u32,
    maps: Mutex<Maps>,
}

fn bound<K: Clone + Eq + std::hash::Hash>(map: &mut HashMap<K, Window>, window: Duration) {
    if map.len() >= MAX_KEYS {
        map.retain(|_, w| !w.idle(window));
        if map.len() >= MAX_KEYS {
            // Only windows with attempts in flight are kept when even that is not enough.
            map.retain(|_, w| w.in_flight > 0);
        }
    }
}

impl LoginThrottle {
    pub fn new(max_failures: u32, window: Duration, max_in_flight: u32) -> LoginThrottle {
        LoginThrottle {
            max_failures,
            window,
            max_in_flight,
            maps: Mutex::new(Maps::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Maps> {
        self.maps.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admits one attempt of `username` from `addr`, counted at once; refused when the
    /// address has too many attempts running or either count has reached its limit.
    pub fn admit(&self, username: &str, addr: &str) -> Result<LoginAttempt<'_>, Refusal> {
        let key = (username.to_lowercase(), addr.to_string());
        let mut maps = self.lock();
        let maps = &mut *maps;
        let addr_limit = self.max_failures.saturating_mul(ADDRESS_FACTOR);
        let mut by_addr = maps.by_addr.get(addr).copied().unwrap_or_else(Window::new);
        by_addr.roll(self.window);
        let mut by_user = maps
            .by_user_addr
            .get(&key)
            .copied()
            .unwrap_or_else(Window::new);
        by_user.roll(self.window);
        if by_addr.in_flight >= self.max_in_flight {
            return Err(Refusal::TooManyAtOnce);
        }
        if by_addr.attempts >= addr_limit || by_user.attempts >= self.max_failures {
            return Err(Refusal::TooManyFailures);
        }
        by_addr.attempts += 1;
        by_addr.in_flight += 1;
        by_user.attempts += 1;
        bound(&mut maps.by_addr, self.window);
        bound(&mut maps.by_user_addr, self.window);
        maps.by_addr.insert(addr.to_string(), by_addr);
        maps.by_user_addr.insert(key.clone(), by_user);
        Ok(LoginAttempt {
            throttle: self,
            key,
            outcome: Outcome::Failed,
        })
    }

    /// Ends an attempt: it is no longer in flight, and its counts follow the outcome.
    fn settle(&self, key: &(String, String), outcome: Outcome) {
        let mut maps = self.lock();
        if let Some(w) = maps.by_addr.get_mut(&key.1) {
            w.in_flight = w.in_flight.saturating_sub(1);
            if outcome != Outcome::Failed {
                w.attempts = w.attempts.saturating_sub(1);
            }
        }
        match outcome {
            Outcome::Failed => {}
            Outcome::Succeeded => {
                maps.by_user_addr.remove(key);
            }
            Outcome::NotAGuess => {
                if let Some(w) = maps.by_user_addr.get_mut(key) {
                    w.attempts = w.attempts.saturating_sub(1);
                }
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Failed,
    Succeeded,
    NotAGuess,
}

/// One admitted login attempt. Dropped without an outcome, it counts as a failure.
pub struct LoginAttempt<'a> {
    throttle: &'a LoginThrottle,
    key: (String, String),
    outcome: Outcome,
}

impl LoginAttempt<'_> {
    /// The password was right: the (username, address) count starts again, and the
    /// attempt does not count against the address.
    pub fn succeeded(mut self) {
        self.outcome = Outcome::Succeeded;
    }

    /// The attempt ended without telling a guess right or wrong (storage unavailable,
    /// …): it is given back.
    pub fn not_a_guess(mut self) {
        self.outcome = Outcome::NotAGuess;
    }
}

impl Drop for LoginAttempt<'_> {
    fn drop(&mut self) {
        self.throttle.settle(&self.key, self.outcome);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IN_FLIGHT: u32 = 4;

    fn throttle(max: u32) -> LoginThrottle {
        LoginThrottle::new(max, Duration::from_secs(300), IN_FLIGHT)
    }

    #[test]
    fn attempts_count_before_they_end() {
        let t = throttle(3);
        let a: Vec<_> = (0..3).map(|_| t.admit("Ann", "1.1.1.1").unwrap()).collect();
        assert_eq!(
            t.admit("ann", "1.1.1.1").err(),
            Some(Refusal::TooManyFailures),
            "in-flight attempts count, case-insensitively"
        );
        drop(a);
        assert_eq!(
            t.admit("ann", "1.1.1.1").err(),
            Some(Refusal::TooManyFailures)
        );
        // Another address is not locked out, and a success there clears only its count.
        t.admit("ann", "2.2.2.2").unwrap().succeeded();
        assert!(t.admit("ann", "1.1.1.1").is_err());
    }

    #[test]
    fn success_and_non_guesses_give_the_attempt_back() {
        let t = throttle(2);
        drop(t.admit("ann", "a").unwrap());
        t.admit("ann", "a").unwrap().succeeded();
        drop(t.admit("ann", "a").unwrap());
        t.admit("ann", "a").unwrap().not_a_guess();
        drop(t.admit("ann", "a").unwrap());
        assert!(t.admit("ann", "a").is_err());
    }

    #[test]
    fn hashes_in_flight_per_address_are_bounded() {
        let t = throttle(100);
        let held: Vec<_> = (0..IN_FLIGHT)
            .map(|i| t.admit(&format!("u{i}"), "a").unwrap())
            .collect();
        assert_eq!(t.admit("v", "a").err(), Some(Refusal::TooManyAtOnce));
        assert!(t.admit("v", "b").is_ok());
        drop(held);
        assert!(t.admit("v", "a").is_ok());
    }

    #[test]
    fn an_address_is_limited_across_usernames() {
        let t = throttle(2);
        for i in 0..2 * ADDRESS_FACTOR {
            drop(t.admit(&format!("u{i}"), "a").unwrap());
        }
        assert_eq!(t.admit("fresh", "a").err(), Some(Refusal::TooManyFailures));
    }

    #[test]
    fn windows_end() {
        let t = LoginThrottle::new(1, Duration::from_millis(50), IN_FLIGHT);
        drop(t.admit("ann", "a").unwrap());
        assert!(t.admit("ann", "a").is_err());
        std::thread::sleep(Duration::from_millis(60));
        assert!(t.admit("ann", "a").is_ok());
    }
}
