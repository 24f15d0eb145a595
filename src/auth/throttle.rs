//! Login throttling: failed logins counted per username and per client address in a
//! fixed window. Both maps are bounded: past the bound, the oldest windows are dropped.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most keys tracked per map before expired windows are swept out.
const MAX_KEYS: usize = 100_000;
/// An address may fail this many times more often than one username.
const ADDRESS_FACTOR: u32 = 5;

struct Window {
    started: Instant,
    failures: u32,
}

/// Counts failures; `check` says whether another attempt is allowed now.
pub struct LoginThrottle {
    max_failures: u32,
    window: Duration,
    by_user: Mutex<HashMap<String, Window>>,
    by_addr: Mutex<HashMap<String, Window>>,
}

impl LoginThrottle {
    pub fn new(max_failures: u32, window: Duration) -> LoginThrottle {
        LoginThrottle {
            max_failures,
            window,
            by_user: Mutex::new(HashMap::new()),
            by_addr: Mutex::new(HashMap::new()),
        }
    }

    fn blocked(&self, map: &Mutex<HashMap<String, Window>>, key: &str, limit: u32) -> bool {
        let map = map.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(key) {
            Some(w) => w.started.elapsed() < self.window && w.failures >= limit,
            None => false,
        }
    }

    fn bump(&self, map: &Mutex<HashMap<String, Window>>, key: &str) {
        let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_KEYS {
            let window = self.window;
            map.retain(|_, w| w.started.elapsed() < window);
            if map.len() >= MAX_KEYS {
                map.clear();
            }
        }
        let w = map.entry(key.to_string()).or_insert(Window {
            started: Instant::now(),
            failures: 0,
        });
        if w.started.elapsed() >= self.window {
            w.started = Instant::now();
            w.failures = 0;
        }
        w.failures += 1;
    }

    /// True when this username or address has failed too often in the current window.
    pub fn is_blocked(&self, username: &str, addr: &str) -> bool {
        self.blocked(&self.by_user, &username.to_lowercase(), self.max_failures)
            || self.blocked(&self.by_addr, addr, self.max_failures * ADDRESS_FACTOR)
    }

    pub fn record_failure(&self, username: &str, addr: &str) {
        self.bump(&self.by_user, &username.to_lowercase());
        self.bump(&self.by_addr, addr);
    }

    /// A successful login clears the username's count (not the address's).
    pub fn record_success(&self, username: &str) {
        self.by_user
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&username.to_lowercase());
    }
}
