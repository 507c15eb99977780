//! Where the current incarnation of a supervised actor can be reached.
//!
//! A supervisor replaces a failed child with a new actor at a new address. Whoever talks to that child
//! holds a [`Slot`], which the child's factory refills on every start, instead of a stale `Addr`.

use std::sync::{Arc, RwLock};

use actix::{Actor, Addr};

pub struct Slot<A: Actor> {
    addr: Arc<RwLock<Option<Addr<A>>>>,
}

impl<A: Actor> Clone for Slot<A> {
    fn clone(&self) -> Self {
        Self {
            addr: self.addr.clone(),
        }
    }
}

impl<A: Actor> Default for Slot<A> {
    fn default() -> Self {
        Self {
            addr: Arc::new(RwLock::new(None)),
        }
    }
}

impl<A: Actor> Slot<A> {
    pub fn set(&self, addr: Addr<A>) {
        let mut guard = match self.addr.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        *guard = Some(addr);
    }

    /// The live actor, or `None` while it is (re)starting or after it stopped for good.
    pub fn get(&self) -> Option<Addr<A>> {
        let guard = match self.addr.read() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        guard.as_ref().filter(|a| a.connected()).cloned()
    }
}
