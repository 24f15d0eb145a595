//! Presence transitions waiting for the database, bounded during an outage.
//!
//! While writes succeed, every transition is kept and logged in order. Once a write fails
//! the database is taken to be down: from then on each user keeps one pending row, their
//! latest transition, counting how many transitions it stands for (`coalesced`), so the
//! buffer holds at most one row per user however long the outage lasts. The first write
//! that succeeds ends the outage. Rows carry the order they happened in (`seq`), so a batch
//! that comes back after newer ones were taken is put back in its place, and the latest
//! transition of a user always wins.

use std::collections::HashMap;

use crate::db::users::PresenceWrite;
use crate::db::UserId;

/// Transitions not yet written to `presence_log`.
#[derive(Debug, Default)]
pub struct PendingTransitions {
    rows: Vec<PresenceWrite>,
    /// During an outage: where each user's one row is in `rows`.
    index: HashMap<UserId, usize>,
    /// True from a failed write until a write succeeds.
    coalescing: bool,
}

impl PendingTransitions {
    /// Adds a transition: appended normally, merged into the user's row during an outage.
    /// Pushes come in `seq` order, except through [`requeue`](Self::requeue), which sorts.
    pub fn push(&mut self, w: PresenceWrite) {
        if !self.coalescing {
            self.rows.push(w);
            return;
        }
        match self.index.get(&w.user_id) {
            Some(&i) => {
                let row = &mut self.rows[i];
                let coalesced = row.coalesced.saturating_add(w.coalesced.max(1));
                if w.seq >= row.seq {
                    *row = PresenceWrite { coalesced, ..w };
                } else {
                    row.coalesced = coalesced;
                }
            }
            None => {
                self.index.insert(w.user_id, self.rows.len());
                self.rows.push(w);
            }
        }
    }

    /// Takes every pending row for a write.
    pub fn take(&mut self) -> Vec<PresenceWrite> {
        self.index.clear();
        std::mem::take(&mut self.rows)
    }

    /// A write of `failed` did not happen: they go back in front of what came since, and
    /// from now on each user keeps one row until a write succeeds.
    pub fn requeue(&mut self, failed: Vec<PresenceWrite>) {
        let mut all = self.take();
        all.extend(failed);
        all.sort_by_key(|w| w.seq);
        self.coalescing = true;
        for w in all {
            self.push(w);
        }
    }

    /// A write succeeded: the database is back, transitions are logged one by one again.
    pub fn write_succeeded(&mut self) {
        if self.coalescing {
            self.coalescing = false;
            self.index.clear();
        }
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Whether transitions are being merged (the last write failed).
    pub fn coalescing(&self) -> bool {
        self.coalescing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(user: i64, online: bool, reason: &'static str, second: u32) -> PresenceWrite {
        use std::sync::atomic::{AtomicU64, Ordering};
        static SEQ: AtomicU64 = AtomicU64::new(0);
        PresenceWrite {
            seq: SEQ.fetch_add(1, Ordering::Relaxed),
            user_id: UserId(user),
            is_online: online,
            last_seen: chrono::NaiveDate::from_ymd_opt(2026, 1, 1)
                .unwrap()
                .and_hms_opt(0, 0, second)
                .unwrap(),
            reason: Some(reason),
            coalesced: 1,
        }
    }

    #[test]
    fn keeps_every_transition_while_writes_succeed() {
        let mut p = PendingTransitions::default();
        for i in 0..10 {
            p.push(w(1, i % 2 == 0, "heartbeat", i));
        }
        assert_eq!(p.len(), 10);
        assert!(p.take().iter().all(|r| r.coalesced == 1));
    }

    #[test]
    fn an_outage_keeps_one_row_per_user_with_the_count() {
        let mut p = PendingTransitions::default();
        p.push(w(1, true, "login", 0));
        p.push(w(2, true, "login", 1));
        let failed = p.take();
        // Meanwhile, before the failure is known:
        p.push(w(1, false, "timeout", 2));
        p.requeue(failed);
        assert!(p.coalescing());
        assert_eq!(p.len(), 2);
        // Thousands of flips during the outage stay two rows.
        for i in 0..10_000u32 {
            p.push(w(
                1,
                i % 2 == 1,
                if i % 2 == 1 { "heartbeat" } else { "timeout" },
                3 + i % 50,
            ));
            p.push(w(2, i % 2 == 0, "socket", 3 + i % 50));
        }
        assert_eq!(p.len(), 2);
        let rows = p.take();
        let one = rows.iter().find(|r| r.user_id == UserId(1)).unwrap();
        let two = rows.iter().find(|r| r.user_id == UserId(2)).unwrap();
        assert_eq!(one.coalesced, 2 + 10_000);
        assert_eq!(two.coalesced, 1 + 10_000);
        // The latest state and reason win (the last flip, i = 9999, brought user 1 online).
        assert!(one.is_online);
        assert_eq!(one.reason, Some("heartbeat"));
        assert!(!two.is_online);
        assert_eq!(two.reason, Some("socket"));
    }

    #[test]
    fn a_failed_retry_adds_up_and_success_ends_the_outage() {
        let mut p = PendingTransitions::default();
        p.push(w(1, true, "login", 0));
        let failed = p.take();
        p.requeue(failed);
        p.push(w(1, false, "logout", 1));
        let failed = p.take();
        p.push(w(1, true, "login", 2));
        p.requeue(failed);
        assert_eq!(p.len(), 1);
        let rows = p.take();
        assert_eq!(rows[0].coalesced, 3);
        assert_eq!(rows[0].reason, Some("login"));
        p.write_succeeded();
        p.push(w(1, false, "logout", 3));
        p.push(w(1, true, "login", 4));
        assert_eq!(
            p.len(),
            2,
            "after the outage every transition is logged again"
        );
    }

    #[test]
    fn batches_that_fail_out_of_order_go_back_in_order() {
        let mut p = PendingTransitions::default();
        p.push(w(1, true, "login", 0));
        let older = p.take();
        p.push(w(1, false, "logout", 1));
        let newer = p.take();
        p.push(w(1, true, "heartbeat", 2));
        // The newer batch fails first, then the older one.
        p.requeue(newer);
        p.requeue(older);
        let rows = p.take();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].coalesced, 3);
        assert_eq!(
            rows[0].reason,
            Some("heartbeat"),
            "the latest transition wins"
        );
        assert!(rows[0].is_online);
        // Two users: each keeps their own latest.
        let mut p = PendingTransitions::default();
        p.push(w(2, true, "login", 0));
        p.push(w(3, true, "login", 0));
        let a = p.take();
        p.push(w(2, false, "logout", 1));
        let b = p.take();
        p.requeue(b);
        p.requeue(a);
        let rows = p.take();
        let two = rows.iter().find(|r| r.user_id == UserId(2)).unwrap();
        let three = rows.iter().find(|r| r.user_id == UserId(3)).unwrap();
        assert_eq!((two.reason, two.coalesced), (Some("logout"), 2));
        assert_eq!((three.reason, three.coalesced), (Some("login"), 1));
    }
}
