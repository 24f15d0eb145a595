//! The in-process broker: one instance, events go straight to its hub.

use std::sync::Arc;

use actix::Recipient;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;

use super::{deliver_local, Broker, Incoming};
use crate::domain::events::{Envelope, Event, InstanceId};

/// Delivers to the local hub through its bounded mailbox.
pub struct MemoryBroker {
    instance: InstanceId,
    hub: Recipient<Incoming>,
}

impl MemoryBroker {
    pub fn new(instance: InstanceId, hub: Recipient<Incoming>) -> MemoryBroker {
        MemoryBroker { instance, hub }
    }
}

impl Broker for MemoryBroker {
    fn instance(&self) -> InstanceId {
        self.instance
    }

    fn publish(&self, event: Event) -> BoxFuture<'static, ()> {
        if matches!(event, Event::Presence(_)) {
            // Facts for other instances' replicas: there are none.
            return futures_util::future::ready(()).boxed();
        }
        let envelope = Arc::new(Envelope {
            origin: self.instance,
            event,
        });
        deliver_local(&self.hub, envelope)
    }

    fn check(&self) -> BoxFuture<'static, Result<(), String>> {
        futures_util::future::ready(Ok(())).boxed()
    }

    fn name(&self) -> &'static str {
        "memory"
    }
}
