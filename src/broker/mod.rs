//! The broker: every domain event goes through it ([`Event`]), so that moving from one
//! instance to several changes no call site. The in-process broker ([`memory`]) hands
//! events to this instance's hub; the Redis broker ([`redis`]) does the same and also
//! publishes them to the other instances, whose events it hands to [`crate::cluster`].

pub mod memory;
pub mod redis;

use std::sync::Arc;

use actix::prelude::*;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;

use crate::domain::events::{Envelope, Event, InstanceId};

/// An event for this instance's hub (published here or by another instance).
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct Incoming(pub Arc<Envelope>);

/// Publishes events to every instance (this one included).
pub trait Broker: Send + Sync {
    /// This instance.
    fn instance(&self) -> InstanceId;

    /// Queues the event in publishing order: this instance's hub gets it at once (except
    /// presence facts, which are for the other instances), the other instances through
    /// the network. The future resolves once it is accepted and waits only while the
    /// hub's bounded mailbox is full; it never waits on the network.
    fn publish(&self, event: Event) -> BoxFuture<'static, ()>;

    /// Whether events reach the other instances now (`/readyz`): `Err` says why not.
    fn check(&self) -> BoxFuture<'static, Result<(), String>>;

    /// "memory" or "redis".
    fn name(&self) -> &'static str;

    /// The other instances' events, in the order received, for the one consumer that
    /// applies them (`crate::cluster`); `None` with one instance, or once taken.
    fn subscribe(&self) -> Option<tokio::sync::mpsc::Receiver<Remote>> {
        None
    }
}

/// What a networked broker hands to the cluster consumer.
#[derive(Debug)]
pub enum Remote {
    /// Another instance's event.
    Event(Arc<Envelope>),
    /// The subscription is (re)established after an outage: events may have been missed.
    Reconnected,
}

/// Queues `envelope` in the hub's mailbox at once, so that events keep the order in which
/// they were published; only when the mailbox is full does the returned future wait (until
/// the hub has taken it). A publisher that needs order across a full mailbox awaits each
/// publish before the next.
pub(crate) fn deliver_local(
    hub: &Recipient<Incoming>,
    envelope: Arc<Envelope>,
) -> BoxFuture<'static, ()> {
    match hub.try_send(Incoming(envelope)) {
        Ok(()) => futures_util::future::ready(()).boxed(),
        Err(SendError::Full(m)) => {
            let request = hub.send(m);
            async move {
                if let Err(e) = request.await {
                    log::error!("hub is gone, event dropped: {e}");
                }
            }
            .boxed()
        }
        Err(SendError::Closed(_)) => {
            log::error!("hub is gone, event dropped");
            futures_util::future::ready(()).boxed()
        }
    }
}
