//! Connection admission: a cap on connections overall and per source IP, so one address
//! cannot take every slot. A [`Permit`] holds a slot until it is dropped.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

#[derive(Debug, Clone)]
pub struct Gate {
    inner: Arc<Mutex<Counts>>,
    max_total: usize,
    max_per_ip: usize,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    Full,
    PerIp,
}

impl Gate {
    pub fn new(max_total: usize, max_per_ip: usize) -> Self {
        Self { inner: Arc::default(), max_total, max_per_ip }
    }

    pub fn admit(&self, ip: IpAddr) -> Result<Permit, Refused> {
        let mut counts = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if counts.total >= self.max_total {
            return Err(Refused::Full);
        }
        let n = counts.per_ip.entry(ip).or_default();
        if *n >= self.max_per_ip {
            return Err(Refused::PerIp);
        }
        *n += 1;
        counts.total += 1;
        Ok(Permit { gate: self.clone(), ip })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner).total
    }
}

#[derive(Debug)]
pub struct Permit {
    gate: Gate,
    ip: IpAddr,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut counts = self.gate.inner.lock().unwrap_or_else(PoisonError::into_inner);
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.per_ip.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_per_ip_and_overall_and_frees_on_drop() {
        let gate = Gate::new(3, 2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let p1 = gate.admit(a).unwrap();
        let _p2 = gate.admit(a).unwrap();
        assert_eq!(gate.admit(a).unwrap_err(), Refused::PerIp);
        let _p3 = gate.admit(b).unwrap();
        assert_eq!(gate.admit(b).unwrap_err(), Refused::Full);
        drop(p1);
        assert_eq!(gate.open(), 2);
        assert!(gate.admit(a).is_ok());
    }
}
