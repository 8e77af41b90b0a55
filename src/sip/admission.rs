//! Who may knock, and how often: the admission policy in front of the SIP
//! stack (sans-IO: time is passed in).
//!
//! Every datagram and every new TCP/TLS connection is judged by its source
//! address before the stack parses or allocates anything
//! ([`Admission::handle_packet`]): a token bucket per source, one for all
//! untrusted sources together, and a ban list with expiry (a source that
//! keeps going over its limits, or that names itself a scanner, is banned
//! for a while, as Kamailio's pike or a fail2ban jail would). A new INVITE
//! is judged again once parsed ([`Admission::handle_invite`]): a known
//! scanner's user agent, a user that is not ours, a bucket of its own, and a
//! bound on the calls one source holds at a time. Trusted sources (the PBX,
//! the trunk) pass without limits.
//!
//! Memory is bounded: at most [`MAX_SOURCES`] sources are tracked; a source
//! whose buckets are full again and that holds nothing is forgotten first.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::sip::config::{AdmissionConfig, AllowedSource};

/// Sources tracked at most. The global bucket admits at most its burst plus
/// its rate × a source bucket's refill time of new sources, far below this
/// with the defaults, so a flood from spoofed addresses cannot fill it.
pub const MAX_SOURCES: usize = 16_384;
/// Refusals after which a source's count starts again, when it stopped
/// going over its limits for this long.
const REFUSALS_FORGOTTEN_AFTER: Duration = Duration::from_secs(60);

/// How often, at most, a full table is swept for sources to forget.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// The key a source is judged by: its IPv4 address, or its IPv6 /64 (a
/// host holds a whole /64 and could change address within it at will).
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// Why a request was not let in (a metric label each).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// The source sent faster than its bucket allows.
    RateLimited,
    /// Every untrusted source together sent faster than the global budget.
    GlobalBudget,
    /// The source is on the ban list.
    Banned,
    /// New INVITEs faster than the source's INVITE bucket allows.
    InviteRate,
    /// The source already holds its share of calls.
    CallsPerSource,
    /// A user agent known to be a scanner.
    Scanner,
    /// An INVITE for a user that is not ours.
    UnknownUser,
    /// Too many sources tracked at once (never with the default limits).
    TooManySources,
    /// A datagram larger than the stack reads.
    TooLarge,
    /// Not a valid SIP message.
    Malformed,
}

impl Refusal {
    /// Every reason, in a fixed order (metrics are made for each).
    pub const ALL: [Refusal; 10] = [
        Refusal::RateLimited,
        Refusal::GlobalBudget,
        Refusal::Banned,
        Refusal::InviteRate,
        Refusal::CallsPerSource,
        Refusal::Scanner,
        Refusal::UnknownUser,
        Refusal::TooManySources,
        Refusal::TooLarge,
        Refusal::Malformed,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Refusal::RateLimited => "rate_limited",
            Refusal::GlobalBudget => "global_budget",
            Refusal::Banned => "banned",
            Refusal::InviteRate => "invite_rate",
            Refusal::CallsPerSource => "calls_per_source",
            Refusal::Scanner => "scanner",
            Refusal::UnknownUser => "unknown_user",
            Refusal::TooManySources => "too_many_sources",
            Refusal::TooLarge => "too_large",
            Refusal::Malformed => "malformed",
        }
    }
}

/// What the admission says of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Admit,
    Refuse(Refusal),
}

/// A token bucket: `rate` tokens a second up to `burst`.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(burst: u32, now: Instant) -> Self {
        Self {
            tokens: f64::from(burst),
            at: now,
        }
    }

    fn refill(&mut self, now: Instant, rate: f64, burst: u32) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(f64::from(burst));
        self.at = now;
    }

    fn take(&mut self, now: Instant, rate: f64, burst: u32) -> bool {
        self.refill(now, rate, burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn is_full(&mut self, now: Instant, rate: f64, burst: u32) -> bool {
        self.refill(now, rate, burst);
        self.tokens >= f64::from(burst)
    }
}

#[derive(Debug, Clone)]
struct Source {
    requests: Bucket,
    invites: Bucket,
    /// Calls this source holds (admitted INVITEs not yet ended).
    calls: u32,
    refusals: u32,
    last_refusal: Option<Instant>,
    banned_until: Option<Instant>,
}

/// The numbers of [`AdmissionConfig`], copied out of it.
#[derive(Debug, Clone, Copy)]
struct Limits {
    source_rate: f64,
    source_burst: u32,
    invite_rate: f64,
    invite_burst: u32,
    calls_per_source: u32,
    global_rate: f64,
    global_burst: u32,
    ban_after: u32,
    ban_secs: u64,
}

/// The admission policy's state.
#[derive(Debug)]
pub struct Admission {
    config: Limits,
    /// Known scanners' user agents, lower case.
    scanner_agents: Vec<String>,
    /// Trusted sources: the configured ones and `[sip] allow`.
    trusted: Vec<AllowedSource>,
    /// Users an INVITE may be for (case-insensitive); empty: any.
    users: Vec<String>,
    sources: HashMap<IpAddr, Source>,
    global: Bucket,
    /// Sources banned so far (each ban once).
    bans: u64,
    /// Sources banned since the shell last looked (at most
    /// [`MAX_BAN_NEWS`]; the rest are only counted).
    banned: Vec<IpAddr>,
    /// When the full table was last swept.
    swept: Option<Instant>,
}

/// New bans kept for the shell to report.
const MAX_BAN_NEWS: usize = 64;

impl Admission {
    /// `trusted` adds to the configuration's own trusted sources (`[sip]
    /// allow`); `users` are the users an INVITE may be for (empty: any).
    pub fn new(
        config: AdmissionConfig,
        trusted: &[AllowedSource],
        users: Vec<String>,
        now: Instant,
    ) -> Self {
        let mut all = config.trusted.clone();
        all.extend_from_slice(trusted);
        let global = Bucket::full(config.global_burst, now);
        let scanner_agents = config
            .scanner_agents
            .iter()
            .filter(|agent| !agent.is_empty())
            .map(|agent| agent.to_ascii_lowercase())
            .collect();
        Self {
            config: Limits {
                source_rate: config.source_rate,
                source_burst: config.source_burst,
                invite_rate: config.invite_rate,
                invite_burst: config.invite_burst,
                calls_per_source: config.calls_per_source,
                global_rate: config.global_rate,
                global_burst: config.global_burst,
                ban_after: config.ban_after,
                ban_secs: config.ban_secs,
            },
            scanner_agents,
            trusted: all,
            users,
            sources: HashMap::new(),
            global,
            bans: 0,
            banned: Vec::new(),
            swept: None,
        }
    }

    /// Whether `ip` passes without limits.
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|net| net.contains(ip))
    }

    /// Sources banned so far.
    pub fn bans(&self) -> u64 {
        self.bans
    }

    /// A source banned since the last call (for the log).
    pub fn poll_banned(&mut self) -> Option<IpAddr> {
        self.banned.pop()
    }

    /// Sources tracked now.
    pub fn tracked(&self) -> usize {
        self.sources.len()
    }

    /// Whether `ip` is banned at `now`.
    pub fn is_banned(&self, ip: IpAddr, now: Instant) -> bool {
        self.sources
            .get(&source_key(ip))
            .and_then(|s| s.banned_until)
            .is_some_and(|until| now < until)
    }

    /// One datagram, or one new connection, from `ip`: before it is parsed.
    pub fn handle_packet(&mut self, now: Instant, ip: IpAddr) -> Verdict {
        if self.is_trusted(ip) {
            return Verdict::Admit;
        }
        let ip = source_key(ip);
        let config = self.config;
        if let Some(source) = self.sources.get_mut(&ip) {
            if let Some(until) = source.banned_until {
                if now < until {
                    return Verdict::Refuse(Refusal::Banned);
                }
                source.banned_until = None;
                source.refusals = 0;
            }
            if !source
                .requests
                .take(now, config.source_rate, config.source_burst)
            {
                return self.refused(ip, now, Refusal::RateLimited);
            }
            if !self
                .global
                .take(now, config.global_rate, config.global_burst)
            {
                return Verdict::Refuse(Refusal::GlobalBudget);
            }
            return Verdict::Admit;
        }
        // A new source: the global budget first, so that a flood from
        // ever new addresses is held there and never fills the table.
        if !self
            .global
            .take(now, config.global_rate, config.global_burst)
        {
            return Verdict::Refuse(Refusal::GlobalBudget);
        }
        if self.sources.len() >= MAX_SOURCES && !self.make_room(now) {
            return Verdict::Refuse(Refusal::TooManySources);
        }
        let mut requests = Bucket::full(config.source_burst, now);
        requests.tokens -= 1.0;
        self.sources.insert(
            ip,
            Source {
                requests,
                invites: Bucket::full(config.invite_burst, now),
                calls: 0,
                refusals: 0,
                last_refusal: None,
                banned_until: None,
            },
        );
        Verdict::Admit
    }

    /// A new INVITE from `ip` (its packet was admitted): its `User-Agent`
    /// and the user of its Request-URI. On `Admit` the source holds one
    /// more call until [`Self::call_ended`].
    pub fn handle_invite(
        &mut self,
        now: Instant,
        ip: IpAddr,
        user_agent: Option<&str>,
        user: &str,
    ) -> Verdict {
        if self.is_trusted(ip) {
            return Verdict::Admit;
        }
        // A ban and a scanner's user agent first, as for any request.
        if let refused @ Verdict::Refuse(_) = self.handle_request(now, ip, user_agent) {
            return refused;
        }
        let ip = source_key(ip);
        if !self.users.is_empty() && !self.users.iter().any(|u| u.eq_ignore_ascii_case(user)) {
            return self.refused(ip, now, Refusal::UnknownUser);
        }
        let config = self.config;
        let Some(source) = self.sources.get_mut(&ip) else {
            // Its packet was never judged (a test, a transport we do not
            // see): judge it now.
            return match self.handle_packet(now, ip) {
                Verdict::Admit => self.handle_invite(now, ip, None, user),
                refused => refused,
            };
        };
        // Busy, not abuse: not counted toward a ban (a UA retransmits its
        // INVITE, and an office behind one address may be at its share).
        if source.calls >= config.calls_per_source {
            return Verdict::Refuse(Refusal::CallsPerSource);
        }
        if !source
            .invites
            .take(now, config.invite_rate, config.invite_burst)
        {
            return self.refused(ip, now, Refusal::InviteRate);
        }
        source.calls += 1;
        Verdict::Admit
    }

    /// Any request from `ip` once parsed: a ban since its packet or
    /// connection was let in (a TCP connection is judged once), and its
    /// user agent.
    pub fn handle_request(
        &mut self,
        now: Instant,
        ip: IpAddr,
        user_agent: Option<&str>,
    ) -> Verdict {
        if self.is_trusted(ip) {
            return Verdict::Admit;
        }
        let ip = source_key(ip);
        if self.is_banned(ip, now) {
            return Verdict::Refuse(Refusal::Banned);
        }
        if user_agent.is_some_and(|agent| self.is_scanner(agent)) {
            self.ban(ip, now);
            return Verdict::Refuse(Refusal::Scanner);
        }
        Verdict::Admit
    }

    /// A datagram from `ip` that is no SIP message: counted toward a ban.
    pub fn handle_malformed(&mut self, now: Instant, ip: IpAddr) -> Verdict {
        if self.is_trusted(ip) {
            return Verdict::Refuse(Refusal::Malformed);
        }
        self.refused(source_key(ip), now, Refusal::Malformed)
    }

    /// A call admitted by [`Self::handle_invite`] ended (or was never
    /// answered).
    pub fn call_ended(&mut self, ip: IpAddr) {
        if let Some(source) = self.sources.get_mut(&source_key(ip)) {
            source.calls = source.calls.saturating_sub(1);
        }
    }

    fn is_scanner(&self, agent: &str) -> bool {
        let agent = agent.to_ascii_lowercase();
        self.scanner_agents
            .iter()
            .any(|known| agent.contains(known.as_str()))
    }

    /// Counts a refusal of `ip`; past `ban_after` of them, bans it.
    fn refused(&mut self, ip: IpAddr, now: Instant, why: Refusal) -> Verdict {
        let ban_after = self.config.ban_after;
        let Some(source) = self.sources.get_mut(&ip) else {
            return Verdict::Refuse(why);
        };
        if source
            .last_refusal
            .is_some_and(|last| now.saturating_duration_since(last) > REFUSALS_FORGOTTEN_AFTER)
        {
            source.refusals = 0;
        }
        source.refusals += 1;
        source.last_refusal = Some(now);
        if ban_after > 0 && source.refusals >= ban_after {
            self.ban(ip, now);
        }
        Verdict::Refuse(why)
    }

    fn ban(&mut self, ip: IpAddr, now: Instant) {
        if self.config.ban_secs == 0 {
            return;
        }
        let until = now + Duration::from_secs(self.config.ban_secs);
        let config = self.config;
        let source = self.sources.entry(ip).or_insert_with(|| Source {
            requests: Bucket::full(config.source_burst, now),
            invites: Bucket::full(config.invite_burst, now),
            calls: 0,
            refusals: 0,
            last_refusal: None,
            banned_until: None,
        });
        if source.banned_until.is_none_or(|old| old <= now) {
            self.bans += 1;
            if self.banned.len() < MAX_BAN_NEWS {
                self.banned.push(ip);
            }
        }
        source.banned_until = Some(until);
        source.refusals = 0;
    }

    /// Room for one more source in a full table: the sources that hold
    /// nothing are forgotten (at most once a second), else the ban that
    /// ends first makes way (a flood of forged scanners cannot keep every
    /// new caller out); whether there is room now.
    fn make_room(&mut self, now: Instant) -> bool {
        if self
            .swept
            .is_none_or(|at| now.saturating_duration_since(at) >= SWEEP_EVERY)
        {
            self.swept = Some(now);
            self.forget_idle(now);
        }
        if self.sources.len() < MAX_SOURCES {
            return true;
        }
        let soonest = self
            .sources
            .iter()
            .filter(|(_, s)| s.calls == 0)
            .min_by_key(|(_, s)| s.banned_until)
            .map(|(ip, _)| *ip);
        match soonest {
            Some(ip) => {
                self.sources.remove(&ip);
                true
            }
            None => false,
        }
    }

    /// Forgets the sources that hold nothing: not banned, no call, both
    /// buckets full again.
    fn forget_idle(&mut self, now: Instant) {
        let c = self.config;
        self.sources.retain(|_, s| {
            let banned = s.banned_until.is_some_and(|until| now < until);
            banned
                || s.calls > 0
                || !s.requests.is_full(now, c.source_rate, c.source_burst)
                || !s.invites.is_full(now, c.invite_rate, c.invite_burst)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> AdmissionConfig {
        AdmissionConfig {
            source_rate: 10.0,
            source_burst: 20,
            invite_rate: 1.0,
            invite_burst: 3,
            calls_per_source: 2,
            global_rate: 100.0,
            global_burst: 200,
            ban_after: 50,
            ban_secs: 60,
            ..AdmissionConfig::default()
        }
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn a_source_gets_its_burst_then_its_rate_and_others_are_not_touched() {
        let t0 = Instant::now();
        let mut admission = Admission::new(config(), &[], Vec::new(), t0);
        let flooder = ip("198.51.100.7");
        let admitted = (0..1000)
            .filter(|_| admission.handle_packet(t0, flooder) == Verdict::Admit)
            .count();
        assert_eq!(admitted, 20);
        assert_eq!(
            admission.handle_packet(t0, flooder),
            Verdict::Refuse(Refusal::Banned),
            "a source far over its rate is banned"
        );
        // Another caller is let in meanwhile.
        assert_eq!(admission.handle_packet(t0, ip("192.0.2.1")), Verdict::Admit);
        // The ban expires; then the source has its rate again.
        let later = t0 + Duration::from_secs(61);
        assert_eq!(admission.handle_packet(later, flooder), Verdict::Admit);
        assert!(!admission.is_banned(flooder, later));
        assert_eq!(admission.bans(), 1);
        assert_eq!(admission.poll_banned(), Some(flooder));
        assert_eq!(admission.poll_banned(), None);
    }

    #[test]
    fn a_source_under_its_rate_is_never_refused() {
        let t0 = Instant::now();
        let mut admission = Admission::new(config(), &[], Vec::new(), t0);
        let caller = ip("192.0.2.1");
        // 9 a second for a minute, against a rate of 10.
        for n in 0..540u64 {
            let now = t0 + Duration::from_millis(n * 1000 / 9);
            assert_eq!(admission.handle_packet(now, caller), Verdict::Admit, "{n}");
        }
    }

    #[test]
    fn the_global_budget_holds_a_flood_from_ever_new_addresses_out_of_the_table() {
        let t0 = Instant::now();
        let mut admission = Admission::new(config(), &[], Vec::new(), t0);
        let mut refused = 0;
        for n in 0..100_000u32 {
            let spoofed = IpAddr::from(std::net::Ipv4Addr::from(0x0A00_0000 + n));
            let now = t0 + Duration::from_micros(u64::from(n) * 10); // 100k a second
            if admission.handle_packet(now, spoofed) == Verdict::Refuse(Refusal::GlobalBudget) {
                refused += 1;
            }
        }
        // 1 s at a budget of 100/s after a burst of 200.
        assert!(admission.tracked() <= 310, "{}", admission.tracked());
        assert!(refused >= 99_690, "{refused}");
    }

    #[test]
    fn trusted_sources_pass_without_limits() {
        let t0 = Instant::now();
        let pbx = AllowedSource("10.1.0.0/16".parse().unwrap());
        let mut admission = Admission::new(config(), &[pbx], vec!["1001".into()], t0);
        let trunk = ip("10.1.2.3");
        for _ in 0..10_000 {
            assert_eq!(admission.handle_packet(t0, trunk), Verdict::Admit);
        }
        for _ in 0..100 {
            assert_eq!(
                admission.handle_invite(t0, trunk, Some("friendly-scanner"), "9999"),
                Verdict::Admit
            );
        }
        assert_eq!(admission.tracked(), 0);
    }

    #[test]
    fn invites_have_their_own_bucket_and_a_source_holds_only_so_many_calls() {
        let t0 = Instant::now();
        let mut admission = Admission::new(config(), &[], Vec::new(), t0);
        let source = ip("203.0.113.9");
        assert_eq!(admission.handle_packet(t0, source), Verdict::Admit);
        assert_eq!(
            admission.handle_invite(t0, source, None, "sav"),
            Verdict::Admit
        );
        assert_eq!(
            admission.handle_invite(t0, source, None, "sav"),
            Verdict::Admit
        );
        assert_eq!(
            admission.handle_invite(t0, source, None, "sav"),
            Verdict::Refuse(Refusal::CallsPerSource)
        );
        admission.call_ended(source);
        assert_eq!(
            admission.handle_invite(t0, source, None, "sav"),
            Verdict::Admit
        );
        admission.call_ended(source);
        admission.call_ended(source);
        admission.call_ended(source);
        // Three INVITEs of the burst taken: the next waits for the rate.
        assert_eq!(
            admission.handle_invite(t0, source, None, "sav"),
            Verdict::Refuse(Refusal::InviteRate)
        );
        let later = t0 + Duration::from_millis(1_100);
        assert_eq!(
            admission.handle_invite(later, source, None, "sav"),
            Verdict::Admit
        );
    }

    #[test]
    fn a_scanner_is_banned_at_once_and_an_unknown_user_refused() {
        let t0 = Instant::now();
        let mut admission = Admission::new(config(), &[], vec!["1001".into()], t0);
        let scanner = ip("203.0.113.66");
        assert_eq!(
            admission.handle_request(t0, scanner, Some("friendly-scanner")),
            Verdict::Refuse(Refusal::Scanner)
        );
        assert_eq!(
            admission.handle_packet(t0, scanner),
            Verdict::Refuse(Refusal::Banned)
        );
        let caller = ip("192.0.2.5");
        assert_eq!(admission.handle_packet(t0, caller), Verdict::Admit);
        assert_eq!(
            admission.handle_invite(t0, caller, Some("Linphone/5"), "1002"),
            Verdict::Refuse(Refusal::UnknownUser)
        );
        assert_eq!(
            admission.handle_invite(t0, caller, Some("Linphone/5"), "1001"),
            Verdict::Admit
        );
    }

    #[test]
    fn forged_scanners_filling_the_table_do_not_keep_a_caller_out() {
        let t0 = Instant::now();
        let mut config = config();
        config.global_rate = 1e9;
        config.global_burst = u32::MAX;
        let mut admission = Admission::new(config, &[], Vec::new(), t0);
        for n in 0..(MAX_SOURCES as u32 + 10) {
            let forged = IpAddr::from(std::net::Ipv4Addr::from(0x0A00_0000 + n));
            admission.handle_packet(t0, forged);
            admission.handle_request(t0, forged, Some("friendly-scanner"));
        }
        assert!(admission.tracked() <= MAX_SOURCES);
        assert_eq!(admission.handle_packet(t0, ip("192.0.2.9")), Verdict::Admit);
    }

    #[test]
    fn an_ipv6_host_is_one_source_whatever_address_of_its_64_it_takes() {
        let t0 = Instant::now();
        let mut admission = Admission::new(config(), &[], Vec::new(), t0);
        let admitted = (0..100u16)
            .filter(|n| {
                let hopping =
                    IpAddr::from(std::net::Ipv6Addr::new(0x2001, 0xdb8, 1, 2, *n, 7, 7, *n));
                admission.handle_packet(t0, hopping) == Verdict::Admit
            })
            .count();
        assert_eq!(admitted, 20);
        let neighbour = IpAddr::from(std::net::Ipv6Addr::new(0x2001, 0xdb8, 1, 3, 0, 0, 0, 1));
        assert_eq!(admission.handle_packet(t0, neighbour), Verdict::Admit);
    }

    #[test]
    fn the_table_of_sources_stays_bounded() {
        let t0 = Instant::now();
        let mut config = config();
        config.global_rate = 1e9;
        config.global_burst = u32::MAX;
        let mut admission = Admission::new(config, &[], Vec::new(), t0);
        for n in 0..(MAX_SOURCES as u32 + 100) {
            let source = IpAddr::from(std::net::Ipv4Addr::from(0x0A00_0000 + n));
            admission.handle_packet(t0, source);
        }
        assert_eq!(admission.tracked(), MAX_SOURCES);
        // Once their buckets are full again, the old ones make room.
        let later = t0 + Duration::from_secs(10);
        assert_eq!(
            admission.handle_packet(later, ip("192.0.2.200")),
            Verdict::Admit
        );
        assert!(admission.tracked() < 10);
    }
}
