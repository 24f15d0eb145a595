//! Admission of sockets that have not authenticated yet: at most so many per client
//! address, so that one address cannot hold thousands of idle unauthenticated sockets.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Counts unauthenticated sockets per address.
pub struct Gate {
    max_per_addr: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// A place taken at the gate; given back when dropped (the socket authenticated or ended).
pub struct Ticket {
    gate: Arc<Gate>,
    addr: IpAddr,
}

impl Gate {
    pub fn new(max_per_addr: usize) -> Arc<Gate> {
        Arc::new(Gate {
            max_per_addr,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// A place for one more unauthenticated socket from `addr`, if there is one.
    pub fn enter(self: &Arc<Self>, addr: IpAddr) -> Option<Ticket> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(addr).or_insert(0);
        if *n >= self.max_per_addr {
            return None;
        }
        *n += 1;
        Some(Ticket {
            gate: self.clone(),
            addr,
        })
    }

    #[cfg(test)]
    fn count(&self, addr: IpAddr) -> usize {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.get(&addr).copied().unwrap_or(0)
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut open = self.gate.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.addr) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.addr);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_counted_per_address_and_given_back() {
        let gate = Gate::new(2);
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.3".parse().unwrap();
        let t1 = gate.enter(a).unwrap();
        let _t2 = gate.enter(a).unwrap();
        assert!(gate.enter(a).is_none());
        assert!(gate.enter(b).is_some());
        drop(t1);
        assert_eq!(gate.count(a), 1);
        assert!(gate.enter(a).is_some());
    }
}
