//! Revoked access tokens, in memory for the per-request check, persisted by the caller
//! so that a revocation survives a restart.

use std::collections::HashMap;
use std::sync::RwLock;

/// The set of revoked token ids, each kept until its token would have expired anyway.
#[derive(Default)]
pub struct RevocationList {
    inner: RwLock<HashMap<String, i64>>,
}

impl RevocationList {
    pub fn is_revoked(&self, jti: &str) -> bool {
        self.inner
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(jti)
    }

    /// Adds revocations (`jti`, expiry as a Unix time).
    pub fn revoke(&self, entries: impl IntoIterator<Item = (String, i64)>) {
        let mut map = self.inner.write().unwrap_or_else(|p| p.into_inner());
        for (jti, exp) in entries {
            map.insert(jti, exp);
        }
    }

    /// Forgets revocations of tokens that have expired.
    pub fn prune(&self, now: i64) {
        self.inner
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, exp| *exp > now);
    }

    pub fn len(&self) -> usize {
        self.inner.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
