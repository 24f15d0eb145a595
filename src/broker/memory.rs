//! The in-process broker: one instance, events go straight to its hub.

use actix::Addr;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;

use super::{Broker, BrokerEvent};
use crate::realtime::hub::Hub;

/// Delivers to the local hub through its bounded mailbox.
pub struct MemoryBroker {
    hub: Addr<Hub>,
}

impl MemoryBroker {
    pub fn new(hub: Addr<Hub>) -> MemoryBroker {
        MemoryBroker { hub }
    }
}

impl Broker for MemoryBroker {
    fn publish(&self, event: BrokerEvent) -> BoxFuture<'static, ()> {
        let hub = self.hub.clone();
        async move {
            let sent = match event {
                BrokerEvent::Deliver(m) => hub.send(m).await,
                BrokerEvent::CloseUser(m) => hub.send(m).await,
                BrokerEvent::CloseTokens(m) => hub.send(m).await,
            };
            if let Err(e) = sent {
                log::error!("hub is gone, event dropped: {e}");
            }
        }
        .boxed()
    }
}
