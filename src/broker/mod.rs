//! The broker: every room event and every cross-instance control message goes through it,
//! so that moving from one instance to several changes no call site. The in-process broker
//! hands events to this instance's hub; a Redis broker (PROTOCOL §1, `SPOTTER_REDIS_URL`)
//! would publish them to the other instances as well and deliver locally on receipt.

pub mod memory;

use futures_util::future::BoxFuture;

use crate::realtime::hub::{CloseTokens, CloseUser, Deliver, RecheckUser};

/// One event for every instance's hub.
#[derive(Debug, Clone)]
pub enum BrokerEvent {
    Deliver(Deliver),
    CloseUser(CloseUser),
    CloseTokens(CloseTokens),
    RecheckUser(RecheckUser),
}

/// Publishes events to every instance (this one included).
pub trait Broker: Send + Sync {
    /// Queues the event in publishing order; the future resolves once it is accepted and
    /// waits only while the bounded queue is full.
    fn publish(&self, event: BrokerEvent) -> BoxFuture<'static, ()>;
}
