//! Registration as an extension on a PBX (RFC 3261 §10), sans-IO.
//!
//! [`Registration`] decides what to send and when; the tokio shell in
//! `sip/registrar_client.rs` builds the REGISTER, sends it through rsipstack
//! and feeds the final response back. It handles digest challenges (401 and
//! 407, answered once per nonce, again when `stale=true`), 423 Interval Too
//! Brief (retry with the registrar's Min-Expires), refresh before expiry (at
//! 85 % of what was granted, so never later than expires − 10 %), exponential
//! back-off with jitter after a failure (capped), and the final
//! `Expires: 0` on shutdown.

use std::time::{Duration, Instant};

use crate::sip::digest::{self, Challenge, Credentials};

/// Stale nonces answered in a row before we call it a failure (a registrar
/// that never accepts its own nonces must not get a REGISTER loop).
const MAX_STALE_RETRIES: u32 = 2;
/// Fraction of the granted interval after which we refresh (≤ 90 %).
const REFRESH_PERCENT: u64 = 85;

/// Tunables, from `[sip.register]`.
#[derive(Debug, Clone)]
pub struct RegistrationPolicy {
    /// Expires we ask for, in seconds.
    pub expires: u32,
    /// First back-off delay after a failure.
    pub retry_min: Duration,
    /// Longest back-off delay.
    pub retry_max: Duration,
}

/// Which header a challenge came in, and so which header answers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChallengeKind {
    /// 401 WWW-Authenticate → Authorization.
    Www,
    /// 407 Proxy-Authenticate → Proxy-Authorization.
    Proxy,
}

/// The final response to a REGISTER, as the shell read it.
#[derive(Debug, Clone, Default)]
pub struct RegisterResponse {
    pub status: u16,
    /// `WWW-Authenticate` (401) or `Proxy-Authenticate` (407) values, in order.
    pub challenges: Vec<String>,
    /// Min-Expires of a 423.
    pub min_expires: Option<u32>,
    /// What the registrar granted: our Contact's `expires` param or the
    /// Expires header of the 200.
    pub granted: Option<u32>,
}

/// A REGISTER to send now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterRequest {
    pub expires: u32,
    pub cseq: u32,
    /// Credentials answering the challenges received: `Authorization` for a
    /// registrar's 401, `Proxy-Authorization` for a proxy's 407.
    pub authorization: Vec<(ChallengeKind, String)>,
}

/// What the shell logs, and tells the rest of sav.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistrationEvent {
    Registered {
        expires: u32,
    },
    /// A failed attempt; the next try is in `retry_in`.
    Failed {
        reason: String,
        retry_in: Duration,
    },
    /// Our binding was removed (shutdown).
    Unregistered,
    /// The binding's granted time passed without a successful refresh (one
    /// may still be in flight, waiting for its answer): the registrar no
    /// longer routes calls to us.
    Lapsed {
        granted: u32,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for `next_at` to send a REGISTER.
    Waiting,
    /// A REGISTER is in flight.
    InFlight,
    /// Unregistered after shutdown: nothing more to send.
    Done,
}

pub struct Registration {
    policy: RegistrationPolicy,
    username: String,
    password: String,
    /// The Request-URI, for the digest `uri` parameter.
    request_uri: String,
    phase: Phase,
    /// Shutting down: the next REGISTER carries Expires: 0.
    unregistering: bool,
    /// When to send the next REGISTER (in `Waiting`).
    next_at: Instant,
    /// Expires we ask for: the policy's, raised by a 423.
    expires: u32,
    cseq: u32,
    /// The last challenge of each kind, answered in every request until a new
    /// one comes, with the count of its nonce's uses.
    challenges: Vec<(ChallengeKind, Challenge, u32)>,
    /// Kinds of challenge answered in this attempt: the same kind again (not
    /// stale) means the credentials were refused (RFC 3261 §22.2).
    answered: Vec<ChallengeKind>,
    /// Stale challenges answered in this attempt.
    stale_retries: u32,
    /// Failures in a row (the back-off exponent).
    failures: u32,
    registered: bool,
    /// When the binding the registrar last granted runs out, and for how
    /// long it was granted (while registered).
    binding_until: Option<(Instant, u32)>,
    events: std::collections::VecDeque<RegistrationEvent>,
    /// Jitter and cnonces: a CSPRNG (ChaCha) seeded by the shell from the
    /// operating system, so one cnonce says nothing of the next.
    rng: rand::rngs::StdRng,
}

impl Registration {
    pub fn new(
        policy: RegistrationPolicy,
        username: &str,
        password: &str,
        request_uri: &str,
        now: Instant,
        seed: [u8; 32],
    ) -> Self {
        let expires = policy.expires;
        Self {
            policy,
            username: username.to_string(),
            password: password.to_string(),
            request_uri: request_uri.to_string(),
            phase: Phase::Waiting,
            unregistering: false,
            next_at: now,
            expires,
            cseq: 0,
            challenges: Vec::new(),
            answered: Vec::new(),
            stale_retries: 0,
            failures: 0,
            registered: false,
            binding_until: None,
            events: Default::default(),
            rng: rand::SeedableRng::from_seed(seed),
        }
    }

    pub fn is_registered(&self) -> bool {
        self.registered
    }

    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// When the shell should next call [`Self::poll_transmit`]; `None` while a
    /// request is in flight or when done.
    pub fn poll_timeout(&self) -> Option<Instant> {
        (self.phase == Phase::Waiting).then_some(self.next_at)
    }

    /// When the binding runs out unless a refresh succeeds before: the
    /// shell calls [`Self::handle_timeout`] then, a request in flight or not.
    pub fn lapses_at(&self) -> Option<Instant> {
        self.binding_until.map(|(at, _)| at)
    }

    /// Time passed: a binding whose granted time ran out is lapsed.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some((until, granted)) = self.binding_until {
            if now >= until && self.registered {
                self.registered = false;
                self.binding_until = None;
                self.events.push_back(RegistrationEvent::Lapsed { granted });
            }
        }
    }

    /// The REGISTER to send at `now`, if one is due.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<RegisterRequest> {
        if self.phase != Phase::Waiting || now < self.next_at {
            return None;
        }
        self.phase = Phase::InFlight;
        let expires = if self.unregistering { 0 } else { self.expires };
        Some(self.request(expires))
    }

    /// Sends the next REGISTER at once (our Contact changed).
    pub fn refresh_now(&mut self, now: Instant) {
        if self.phase == Phase::Waiting && self.registered {
            self.next_at = now;
        }
    }

    /// Shutdown: remove our binding (the next request carries Expires: 0).
    /// Call when no request is in flight. Nothing is sent when we were not
    /// registered.
    pub fn unregister(&mut self, now: Instant) {
        self.unregistering = true;
        if self.registered {
            self.phase = Phase::Waiting;
            self.next_at = now;
        } else {
            self.phase = Phase::Done;
        }
    }

    /// Feeds the final response of the request in flight.
    pub fn handle_response(&mut self, now: Instant, response: RegisterResponse) {
        if self.phase != Phase::InFlight {
            return;
        }
        match response.status {
            200..=299 if self.unregistering => self.finish_unregister(),
            200..=299 if response.granted == Some(0) => {
                self.fail(
                    now,
                    "the registrar granted 0 s: our binding was not kept".into(),
                );
            }
            200..=299 => {
                let granted = response.granted.unwrap_or(self.expires).max(1);
                self.registered = true;
                self.binding_until = Some((now + Duration::from_secs(u64::from(granted)), granted));
                self.failures = 0;
                self.answered.clear();
                self.stale_retries = 0;
                self.phase = Phase::Waiting;
                self.next_at =
                    now + Duration::from_millis(u64::from(granted) * 10 * REFRESH_PERCENT);
                self.events
                    .push_back(RegistrationEvent::Registered { expires: granted });
            }
            401 | 407 => {
                let kind = if response.status == 401 {
                    ChallengeKind::Www
                } else {
                    ChallengeKind::Proxy
                };
                match Challenge::choose(response.challenges.iter().map(String::as_str)) {
                    Ok(challenge)
                        if (challenge.stale && self.stale_retries < MAX_STALE_RETRIES)
                            || !self.answered.contains(&kind) =>
                    {
                        if challenge.stale && self.answered.contains(&kind) {
                            self.stale_retries += 1;
                        }
                        self.answered.push(kind);
                        self.challenges.retain(|(k, _, _)| *k != kind);
                        self.challenges.push((kind, challenge, 0));
                        self.phase = Phase::Waiting;
                        self.next_at = now;
                    }
                    Ok(_) => self.fail(
                        now,
                        "credentials rejected: check the username, auth username and password"
                            .into(),
                    ),
                    Err(e) => self.fail(
                        now,
                        format!("cannot answer the {} challenge: {e}", response.status),
                    ),
                }
            }
            423 => match response.min_expires {
                Some(min) if min > self.expires && min <= 86_400 && !self.unregistering => {
                    self.expires = min;
                    self.phase = Phase::Waiting;
                    self.next_at = now;
                }
                other => self.fail(
                    now,
                    format!("423 Interval Too Brief with unusable Min-Expires {other:?}"),
                ),
            },
            status => self.fail(now, format!("registrar answered {status}")),
        }
    }

    /// The request in flight was given up (shutdown): neither a success nor a
    /// failure; the registration state is what it was before.
    pub fn abandon(&mut self, now: Instant) {
        if self.phase == Phase::InFlight {
            self.phase = Phase::Waiting;
            self.next_at = now;
        }
    }

    /// The request got no final response (timeout, transport error).
    pub fn handle_no_response(&mut self, now: Instant, reason: &str) {
        if self.phase == Phase::InFlight {
            self.fail(now, format!("no response: {reason}"));
        }
    }

    pub fn poll_event(&mut self) -> Option<RegistrationEvent> {
        self.events.pop_front()
    }

    fn request(&mut self, expires: u32) -> RegisterRequest {
        self.cseq += 1;
        let cnonce = format!("{:016x}", self.next_random());
        let credentials = Credentials {
            username: &self.username,
            password: &self.password,
        };
        let request_uri = &self.request_uri;
        let authorization = self
            .challenges
            .iter_mut()
            .map(|(kind, challenge, nc)| {
                *nc += 1;
                let value = digest::authorization(
                    challenge,
                    &credentials,
                    "REGISTER",
                    request_uri,
                    *nc,
                    &cnonce,
                );
                (*kind, value)
            })
            .collect();
        RegisterRequest {
            expires,
            cseq: self.cseq,
            authorization,
        }
    }

    fn fail(&mut self, now: Instant, reason: String) {
        if self.unregistering {
            // One try only at shutdown: the binding expires by itself anyway.
            self.finish_unregister();
            return;
        }
        self.registered = false;
        self.binding_until = None;
        self.failures += 1;
        self.answered.clear();
        self.stale_retries = 0;
        self.challenges.clear();
        let retry_in = self.backoff();
        self.phase = Phase::Waiting;
        self.next_at = now + retry_in;
        self.events
            .push_back(RegistrationEvent::Failed { reason, retry_in });
    }

    fn finish_unregister(&mut self) {
        self.registered = false;
        self.binding_until = None;
        self.phase = Phase::Done;
        self.events.push_back(RegistrationEvent::Unregistered);
    }

    /// min × 2^(failures−1), capped, with ±25 % jitter (kept within min..=max).
    fn backoff(&mut self) -> Duration {
        let min = self.policy.retry_min.max(Duration::from_millis(100));
        let max = self.policy.retry_max.max(min);
        let exponent = self.failures.saturating_sub(1).min(20);
        let base = min.saturating_mul(1u32 << exponent).min(max);
        let jitter_permille = 750 + self.next_random() % 501;
        base.mul_f64(jitter_permille as f64 / 1000.0)
            .clamp(min, max)
    }

    fn next_random(&mut self) -> u64 {
        rand::RngCore::next_u64(&mut self.rng)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RegistrationPolicy {
        RegistrationPolicy {
            expires: 300,
            retry_min: Duration::from_secs(2),
            retry_max: Duration::from_secs(60),
        }
    }

    fn reg(now: Instant) -> Registration {
        Registration::new(policy(), "1001", "secret", "sip:pbx.example", now, [42; 32])
    }

    fn ok(granted: u32) -> RegisterResponse {
        RegisterResponse {
            status: 200,
            granted: Some(granted),
            ..Default::default()
        }
    }

    fn challenge(status: u16, extra: &str) -> RegisterResponse {
        RegisterResponse {
            status,
            challenges: vec![format!(
                "Digest realm=\"pbx\", nonce=\"n1\", qop=\"auth\"{extra}"
            )],
            ..Default::default()
        }
    }

    #[test]
    fn a_binding_lapses_when_its_refresh_gets_no_answer_in_time() {
        let t = Instant::now();
        let mut r = reg(t);
        r.poll_transmit(t).unwrap();
        r.handle_response(t, ok(10));
        assert_eq!(
            r.poll_event(),
            Some(RegistrationEvent::Registered { expires: 10 })
        );
        assert_eq!(r.lapses_at(), Some(t + Duration::from_secs(10)));
        // The refresh at 8.5 s goes out and nothing answers it.
        let refresh = t + Duration::from_millis(8_500);
        assert!(r.poll_transmit(refresh).is_some());
        r.handle_timeout(t + Duration::from_millis(9_999));
        assert!(r.is_registered(), "still within the 10 s granted");
        assert_eq!(r.poll_event(), None);
        r.handle_timeout(t + Duration::from_secs(10));
        assert!(!r.is_registered());
        assert_eq!(
            r.poll_event(),
            Some(RegistrationEvent::Lapsed { granted: 10 })
        );
        assert_eq!(r.lapses_at(), None);
        // Only once; the refresh's own failure comes when it does.
        r.handle_timeout(t + Duration::from_secs(11));
        assert_eq!(r.poll_event(), None);
        r.handle_no_response(t + Duration::from_secs(40), "no answer");
        assert!(matches!(
            r.poll_event(),
            Some(RegistrationEvent::Failed { .. })
        ));
        // A successful refresh before the end keeps it.
        let mut r = reg(t);
        r.poll_transmit(t).unwrap();
        r.handle_response(t, ok(10));
        r.poll_transmit(refresh).unwrap();
        r.handle_response(refresh, ok(10));
        r.handle_timeout(t + Duration::from_secs(10));
        assert!(r.is_registered());
        assert_eq!(r.lapses_at(), Some(refresh + Duration::from_secs(10)));
    }

    #[test]
    fn registers_then_refreshes_before_expiry() {
        let t = Instant::now();
        let mut r = reg(t);
        let first = r.poll_transmit(t).expect("registers at once");
        assert_eq!((first.expires, first.cseq), (300, 1));
        assert!(first.authorization.is_empty());
        assert_eq!(r.poll_timeout(), None, "nothing while in flight");
        r.handle_response(t, ok(120));
        assert!(r.is_registered());
        assert_eq!(
            r.poll_event(),
            Some(RegistrationEvent::Registered { expires: 120 })
        );
        let refresh_at = r.poll_timeout().unwrap();
        assert_eq!(
            refresh_at - t,
            Duration::from_secs(102),
            "85 % of the 120 s granted"
        );
        assert!(
            refresh_at - t <= Duration::from_secs(108),
            "never later than expires - 10 %"
        );
        assert!(r
            .poll_transmit(refresh_at - Duration::from_millis(1))
            .is_none());
        assert_eq!(r.poll_transmit(refresh_at).unwrap().cseq, 2);
    }

    #[test]
    fn answers_401_then_407_with_both_credentials() {
        let t = Instant::now();
        let mut r = reg(t);
        r.poll_transmit(t);
        r.handle_response(t, challenge(401, ""));
        let second = r.poll_transmit(t).expect("answer at once");
        assert_eq!(second.authorization.len(), 1);
        let (kind, value) = &second.authorization[0];
        assert_eq!(*kind, ChallengeKind::Www);
        assert!(
            value.contains("username=\"1001\"") && value.contains("uri=\"sip:pbx.example\""),
            "{value}"
        );
        assert!(value.contains("nc=00000001"), "{value}");
        r.handle_response(t, challenge(407, ", algorithm=SHA-256"));
        let third = r.poll_transmit(t).unwrap();
        let kinds: Vec<ChallengeKind> = third.authorization.iter().map(|(k, _)| *k).collect();
        assert_eq!(kinds, vec![ChallengeKind::Www, ChallengeKind::Proxy]);
        assert!(third.authorization[0].1.contains("nc=00000002"));
        assert!(third.authorization[1].1.contains("algorithm=SHA-256"));
        r.handle_response(t, ok(300));
        assert!(r.is_registered());
        // The refresh answers the same challenges again, with the next nonce count.
        let refresh = r.poll_transmit(r.poll_timeout().unwrap()).unwrap();
        assert!(refresh.authorization[1].1.contains("nc=00000002"));
    }

    #[test]
    fn wrong_password_backs_off_exponentially_with_jitter_and_a_cap() {
        let t = Instant::now();
        let mut r = reg(t);
        let mut now = t;
        let mut delays = Vec::new();
        let mut sent = 0;
        for _ in 0..40 {
            let Some(_) = r.poll_transmit(now) else {
                let next = r.poll_timeout().unwrap();
                delays.push(next - now);
                now = next;
                continue;
            };
            sent += 1;
            r.handle_response(now, challenge(401, ""));
        }
        // Each failure = 1 REGISTER + 1 answer, refused.
        assert!(sent <= 40);
        let failures: Vec<RegistrationEvent> = std::iter::from_fn(|| r.poll_event()).collect();
        assert!(failures.len() >= 5);
        assert!(failures.iter().all(|e| matches!(e, RegistrationEvent::Failed { reason, .. } if reason.contains("credentials rejected"))));
        for (i, d) in delays.iter().enumerate() {
            let base = Duration::from_secs(2)
                .saturating_mul(1 << i.min(20))
                .min(Duration::from_secs(60));
            assert!(
                *d >= base.mul_f64(0.75).max(Duration::from_secs(2))
                    && *d <= base.mul_f64(1.25).min(Duration::from_secs(60)),
                "delay {i}: {d:?}"
            );
        }
        assert!(delays.last().unwrap() <= &Duration::from_secs(60));
        assert!(
            delays.iter().all(|d| *d >= Duration::from_secs(2)),
            "never a tight loop"
        );
    }

    #[test]
    fn stale_nonce_is_answered_and_a_second_plain_challenge_is_a_refusal() {
        let t = Instant::now();
        let mut r = reg(t);
        r.poll_transmit(t);
        r.handle_response(t, challenge(401, ""));
        r.poll_transmit(t);
        // Challenged again, but the nonce was only stale: answer it.
        r.handle_response(t, challenge(401, ", stale=true"));
        assert!(r.poll_transmit(t).is_some());
        assert!(r.poll_event().is_none(), "no failure reported");
        // Challenged again, not stale: the password is wrong.
        r.handle_response(t, challenge(401, ""));
        assert!(r.poll_transmit(t).is_none(), "no immediate retry");
        match r.poll_event() {
            Some(RegistrationEvent::Failed { reason, retry_in }) => {
                assert!(reason.contains("credentials rejected"), "{reason}");
                assert!(retry_in >= Duration::from_secs(2));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_registrar_that_is_always_stale_gets_back_off_not_a_loop() {
        let t = Instant::now();
        let mut r = reg(t);
        let mut sent = 0;
        while r.poll_transmit(t).is_some() {
            sent += 1;
            assert!(sent < 10, "a REGISTER loop");
            r.handle_response(t, challenge(401, ", stale=true"));
        }
        assert!(matches!(
            r.poll_event(),
            Some(RegistrationEvent::Failed { .. })
        ));
        assert!(r.poll_timeout().unwrap() > t, "backs off");
    }

    #[test]
    fn a_granted_expiry_of_zero_is_a_failure() {
        let t = Instant::now();
        let mut r = reg(t);
        r.poll_transmit(t);
        r.handle_response(t, ok(0));
        assert!(!r.is_registered());
        assert!(r.poll_timeout().unwrap() - t >= Duration::from_millis(1500));
    }

    #[test]
    fn interval_too_brief_retries_with_min_expires() {
        let t = Instant::now();
        let mut r = reg(t);
        r.poll_transmit(t);
        r.handle_response(
            t,
            RegisterResponse {
                status: 423,
                min_expires: Some(600),
                ..Default::default()
            },
        );
        let retry = r.poll_transmit(t).unwrap();
        assert_eq!(retry.expires, 600);
        // A 423 whose Min-Expires is not larger is a failure, not a loop.
        r.handle_response(
            t,
            RegisterResponse {
                status: 423,
                min_expires: Some(600),
                ..Default::default()
            },
        );
        assert!(matches!(
            r.poll_event(),
            Some(RegistrationEvent::Failed { .. })
        ));
        assert!(r.poll_transmit(t).is_none());
    }

    #[test]
    fn timeout_and_server_errors_back_off_then_recover() {
        let t = Instant::now();
        let mut r = reg(t);
        r.poll_transmit(t);
        r.handle_no_response(t, "timeout");
        let retry_at = r.poll_timeout().unwrap();
        assert!(retry_at - t >= Duration::from_millis(1500));
        r.poll_transmit(retry_at);
        r.handle_response(
            retry_at,
            RegisterResponse {
                status: 503,
                ..Default::default()
            },
        );
        let again = r.poll_timeout().unwrap();
        assert!(
            again - retry_at >= Duration::from_secs(3),
            "second failure waits longer"
        );
        r.poll_transmit(again);
        r.handle_response(again, ok(60));
        assert!(r.is_registered());
    }

    #[test]
    fn shutdown_sends_expires_zero_once_registered_only() {
        let t = Instant::now();
        let mut never = reg(t);
        never.unregister(t);
        assert!(never.is_done());
        assert!(never.poll_transmit(t).is_none());

        let mut r = reg(t);
        r.poll_transmit(t);
        r.handle_response(t, ok(300));
        r.poll_event();
        r.unregister(t);
        let bye = r.poll_transmit(t).unwrap();
        assert_eq!(bye.expires, 0);
        // Challenged: answered, still with Expires: 0.
        r.handle_response(t, challenge(401, ""));
        let answer = r.poll_transmit(t).unwrap();
        assert_eq!(answer.expires, 0);
        assert!(!answer.authorization.is_empty());
        r.handle_response(t, ok(0));
        assert!(r.is_done());
        assert_eq!(r.poll_event(), Some(RegistrationEvent::Unregistered));
    }
}
