//! The routing table: trunks, outbound rules, DIDs and user policies, checked against each
//! other once when built, then asked per call.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use super::RouteError;
use super::number::{NumberPattern, is_dial_char, is_number, normalise, to_e164};
use super::trunk::{Cidr, Trunk, TrunkTarget, weighted_order};

/// The user name whose policy applies to users without one of their own.
pub const DEFAULT_POLICY: &str = "*";

/// Where dialled numbers matching `pattern` go, and how the number is rewritten for the trunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundRule {
    /// Unique; errors and logs name the rule with it.
    pub name: String,
    /// Matched against the dialled user part without separators ([`NumberPattern::matches`]).
    pub pattern: NumberPattern,
    /// Leading characters removed before `prepend` (at most the pattern's minimum length).
    pub strip: usize,
    /// Put in front after stripping: digits with an optional leading `+`.
    pub prepend: String,
    /// A country code: after stripping, the national number becomes E.164 ([`to_e164`]).
    /// Either this or `prepend`, not both.
    pub e164: Option<String>,
    /// The trunk group, tried in this order.
    pub trunks: Vec<String>,
}

/// What one local user may dial out to and the number presented for them.
///
/// A pattern matches if it matches the number as dialled (separators removed) or as rewritten
/// for the trunk, so a policy written in E.164 (`"+44"`, `"_+449."`) holds however the user
/// dials. Denied wins over allowed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserPolicy {
    /// Only these may be called; empty allows everything not denied.
    pub allowed: Vec<NumberPattern>,
    /// Never these (premium rate, international: toll fraud).
    pub denied: Vec<NumberPattern>,
    /// The number presented for this user's outbound calls.
    pub caller_id: Option<String>,
}

/// A number of ours that trunks deliver calls to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Did {
    /// A literal is the whole number ([`NumberPattern::matches_whole`]); or a `_` pattern.
    pub number: NumberPattern,
    /// Rung together.
    pub users: Vec<String>,
}

/// The answer to an outbound call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundRoute<'a> {
    /// The rule that matched.
    pub rule: String,
    /// The rewritten number for the Request-URI user part toward the trunk.
    pub number: String,
    /// The trunk group in failover order.
    pub trunks: Vec<&'a Trunk>,
    /// The user's presented number; a trunk's `from_user` takes precedence in From.
    pub caller_id: Option<String>,
}

/// Trunks, rules, DIDs and user policies, consistent with each other.
#[derive(Debug, Clone, Default)]
pub struct RoutingTable {
    trunks: Vec<Trunk>,
    rules: Vec<OutboundRule>,
    dids: Vec<Did>,
    users: HashMap<String, UserPolicy>,
    default_policy: UserPolicy,
}

impl RoutingTable {
    /// Checks the parts against each other and builds the table, or returns one message per
    /// problem, each naming its trunk, rule, DID or user. The user named [`DEFAULT_POLICY`]
    /// (`"*"`) gives the policy of users without one (it replaces, it does not merge); without
    /// it they may dial anything a rule routes.
    pub fn new(
        trunks: Vec<Trunk>,
        rules: Vec<OutboundRule>,
        dids: Vec<Did>,
        users: impl IntoIterator<Item = (String, UserPolicy)>,
    ) -> Result<Self, Vec<String>> {
        let mut problems = Vec::new();
        check_trunks(&trunks, &mut problems);
        check_rules(&rules, &trunks, &mut problems);
        check_dids(&dids, &mut problems);
        let mut policies = HashMap::new();
        for (user, policy) in users {
            check_policy(&user, &policy, &mut problems);
            if policies.contains_key(&user) {
                problems.push(format!("user {user:?} has two policies"));
            }
            policies.insert(user, policy);
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let default_policy = policies.remove(DEFAULT_POLICY).unwrap_or_default();
        Ok(Self { trunks, rules, dids, users: policies, default_policy })
    }

    /// Outbound: the first rule (in the order written) matching the dialled user part without
    /// separators, the number rewritten by it, and its trunk group in failover order, for the
    /// authenticated local `user`. [`RouteError::NoRoute`] when the user part is not a number or
    /// no rule matches; [`RouteError::Denied`] when the user's policy forbids the number.
    pub fn outbound(&self, user: &str, dialled: &str) -> Result<OutboundRoute<'_>, RouteError> {
        let number = normalise(dialled);
        if !is_number(&number) {
            return Err(RouteError::NoRoute);
        }
        let rule = self.rules.iter().find(|r| r.pattern.matches(&number)).ok_or(RouteError::NoRoute)?;
        let rewritten = rule.rewrite(&number);
        let policy = self.policy(user);
        if !policy.permits(&number, &rewritten) {
            return Err(RouteError::Denied);
        }
        // `new` checked every name against the trunks, so none is dropped here.
        let trunks = rule.trunks.iter().filter_map(|name| self.trunk(name)).collect();
        Ok(OutboundRoute { rule: rule.name.clone(), number: rewritten, trunks, caller_id: policy.caller_id.clone() })
    }

    /// Inbound: the trunk whose inbound sources hold `ip` (the IP ACL for trunk traffic). When
    /// ranges of several trunks hold it, the longest prefix wins, then the trunk written first.
    pub fn trunk_for_source(&self, ip: IpAddr) -> Option<&Trunk> {
        let mut best: Option<(u8, &Trunk)> = None;
        for trunk in &self.trunks {
            let longest = trunk.inbound_sources.iter().filter(|range| range.contains(ip)).map(Cidr::prefix).max();
            if let Some(prefix) = longest
                && best.is_none_or(|(held, _)| prefix > held)
            {
                best = Some((prefix, trunk));
            }
        }
        best.map(|(_, trunk)| trunk)
    }

    /// Inbound: the users a called number rings. Separators are removed and a leading `+` is
    /// optional on either side (`"+442079460958"` finds the DID `"442079460958"`); DIDs written as
    /// one number win over patterns, then the first written wins. [`RouteError::UnknownDid`]
    /// otherwise.
    pub fn did(&self, number: &str) -> Result<&[String], RouteError> {
        let number = normalise(number);
        if !is_number(&number) {
            return Err(RouteError::UnknownDid);
        }
        let other = match number.strip_prefix('+') {
            Some(rest) => rest.to_owned(),
            None => format!("+{number}"),
        };
        let hit = |did: &&Did| did.number.matches_whole(&number) || did.number.matches_whole(&other);
        let exact = self.dids.iter().filter(|d| !d.number.is_pattern()).find(hit);
        let did = exact.or_else(|| self.dids.iter().filter(|d| d.number.is_pattern()).find(hit));
        did.map(|d| d.users.as_slice()).ok_or(RouteError::UnknownDid)
    }

    /// A trunk's targets in the order to try them for one call: ascending priority, and within
    /// a priority the weighted random order of RFC 2782, drawing from `random` (one draw per
    /// open choice), so a fixed source gives a fixed order. All-zero weights keep the written
    /// order. [`super::HealthChecks::available_targets`] does the same without down targets.
    pub fn order_targets(targets: &[TrunkTarget], random: &mut impl FnMut() -> u32) -> Vec<TrunkTarget> {
        weighted_order(targets, random)
    }

    pub fn trunk(&self, name: &str) -> Option<&Trunk> {
        self.trunks.iter().find(|t| t.name == name)
    }

    pub fn trunks(&self) -> &[Trunk] {
        &self.trunks
    }

    pub fn rules(&self) -> &[OutboundRule] {
        &self.rules
    }

    pub fn dids(&self) -> &[Did] {
        &self.dids
    }

    /// The policy of `user`, or the default one.
    pub fn policy(&self, user: &str) -> &UserPolicy {
        self.users.get(user).unwrap_or(&self.default_policy)
    }
}

impl OutboundRule {
    /// The number for the trunk: the first `strip` characters removed, then `prepend` put in
    /// front, or with `e164` the rest made E.164 ([`to_e164`]). `number` is already normalised
    /// and matched, so it is at least `strip` long (checked in [`RoutingTable::new`]).
    ///
    /// `"00442079460958"`, strip 2, prepend `"+"` → `"+442079460958"`;
    /// `"907700900123"`, strip 1, e164 `"44"` → `"07700900123"` → `"+447700900123"`.
    pub fn rewrite(&self, number: &str) -> String {
        let rest = number.char_indices().nth(self.strip).map_or("", |(at, _)| &number[at..]);
        match &self.e164 {
            Some(country_code) => to_e164(rest, country_code),
            None => format!("{}{rest}", self.prepend),
        }
    }
}

impl UserPolicy {
    /// Whether a call to `dialled` (normalised), rewritten to `rewritten`, is allowed.
    pub fn permits(&self, dialled: &str, rewritten: &str) -> bool {
        let hit = |p: &NumberPattern| p.matches(dialled) || p.matches(rewritten);
        !self.denied.iter().any(hit) && (self.allowed.is_empty() || self.allowed.iter().any(hit))
    }
}

impl<'a> OutboundRoute<'a> {
    /// The trunks of the group that have a free call slot, given how many calls each carries
    /// now. [`RouteError::TrunkBusy`] (naming the first trunk) when every one is at `max_calls`.
    pub fn with_free_capacity(&self, active_calls: impl Fn(&str) -> usize) -> Result<Vec<&'a Trunk>, RouteError> {
        let free: Vec<&'a Trunk> =
            self.trunks.iter().copied().filter(|t| t.max_calls.is_none_or(|max| active_calls(&t.name) < max)).collect();
        match (free.is_empty(), self.trunks.first()) {
            (false, _) => Ok(free),
            (true, Some(first)) => {
                Err(RouteError::TrunkBusy { trunk: first.name.clone(), max_calls: first.max_calls.unwrap_or(0) })
            }
            (true, None) => Err(RouteError::NoRoute),
        }
    }

    /// The From user part toward `trunk`: its `from_user` if set, else the user's caller ID.
    pub fn from_user<'b>(&'b self, trunk: &'b Trunk) -> Option<&'b str> {
        trunk.from_user.as_deref().or(self.caller_id.as_deref())
    }
}

fn check_trunks(trunks: &[Trunk], problems: &mut Vec<String>) {
    let mut names = HashSet::new();
    for trunk in trunks {
        let name = &trunk.name;
        if name.is_empty() {
            problems.push("a trunk has an empty name".into());
        } else if !names.insert(name.as_str()) {
            problems.push(format!("trunk {name:?} is defined twice"));
        }
        let mut seen = HashSet::new();
        for target in &trunk.targets {
            if target.host.is_empty() {
                problems.push(format!("trunk {name:?}: a target has an empty host"));
            }
            if target.port == Some(0) {
                problems.push(format!("trunk {name:?}: target {target} has port 0"));
            }
            if !seen.insert((&target.host, target.port)) {
                problems.push(format!("trunk {name:?}: target {target} is listed twice"));
            }
        }
        if trunk.register && trunk.credentials.is_none() {
            problems.push(format!("trunk {name:?}: register needs credentials"));
        }
        if trunk.credentials.as_ref().is_some_and(|c| c.username.is_empty()) {
            problems.push(format!("trunk {name:?}: credentials have an empty username"));
        }
        if trunk.max_calls == Some(0) {
            problems.push(format!("trunk {name:?}: max_calls 0 would refuse every call"));
        }
        if trunk.failover_timeout.is_zero() {
            problems.push(format!("trunk {name:?}: failover_timeout is zero"));
        }
        if trunk.outbound_proxy.as_ref().is_some_and(String::is_empty) {
            problems.push(format!("trunk {name:?}: outbound_proxy is empty"));
        }
        if trunk.from_user.as_ref().is_some_and(String::is_empty) {
            problems.push(format!("trunk {name:?}: from_user is empty"));
        }
    }
}

fn check_rules(rules: &[OutboundRule], trunks: &[Trunk], problems: &mut Vec<String>) {
    let mut names = HashSet::new();
    for rule in rules {
        let name = &rule.name;
        if name.is_empty() {
            problems.push(format!("a rule for {:?} has an empty name", rule.pattern.as_str()));
        } else if !names.insert(name.as_str()) {
            problems.push(format!("rule {name:?} is defined twice"));
        }
        if rule.trunks.is_empty() {
            problems.push(format!("rule {name:?} names no trunks"));
        }
        let mut group = HashSet::new();
        for trunk_name in &rule.trunks {
            match trunks.iter().find(|t| &t.name == trunk_name) {
                None => problems.push(format!("rule {name:?} names unknown trunk {trunk_name:?}")),
                Some(trunk) if trunk.targets.is_empty() => {
                    problems.push(format!("rule {name:?}: trunk {trunk_name:?} has no targets to send to"));
                }
                Some(_) => {}
            }
            if !group.insert(trunk_name) {
                problems.push(format!("rule {name:?} names trunk {trunk_name:?} twice"));
            }
        }
        let fixed = rule.pattern.min_len();
        if rule.strip > fixed {
            problems.push(format!(
                "rule {name:?}: strip {} removes more than the {fixed} characters pattern {:?} guarantees",
                rule.strip,
                rule.pattern.as_str()
            ));
        }
        let prepend_digits = rule.prepend.strip_prefix('+').unwrap_or(&rule.prepend);
        if !prepend_digits.chars().all(is_dial_char) {
            problems
                .push(format!("rule {name:?}: prepend {:?} is not digits with an optional leading '+'", rule.prepend));
        }
        if let Some(country_code) = &rule.e164 {
            let valid = (1..=3).contains(&country_code.len())
                && country_code.bytes().all(|b| b.is_ascii_digit())
                && !country_code.starts_with('0');
            if !valid {
                problems.push(format!("rule {name:?}: e164 {country_code:?} is not a country code (1 to 3 digits)"));
            }
            if !rule.prepend.is_empty() {
                problems.push(format!("rule {name:?}: set prepend or e164, not both"));
            }
        }
    }
}

fn check_dids(dids: &[Did], problems: &mut Vec<String>) {
    let mut numbers = HashSet::new();
    for did in dids {
        let number = did.number.as_str();
        if did.users.is_empty() {
            problems.push(format!("did {number:?} rings no users"));
        }
        if !numbers.insert(number) {
            problems.push(format!("did {number:?} is listed twice"));
        }
    }
}

fn check_policy(user: &str, policy: &UserPolicy, problems: &mut Vec<String>) {
    if user.is_empty() {
        problems.push("a user policy has an empty user name".into());
    }
    if policy.caller_id.as_ref().is_some_and(String::is_empty) {
        problems.push(format!("user {user:?}: caller_id is empty"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::Credentials;

    fn pattern(source: &str) -> NumberPattern {
        NumberPattern::parse(source).unwrap()
    }

    fn trunk(name: &str) -> Trunk {
        Trunk::new(name, vec![TrunkTarget::new(format!("{name}.example.net"), None)])
    }

    fn rule(name: &str, source: &str, trunks: &[&str]) -> OutboundRule {
        OutboundRule {
            name: name.into(),
            pattern: pattern(source),
            strip: 0,
            prepend: String::new(),
            e164: None,
            trunks: trunks.iter().map(|t| (*t).to_owned()).collect(),
        }
    }

    fn table(rules: Vec<OutboundRule>, users: Vec<(&str, UserPolicy)>) -> RoutingTable {
        let users = users.into_iter().map(|(u, p)| (u.to_owned(), p));
        RoutingTable::new(vec![trunk("primary"), trunk("backup")], rules, Vec::new(), users).unwrap()
    }

    #[test]
    fn rewrite_strips_then_prepends() {
        let rule = OutboundRule { strip: 2, prepend: "+".into(), ..rule("intl", "00", &["primary"]) };
        assert_eq!(rule.rewrite("00442079460958"), "+442079460958");
        let rule = OutboundRule { strip: 1, prepend: String::new(), ..rule };
        assert_eq!(rule.rewrite("9"), "");
    }

    #[test]
    fn rewrite_e164_drops_the_national_trunk_prefix() {
        let uk = OutboundRule { e164: Some("44".into()), ..rule("uk", "_0[1-7]X.", &["primary"]) };
        assert_eq!(uk.rewrite("07700900123"), "+447700900123");
        let outside_line = OutboundRule { strip: 1, ..uk };
        assert_eq!(outside_line.rewrite("907700900123"), "+447700900123");
    }

    #[test]
    fn first_matching_rule_in_written_order_wins() {
        let t = table(vec![rule("first", "0", &["primary"]), rule("second", "00", &["backup"])], vec![]);
        let route = t.outbound("alice", "0044").unwrap();
        assert_eq!(route.rule, "first");
        assert_eq!(route.trunks[0].name, "primary");
    }

    #[test]
    fn user_part_that_is_not_a_number_has_no_route() {
        let t = table(vec![rule("any", "_.", &["primary"])], vec![]);
        assert_eq!(t.outbound("alice", "bob"), Err(RouteError::NoRoute));
        assert!(t.outbound("alice", "*21#").is_ok());
    }

    #[test]
    fn policy_matches_the_dialled_or_the_rewritten_number() {
        let intl = OutboundRule { strip: 2, prepend: "+".into(), ..rule("intl", "00", &["primary"]) };
        let plus = rule("plus", "+", &["primary"]);
        let restricted = UserPolicy { denied: vec![pattern("+")], ..UserPolicy::default() };
        let t = table(vec![intl, plus], vec![("bob", restricted)]);
        assert_eq!(t.outbound("bob", "0033123456789"), Err(RouteError::Denied));
        assert_eq!(t.outbound("bob", "+33123456789"), Err(RouteError::Denied));
        assert!(t.outbound("alice", "0033123456789").is_ok());
    }

    #[test]
    fn allow_list_permits_only_its_numbers_and_deny_wins() {
        let policy = UserPolicy { allowed: vec![pattern("01")], denied: vec![pattern("0123")], caller_id: None };
        assert!(policy.permits("01865", "01865"));
        assert!(!policy.permits("02079", "02079"));
        assert!(!policy.permits("01234", "01234"));
    }

    #[test]
    fn star_policy_applies_to_users_without_their_own() {
        let everyone = UserPolicy { denied: vec![pattern("09")], ..UserPolicy::default() };
        let boss = UserPolicy { caller_id: Some("+442079460000".into()), ..UserPolicy::default() };
        let t = table(vec![rule("national", "0", &["primary"])], vec![("*", everyone), ("boss", boss)]);
        assert_eq!(t.outbound("alice", "09098790000"), Err(RouteError::Denied));
        let route = t.outbound("boss", "09098790000").unwrap();
        assert_eq!(route.caller_id.as_deref(), Some("+442079460000"));
    }

    #[test]
    fn busy_trunks_are_skipped_and_all_busy_is_503() {
        let mut primary = trunk("primary");
        primary.max_calls = Some(2);
        let mut backup = trunk("backup");
        backup.max_calls = Some(1);
        let t = RoutingTable::new(
            vec![primary, backup],
            vec![rule("all", "_X.", &["primary", "backup"])],
            Vec::new(),
            Vec::new(),
        )
        .unwrap();
        let route = t.outbound("alice", "0123").unwrap();
        let free = route.with_free_capacity(|name| if name == "primary" { 2 } else { 0 }).unwrap();
        assert_eq!(free.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["backup"]);
        let busy = route.with_free_capacity(|_| 2).unwrap_err();
        assert_eq!(busy, RouteError::TrunkBusy { trunk: "primary".into(), max_calls: 2 });
        assert_eq!(busy.status(), 503);
    }

    #[test]
    fn trunk_from_user_wins_over_the_user_caller_id() {
        let mut primary = trunk("primary");
        let route = OutboundRoute {
            rule: "r".into(),
            number: "+1".into(),
            trunks: Vec::new(),
            caller_id: Some("+15550100".into()),
        };
        assert_eq!(route.from_user(&primary), Some("+15550100"));
        primary.from_user = Some("acct1234".into());
        assert_eq!(route.from_user(&primary), Some("acct1234"));
    }

    #[test]
    fn longest_inbound_prefix_wins() {
        let mut wide = trunk("wide");
        wide.inbound_sources = vec!["203.0.113.0/24".parse().unwrap()];
        let mut narrow = trunk("narrow");
        narrow.inbound_sources = vec!["203.0.113.128/25".parse().unwrap()];
        let t = RoutingTable::new(vec![wide, narrow], Vec::new(), Vec::new(), Vec::new()).unwrap();
        assert_eq!(t.trunk_for_source("203.0.113.200".parse().unwrap()).map(|t| t.name.as_str()), Some("narrow"));
        assert_eq!(t.trunk_for_source("203.0.113.20".parse().unwrap()).map(|t| t.name.as_str()), Some("wide"));
    }

    #[test]
    fn did_literal_wins_over_pattern_and_plus_is_optional() {
        let dids = vec![
            Did { number: pattern("_44207946XXXX"), users: vec!["desk".into()] },
            Did { number: pattern("442079460958"), users: vec!["alice".into()] },
        ];
        let t = RoutingTable::new(Vec::new(), Vec::new(), dids, Vec::new()).unwrap();
        assert_eq!(t.did("+442079460958").unwrap(), ["alice"]);
        assert_eq!(t.did("44 20 7946 0001").unwrap(), ["desk"]);
        assert_eq!(t.did("4420794600011"), Err(RouteError::UnknownDid));
    }

    #[test]
    fn new_reports_every_problem_naming_its_rule_or_trunk() {
        let mut registering = trunk("reg");
        registering.register = true;
        let mut limited = trunk("limited");
        limited.max_calls = Some(0);
        limited.credentials = Some(Credentials { username: String::new(), password: "p".into(), realm: None });
        let empty = Trunk::new("empty", Vec::new());
        let both = OutboundRule { prepend: "+".into(), e164: Some("044".into()), ..rule("both", "0", &["primary"]) };
        let strip = OutboundRule { strip: 3, ..rule("strip", "00", &["primary"]) };
        let prepend = OutboundRule { prepend: "9+".into(), ..rule("prepend", "1", &["primary"]) };
        let problems = RoutingTable::new(
            vec![trunk("primary"), trunk("primary"), registering, limited, empty],
            vec![
                rule("typo", "00", &["primray"]),
                rule("typo", "01", &["empty", "primary", "primary"]),
                rule("none", "02", &[]),
                both,
                strip,
                prepend,
            ],
            vec![
                Did { number: pattern("100"), users: Vec::new() },
                Did { number: pattern("100"), users: vec!["a".into()] },
            ],
            vec![("a".to_owned(), UserPolicy::default()), ("a".to_owned(), UserPolicy::default())],
        )
        .unwrap_err();
        assert_eq!(
            problems,
            [
                "trunk \"primary\" is defined twice",
                "trunk \"reg\": register needs credentials",
                "trunk \"limited\": credentials have an empty username",
                "trunk \"limited\": max_calls 0 would refuse every call",
                "rule \"typo\" names unknown trunk \"primray\"",
                "rule \"typo\" is defined twice",
                "rule \"typo\": trunk \"empty\" has no targets to send to",
                "rule \"typo\" names trunk \"primary\" twice",
                "rule \"none\" names no trunks",
                "rule \"both\": e164 \"044\" is not a country code (1 to 3 digits)",
                "rule \"both\": set prepend or e164, not both",
                "rule \"strip\": strip 3 removes more than the 2 characters pattern \"00\" guarantees",
                "rule \"prepend\": prepend \"9+\" is not digits with an optional leading '+'",
                "did \"100\" rings no users",
                "did \"100\" is listed twice",
                "user \"a\" has two policies",
            ]
        );
    }
}
