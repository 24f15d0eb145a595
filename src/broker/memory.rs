//! The in-process broker: one instance, events go straight to its hub.

use actix::dev::ToEnvelope;
use actix::prelude::SendError;
use actix::{Addr, Handler, Message};
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

/// Queues `m` in the hub's mailbox at once, so that events keep the order in which they
/// were published; only when the mailbox is full does the returned future wait (until the
/// hub has taken and handled it). A publisher that needs order across a full mailbox
/// awaits each publish before the next.
fn enqueue<M>(hub: &Addr<Hub>, m: M) -> BoxFuture<'static, ()>
where
    M: Message<Result = ()> + Send + 'static,
    Hub: Handler<M>,
    <Hub as actix::Actor>::Context: ToEnvelope<Hub, M>,
{
    match hub.try_send(m) {
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

impl Broker for MemoryBroker {
    fn publish(&self, event: BrokerEvent) -> BoxFuture<'static, ()> {
        match event {
            BrokerEvent::Deliver(m) => enqueue(&self.hub, m),
            BrokerEvent::CloseUser(m) => enqueue(&self.hub, m),
            BrokerEvent::CloseTokens(m) => enqueue(&self.hub, m),
            BrokerEvent::RecheckUser(m) => enqueue(&self.hub, m),
        }
    }
}
