//! The routing policy end to end through its public API: outbound rules and rewriting, user
//! policies against toll fraud, DIDs, the trunk IP ACL, RFC 2782 target order and OPTIONS
//! health checks. Pure data: no sockets, a fixed random source, a moved clock.

// Helpers outside #[test] functions unwrap fixed, known-good values.
#![allow(clippy::unwrap_used)]

use std::net::IpAddr;
use std::time::Duration;

use webtrunk::routing::{
    Did, HealthChecks, NumberPattern, OutboundRule, RouteError, RoutingTable, TargetKey, Trunk, TrunkTarget, UserPolicy,
};

fn pattern(source: &str) -> NumberPattern {
    NumberPattern::parse(source).unwrap()
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn target(host: &str, priority: u16, weight: u16) -> TrunkTarget {
    TrunkTarget { priority, weight, ..TrunkTarget::new(host, Some(5060)) }
}

fn rule(name: &str, source: &str, strip: usize, prepend: &str, trunks: &[&str]) -> OutboundRule {
    OutboundRule {
        name: name.into(),
        pattern: pattern(source),
        strip,
        prepend: prepend.into(),
        e164: None,
        trunks: trunks.iter().map(|t| (*t).to_owned()).collect(),
    }
}

fn hosts(targets: &[TrunkTarget]) -> Vec<&str> {
    targets.iter().map(|t| t.host.as_str()).collect()
}

/// A UK office: two carriers, international via `00`, national via `0` made E.164, a
/// restricted user (UK numbers only), premium numbers (`09…`, `+449…`) denied for everyone by default.
fn office() -> RoutingTable {
    let mut primary = Trunk::new("primary", vec![target("sip1.carrier.example", 10, 0)]);
    primary.inbound_sources = vec!["203.0.113.0/24".parse().unwrap()];
    let backup = Trunk::new("backup", vec![target("sip.backup.example", 10, 0)]);
    let national = OutboundRule { e164: Some("44".into()), ..rule("national", "_0[1-9]X.", 0, "", &["primary"]) };
    let rules = vec![rule("international", "00", 2, "+", &["primary", "backup"]), national];
    let dids = vec![
        Did { number: pattern("442079460958"), users: vec!["alice".into(), "bob".into()] },
        Did { number: pattern("_44207946XXXX"), users: vec!["reception".into()] },
    ];
    let premium = UserPolicy { denied: vec![pattern("_+449."), pattern("09")], ..UserPolicy::default() };
    // Policies see the number as dialled and as rewritten, so E.164 entries hold for every
    // way of dialling; a user's own policy replaces the default one, premium included.
    let restricted = UserPolicy { allowed: vec![pattern("+44")], ..premium.clone() };
    let users = [("*".to_owned(), premium), ("intern".to_owned(), restricted)];
    RoutingTable::new(vec![primary, backup], rules, dids, users).unwrap()
}

#[test]
fn international_number_with_separators_is_rewritten_to_e164_for_the_trunk_group_in_order() {
    let table = office();
    let route = table.outbound("alice", "0044 20 7946 0958").unwrap();
    assert_eq!(route.rule, "international");
    assert_eq!(route.number, "+442079460958");
    let trunks: Vec<&str> = route.trunks.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(trunks, ["primary", "backup"]);
    assert_eq!(route.caller_id, None);
}

#[test]
fn national_number_becomes_e164_without_its_trunk_prefix() {
    let table = office();
    let route = table.outbound("alice", "(07700) 900-123").unwrap();
    assert_eq!(route.rule, "national");
    assert_eq!(route.number, "+447700900123");
}

#[test]
fn premium_number_is_denied_by_the_user_policy_with_403() {
    let table = office();
    let denied = table.outbound("alice", "0909 879 0000").unwrap_err();
    assert_eq!(denied, RouteError::Denied);
    assert_eq!(denied.status(), 403);
    // Dialled internationally it is still premium once rewritten: +44 909…
    assert_eq!(table.outbound("alice", "0044 909 879 0000"), Err(RouteError::Denied));
}

#[test]
fn international_is_denied_for_a_restricted_user_only() {
    let table = office();
    assert_eq!(table.outbound("intern", "0033 1 23 45 67 89"), Err(RouteError::Denied));
    assert_eq!(table.outbound("intern", "020 7946 0958").map(|r| r.number), Ok("+442079460958".to_owned()));
    assert_eq!(table.outbound("alice", "0033 1 23 45 67 89").map(|r| r.number), Ok("+33123456789".to_owned()));
}

#[test]
fn number_no_rule_matches_is_no_route_404() {
    let table = office();
    let error = table.outbound("alice", "112").unwrap_err();
    assert_eq!(error, RouteError::NoRoute);
    assert_eq!(error.status(), 404);
    assert_eq!(table.outbound("alice", "bob"), Err(RouteError::NoRoute));
}

#[test]
fn did_exact_number_and_pattern_ring_their_users() {
    let table = office();
    assert_eq!(table.did("442079460958").unwrap(), ["alice", "bob"]);
    assert_eq!(table.did("+44 20 7946 0958").unwrap(), ["alice", "bob"]);
    assert_eq!(table.did("442079460001").unwrap(), ["reception"]);
}

#[test]
fn unknown_did_is_404() {
    let error = office().did("442079461234567").unwrap_err();
    assert_eq!(error, RouteError::UnknownDid);
    assert_eq!(error.status(), 404);
    assert_eq!(office().did("15550100"), Err(RouteError::UnknownDid));
}

#[test]
fn trunk_source_in_its_slash_24_is_matched_and_another_refused() {
    let table = office();
    assert_eq!(table.trunk_for_source(ip("203.0.113.42")).map(|t| t.name.as_str()), Some("primary"));
    assert_eq!(table.trunk_for_source(ip("::ffff:203.0.113.250")).map(|t| t.name.as_str()), Some("primary"));
    assert!(table.trunk_for_source(ip("203.0.114.42")).is_none());
    assert!(table.trunk_for_source(ip("198.51.100.7")).is_none());
}

#[test]
fn weighted_order_is_deterministic_with_a_fixed_random_source_and_respects_priority() {
    let targets =
        [target("backup", 20, 0), target("light", 10, 25), target("heavy", 10, 75), target("last-resort", 30, 0)];
    // Draws are taken modulo (total weight + 1): 100 % 101 = 100 → heavy (running sums 25, 100).
    let mut draws = [100].into_iter();
    let ordered = RoutingTable::order_targets(&targets, &mut || draws.next().unwrap_or(0));
    assert_eq!(hosts(&ordered), ["heavy", "light", "backup", "last-resort"]);
    let mut draws = [7].into_iter();
    let ordered = RoutingTable::order_targets(&targets, &mut || draws.next().unwrap_or(0));
    assert_eq!(hosts(&ordered), ["light", "heavy", "backup", "last-resort"]);

    // Over many calls a seeded source gives each target of a priority its weight's share.
    let mut state = 0x2545_f491_u32;
    let mut lcg = || {
        state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        state >> 8
    };
    let heavy_first = (0..1000)
        .filter(|_| RoutingTable::order_targets(&targets, &mut lcg).first().is_some_and(|t| t.host == "heavy"))
        .count();
    assert!((700..=800).contains(&heavy_first), "heavy went first {heavy_first} times in 1000");
}

#[test]
fn health_checks_down_after_three_misses_up_after_an_answer_and_down_targets_skipped() {
    let table = office();
    let mut trunk = table.trunk("primary").unwrap().clone();
    trunk.targets = vec![target("a.carrier.example", 10, 0), target("b.carrier.example", 10, 0)];
    let start = webtrunk::clock::now();
    let interval = Duration::from_secs(30);
    let mut checks = HealthChecks::new(interval, 3);
    for t in &trunk.targets {
        checks.watch(TargetKey::new(&trunk.name, t), start);
    }
    let a = TargetKey::new("primary", &trunk.targets[0]);

    let mut now = start;
    for miss in 1..=3 {
        let due = checks.due(now);
        assert_eq!(due.len(), 2, "both targets are pinged every interval");
        let change = checks.missed(&a, now);
        assert_eq!(change.is_some(), miss == 3, "down exactly at the third miss");
        checks.answered(&due[1], now);
        assert_eq!(checks.poll_timeout(), Some(now + interval));
        now += interval;
    }
    assert!(!checks.is_up(&a));
    assert_eq!(hosts(&checks.available_targets(&trunk, &mut || 0)), ["b.carrier.example"]);

    checks.due(now);
    checks.answered(&a, now);
    assert!(checks.is_up(&a));
    assert_eq!(hosts(&checks.available_targets(&trunk, &mut || 0)), ["a.carrier.example", "b.carrier.example"]);
}

#[test]
fn health_checks_follow_the_table_on_reload() {
    let start = webtrunk::clock::now();
    let mut checks = HealthChecks::new(Duration::from_secs(30), 1);
    checks.watch_table(&office(), start);
    let due: Vec<String> = checks.due(start).iter().map(ToString::to_string).collect();
    assert_eq!(due, ["backup/sip.backup.example:5060", "primary/sip1.carrier.example:5060"]);
}

#[test]
fn config_problems_each_name_their_rule_trunk_or_pattern() {
    let bad = NumberPattern::parse("_1NXX[2-").unwrap_err();
    assert_eq!(bad.to_string(), "number pattern \"_1NXX[2-\": '[' at character 6 is never closed");
    let forgot_underscore = NumberPattern::parse("1NXX").unwrap_err();
    assert!(forgot_underscore.to_string().contains("start the pattern with '_'"), "{forgot_underscore}");

    let trunks = vec![Trunk::new("primary", vec![target("a", 0, 0)]), Trunk::new("primary", vec![target("b", 0, 0)])];
    let rules = vec![rule("uk", "0", 0, "", &["primary", "secondary"])];
    let problems = RoutingTable::new(trunks, rules, Vec::new(), Vec::<(String, UserPolicy)>::new()).unwrap_err();
    assert_eq!(problems, ["trunk \"primary\" is defined twice", "rule \"uk\" names unknown trunk \"secondary\""]);
}
