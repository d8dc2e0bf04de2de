//! Whether each trunk target answers: an OPTIONS ping (RFC 3261 §11) every interval; a target
//! is down after a run of missed pings and up again at its first answer. A state machine over
//! `now`: the engine asks [`HealthChecks::due`] which targets to ping, sends the OPTIONS, and
//! reports each outcome; [`HealthChecks::poll_timeout`] says when to ask again.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use super::table::RoutingTable;
use super::trunk::{Trunk, TrunkTarget, weighted_order};

/// One target of one trunk: the same host in two trunks is watched twice, since the trunks may
/// reach it differently.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TargetKey {
    pub trunk: String,
    pub host: String,
    pub port: Option<u16>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Up,
    Down,
}

/// The watched targets and their ping schedule.
#[derive(Debug)]
pub struct HealthChecks {
    interval: Duration,
    misses_to_down: u32,
    targets: BTreeMap<TargetKey, Watched>,
}

#[derive(Debug)]
struct Watched {
    health: Health,
    /// Misses since the last answer.
    misses: u32,
    next_ping: Instant,
    /// When `health` last changed (or watching began).
    since: Instant,
}

impl TargetKey {
    pub fn new(trunk: &str, target: &TrunkTarget) -> Self {
        Self { trunk: trunk.to_owned(), host: target.host.clone(), port: target.port }
    }
}

impl fmt::Display for TargetKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            Some(port) => write!(f, "{}/{}:{port}", self.trunk, self.host),
            None => write!(f, "{}/{}", self.trunk, self.host),
        }
    }
}

impl HealthChecks {
    /// Pings every `interval`; `misses_to_down` misses in a row (at least 1) take a target down.
    /// The interval should be longer than an OPTIONS transaction can last (Timer F, 64·T1), so
    /// that each ping is answered or missed before the next is due.
    pub fn new(interval: Duration, misses_to_down: u32) -> Self {
        Self { interval, misses_to_down: misses_to_down.max(1), targets: BTreeMap::new() }
    }

    /// Starts watching a target, up until it misses, with its first ping due at `now`. A target
    /// already watched keeps its state.
    pub fn watch(&mut self, key: TargetKey, now: Instant) {
        self.targets.entry(key).or_insert(Watched { health: Health::Up, misses: 0, next_ping: now, since: now });
    }

    pub fn unwatch(&mut self, key: &TargetKey) {
        self.targets.remove(key);
    }

    /// Watches every target of every trunk in `table` and forgets targets no longer in it; the
    /// ones in both keep their state (a config reload does not revive a dead target).
    pub fn watch_table(&mut self, table: &RoutingTable, now: Instant) {
        let keys: Vec<TargetKey> = table
            .trunks()
            .iter()
            .flat_map(|t| t.targets.iter().map(|target| TargetKey::new(&t.name, target)))
            .collect();
        self.targets.retain(|key, _| keys.contains(key));
        for key in keys {
            self.watch(key, now);
        }
    }

    /// The targets to ping now, in key order; each is next due one interval from `now`.
    pub fn due(&mut self, now: Instant) -> Vec<TargetKey> {
        let mut due = Vec::new();
        for (key, watched) in &mut self.targets {
            if watched.next_ping <= now {
                watched.next_ping = now + self.interval;
                due.push(key.clone());
            }
        }
        due
    }

    /// Any response to the ping: the target's SIP stack is alive (even a 404 or 405 says so).
    /// `Some(Up)` when this brought it back.
    pub fn answered(&mut self, key: &TargetKey, now: Instant) -> Option<Health> {
        let watched = self.targets.get_mut(key)?;
        watched.misses = 0;
        if watched.health == Health::Up {
            return None;
        }
        watched.health = Health::Up;
        watched.since = now;
        Some(Health::Up)
    }

    /// No response: the ping's transaction timed out (408, Timer F) or could not be sent.
    /// `Some(Down)` when this miss took the target down.
    pub fn missed(&mut self, key: &TargetKey, now: Instant) -> Option<Health> {
        let watched = self.targets.get_mut(key)?;
        watched.misses = watched.misses.saturating_add(1);
        if watched.health == Health::Down || watched.misses < self.misses_to_down {
            return None;
        }
        watched.health = Health::Down;
        watched.since = now;
        Some(Health::Down)
    }

    /// Whether calls may go to this target; one not watched counts as up.
    pub fn is_up(&self, key: &TargetKey) -> bool {
        self.targets.get(key).is_none_or(|w| w.health == Health::Up)
    }

    /// Health of a watched target and since when, for metrics and the health endpoint.
    pub fn status(&self, key: &TargetKey) -> Option<(Health, Instant)> {
        self.targets.get(key).map(|w| (w.health, w.since))
    }

    /// Every watched target and its health, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&TargetKey, Health)> {
        self.targets.iter().map(|(key, w)| (key, w.health))
    }

    /// When the next ping is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.targets.values().map(|w| w.next_ping).min()
    }

    /// The targets of `trunk` to try for one call: in RFC 2782 order (as
    /// [`RoutingTable::order_targets`]) with the down ones left out. Empty when all are down:
    /// the call moves on to the next trunk of its group.
    pub fn available_targets(&self, trunk: &Trunk, random: &mut impl FnMut() -> u32) -> Vec<TrunkTarget> {
        let up: Vec<TrunkTarget> =
            trunk.targets.iter().filter(|t| self.is_up(&TargetKey::new(&trunk.name, t))).cloned().collect();
        weighted_order(&up, random)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(host: &str) -> TargetKey {
        TargetKey::new("carrier", &TrunkTarget::new(host, Some(5060)))
    }

    #[test]
    fn first_ping_is_due_when_watching_begins_then_every_interval() {
        let start = crate::clock::now();
        let mut checks = HealthChecks::new(Duration::from_secs(30), 3);
        checks.watch(key("a"), start);
        assert_eq!(checks.poll_timeout(), Some(start));
        assert_eq!(checks.due(start), [key("a")]);
        assert!(checks.due(start + Duration::from_secs(29)).is_empty());
        assert_eq!(checks.poll_timeout(), Some(start + Duration::from_secs(30)));
        assert_eq!(checks.due(start + Duration::from_secs(30)), [key("a")]);
    }

    #[test]
    fn target_goes_down_after_misses_to_down_in_a_row() {
        let now = crate::clock::now();
        let mut checks = HealthChecks::new(Duration::from_secs(30), 3);
        checks.watch(key("a"), now);
        assert_eq!(checks.missed(&key("a"), now), None);
        assert_eq!(checks.missed(&key("a"), now), None);
        assert_eq!(checks.answered(&key("a"), now), None, "an answer resets the run");
        assert_eq!(checks.missed(&key("a"), now), None);
        assert_eq!(checks.missed(&key("a"), now), None);
        assert!(checks.is_up(&key("a")));
        assert_eq!(checks.missed(&key("a"), now), Some(Health::Down));
        assert!(!checks.is_up(&key("a")));
        assert_eq!(checks.missed(&key("a"), now), None, "already down");
    }

    #[test]
    fn down_target_is_up_again_after_one_answer() {
        let now = crate::clock::now();
        let later = now + Duration::from_secs(90);
        let mut checks = HealthChecks::new(Duration::from_secs(30), 1);
        checks.watch(key("a"), now);
        assert_eq!(checks.missed(&key("a"), now), Some(Health::Down));
        assert_eq!(checks.answered(&key("a"), later), Some(Health::Up));
        assert_eq!(checks.status(&key("a")), Some((Health::Up, later)));
    }

    #[test]
    fn unwatched_targets_count_as_up_and_reports_about_them_are_ignored() {
        let now = crate::clock::now();
        let mut checks = HealthChecks::new(Duration::from_secs(30), 1);
        assert_eq!(checks.missed(&key("x"), now), None);
        assert!(checks.is_up(&key("x")));
        assert_eq!(checks.poll_timeout(), None);
    }

    #[test]
    fn watching_again_keeps_the_state() {
        let now = crate::clock::now();
        let mut checks = HealthChecks::new(Duration::from_secs(30), 1);
        checks.watch(key("a"), now);
        checks.missed(&key("a"), now);
        checks.watch(key("a"), now);
        assert!(!checks.is_up(&key("a")));
        checks.unwatch(&key("a"));
        assert!(checks.is_up(&key("a")));
    }
}
