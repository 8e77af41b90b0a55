//! The process (`sav serve`): the SIP endpoint and the dispatch of incoming
//! requests, the providers, the store and its outbox, metrics, SIGHUP
//! reload, and the drain on SIGTERM.

pub mod answer;
pub mod door;
pub mod log;
pub mod memory;
pub mod traces;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rsipstack::dialog::dialog::{Dialog, DialogState};
use rsipstack::dialog::dialog_layer::DialogLayer;
use rsipstack::sip::prelude::HeadersExt;
use rsipstack::sip::{Header, Method, StatusCode};
use rsipstack::transaction::transaction::Transaction;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::cache::CacheError;
use crate::call::{Live, Services};
use crate::config::Config;
use crate::media::driver::MediaDriver;
use crate::media::ports::RtpPortPool;
use crate::sip::endpoint::SipEndpoint;
use crate::sip::registrar_client::{LearnedAddress, RegisterError, RegistrarClient};
use crate::sip::respond::spawn_reply;
use crate::sip::ALLOW;

/// How long a shutdown waits for calls to end after asking them to hang up
/// (their goodbye phrase and BYE), once the drain bound has passed.
const HANGUP_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest an in-dialog request may wait for its answer (64 × T1, plus the
/// time to let a re-INVITE's ACK in).
const IN_DIALOG_LIMIT: Duration = Duration::from_secs(40);

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error(transparent)]
    Sip(#[from] crate::sip::endpoint::EndpointError),
    #[error(transparent)]
    Register(#[from] RegisterError),
    #[error(transparent)]
    Provider(#[from] crate::providers::ProviderError),
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Metrics(#[from] crate::metrics::http::ListenError),
    #[error(transparent)]
    Console(#[from] crate::console::ConsoleError),
}

/// The process's SIP side: what answering calls needs beyond what every
/// call is handed ([`Services`]).
pub struct Server {
    pub services: Arc<Services>,
    /// The configuration the process started with.
    pub config: Arc<Config>,
    pub dialogs: Arc<DialogLayer>,
    pub ports: RtpPortPool,
    /// One permit per call in progress (`max_calls`).
    pub calls: Arc<Semaphore>,
    /// Who may knock, and how often.
    pub admission: Arc<door::Door>,
    /// Our SIP address as the registrar sees it (rport/received), when it
    /// differs from the configured one: Contact in dialogs follows it.
    pub learned: LearnedAddress,
    /// INVITEs refused because their source is not in `[sip] allow`.
    pub forbidden: AtomicU64,
}

impl Server {
    /// Calls in progress (ringing or established).
    pub fn calls_in_progress(&self) -> i64 {
        self.services.metrics.active_calls.get()
    }

    /// Our Contact URI for dialogs: the same user and address as in REGISTER.
    pub fn contact_uri(&self, transport: rsipstack::sip::Transport) -> String {
        crate::sip::contact::for_dialog(&self.config.sip, &self.learned, transport)
    }
}

/// What the process is told from outside: by signals when it serves, by
/// the test that runs it otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Drain and stop (SIGTERM, SIGINT); a second one ends the calls now.
    Stop,
    /// Phrases, cache and knowledge base again (SIGHUP).
    Reload,
}

/// Runs the endpoint until SIGINT or SIGTERM; SIGHUP reloads the phrases,
/// the cache and the knowledge base from `config_path` (the embedded
/// default when `None`).
pub async fn serve(config: Config, config_path: Option<PathBuf>) -> Result<(), ServeError> {
    // Signals are caught from the start: a SIGTERM while starting is a
    // shutdown, not a kill.
    let mut signals = Signals::new();
    let (control, controlled) = tokio::sync::mpsc::channel(8);
    tokio::spawn(async move {
        loop {
            let signal = signals.next().await;
            if control.send(signal).await.is_err() {
                break;
            }
        }
    });
    run(config, config_path, controlled).await
}

/// Runs the endpoint until told to stop (or until every sender of
/// `control` is gone): the listeners of `config`, the providers, the store
/// and its outbox, the registration, then the drain. A reload reads
/// `config_path` again.
pub async fn run(
    config: Config,
    config_path: Option<PathBuf>,
    mut control: tokio::sync::mpsc::Receiver<Control>,
) -> Result<(), ServeError> {
    crate::install_crypto_provider();

    let metrics = Arc::new(crate::metrics::Metrics::with_currency(
        &config.costs.currency,
    ));
    // Every labelled family shown at zero from the start.
    metrics.declare_outcomes(crate::conversation::Outcome::ALL.map(|o| o.as_str()));
    metrics.declare_refusals(answer::REFUSALS);
    metrics.declare_providers(crate::timeline::Provider::ALL.map(|p| p.as_str()));
    metrics.declare_rtp_drops(crate::media::inbound::Dropped::LABELS);
    let ops_stop = CancellationToken::new();
    let ops = match config.metrics.enabled {
        true => Some(
            crate::metrics::http::spawn(config.metrics.listen, metrics.clone(), ops_stop.clone())
                .await?,
        ),
        false => None,
    };
    let config = Arc::new(config);
    let live = Live::load(config.clone())?;
    metrics.set_cache_loaded(true);

    let listen = config.sip.listen;
    let advertised = SocketAddr::new(config.sip.advertised_ip(), listen.port());
    let registrar = door::registrar_addresses(&config.sip).await;
    let admission = Arc::new(door::Door::new(&config.sip, &registrar, metrics.clone()));
    let SipEndpoint {
        endpoint,
        mut incoming,
        cancel,
        task: endpoint_task,
    } = SipEndpoint::listen(
        &config.sip,
        Some(admission.gate()),
        Some(admission.udp_gate()),
        Some(admission.wire_refusals()),
    )
    .await?;

    let providers = crate::call::reply::Providers::from_config(&config)?;
    let store =
        crate::store::Store::open(&config.store.url, &config.base_dir, &config.instance()).await?;
    // Calls a crash left open are closed (and sent) before new ones come.
    store.recover_interrupted().await?;
    let outbox_stop = CancellationToken::new();
    let outbox = tokio::spawn(crate::store::outbox::run(
        store.clone(),
        config.crm.clone(),
        outbox_stop.clone(),
    ));
    // What [retention] says is past goes, now and once a day (stops with
    // the outbox).
    if config.retention.is_set() {
        tokio::spawn(purge_daily(
            store.clone(),
            config.clone(),
            outbox_stop.clone(),
        ));
    }
    memory::spawn_release_when_idle(metrics.clone());
    let learned: LearnedAddress = Default::default();
    let registration = match &config.sip.register {
        Some(register) => {
            let (client, mut status) = RegistrarClient::new(
                endpoint.inner.clone(),
                register.clone(),
                advertised,
                config.sip.tls_listen().port(),
                learned.clone(),
            )?;
            metrics.set_registration(crate::metrics::Registration::Registering);
            let watched = metrics.clone();
            tokio::spawn(async move {
                use crate::metrics::Registration;
                use crate::sip::registrar_client::RegistrationStatus;
                loop {
                    let state = match *status.borrow_and_update() {
                        RegistrationStatus::Registering => Registration::Registering,
                        RegistrationStatus::Registered => Registration::Registered,
                        RegistrationStatus::Failing => Registration::Failing,
                        RegistrationStatus::Unregistered => Registration::Unregistered,
                    };
                    watched.set_registration(state);
                    if status.changed().await.is_err() {
                        break;
                    }
                }
            });
            let unregister = CancellationToken::new();
            let task = tokio::spawn(client.run(unregister.clone()));
            Some((unregister, task))
        }
        None => None,
    };

    let services = Arc::new(Services {
        live: std::sync::RwLock::new(Arc::new(live)),
        metrics: metrics.clone(),
        driver: MediaDriver::spawn_dedicated(metrics.clone(), config.media.realtime_clock),
        shutdown: CancellationToken::new(),
        providers,
        store,
        board: Default::default(),
        config: config.clone(),
    });
    crate::console::spawn(
        &config.console,
        &config.base_dir,
        services.clone(),
        ops_stop.clone(),
    )
    .await?;
    let server = Arc::new(Server {
        dialogs: Arc::new(DialogLayer::new(endpoint.inner.clone())),
        ports: RtpPortPool::new(
            listen.ip(),
            config.media.rtp_port_min,
            config.media.rtp_port_max,
        ),
        calls: Arc::new(Semaphore::new(config.sip.max_calls)),
        admission,
        learned,
        forbidden: AtomicU64::new(0),
        services,
        config,
    });
    info!(
        %listen,
        transports = ?server.config.sip.transports,
        rtp_ports = %format!("{}-{}", server.config.media.rtp_port_min, server.config.media.rtp_port_max),
        max_calls = server.config.sip.max_calls,
        "sav listening"
    );

    // Serve until SIGTERM/SIGINT; SIGHUP reloads.
    loop {
        tokio::select! {
            transaction = incoming.recv() => match transaction {
                Some(transaction) => dispatch(&server, transaction),
                None => break,
            },
            told = control.recv() => match told {
                Some(Control::Reload) => reload(&server, config_path.as_deref()),
                Some(Control::Stop) | None => break,
            },
        }
    }

    // Drain: new calls get 503 (and /healthz 503, OPTIONS 503, so a load
    // balancer stops sending), calls in progress go on up to the bound.
    server.services.metrics.set_draining();
    let drain = Duration::from_secs(server.config.operations.drain_secs);
    info!(
        calls = server.calls_in_progress(),
        drain_s = drain.as_secs(),
        "shutting down: new calls refused, calls in progress may finish"
    );
    // A registered extension leaves the PBX first, so that new calls go
    // elsewhere instead of meeting our 503.
    let registration = match registration {
        Some((unregister, task)) => {
            unregister.cancel();
            Some(task)
        }
        None => None,
    };
    let max = server.config.sip.max_calls as u32;
    let all_done = async {
        let _ = server.calls.acquire_many(max).await;
    };
    tokio::pin!(all_done);
    let finished = tokio::select! {
        _ = &mut all_done => true,
        _ = tokio::time::sleep(drain) => false,
        _ = stop_again(&mut control) => false,
        _ = serve_while_draining(&server, &mut incoming) => false,
    };
    if !finished {
        let left = server.calls_in_progress();
        warn!(
            calls = left,
            "drain bound reached: ending the calls left with BYE"
        );
        server.services.shutdown.cancel();
        // Still answering SIP while the BYEs go out.
        let ended = tokio::select! {
            ended = tokio::time::timeout(HANGUP_TIMEOUT, &mut all_done) => ended.is_ok(),
            _ = serve_while_draining(&server, &mut incoming) => false,
        };
        if !ended {
            warn!(
                timeout_s = HANGUP_TIMEOUT.as_secs(),
                "calls did not end in time"
            );
        }
    } else {
        server.services.shutdown.cancel();
        info!("every call ended");
    }
    if let Some(task) = registration {
        if tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .is_err()
        {
            warn!("unREGISTER did not finish in time");
        }
    }
    // Call records written before the outbox stops.
    server.services.store.flush().await;
    outbox_stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(2), outbox).await;
    ops_stop.cancel();
    if let Some(ops) = ops {
        let _ = tokio::time::timeout(Duration::from_secs(1), ops).await;
    }
    cancel.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(1), endpoint_task).await;
    info!("stopped");
    Ok(())
}

/// Keeps answering SIP while draining (in-dialog requests of the calls in
/// progress, 503 to new INVITEs); never returns while requests come.
async fn serve_while_draining(
    server: &Arc<Server>,
    incoming: &mut rsipstack::transaction::TransactionReceiver,
) {
    while let Some(transaction) = incoming.recv().await {
        dispatch(server, transaction);
    }
    std::future::pending::<()>().await
}

/// SIGHUP: phrases, cache and knowledge base from the configuration file
/// again. New calls take them; calls in progress keep theirs. A file that
/// does not load leaves everything as it was.
fn reload(server: &Arc<Server>, path: Option<&std::path::Path>) {
    info!("SIGHUP: reloading phrases, cache and knowledge base");
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(error) => {
            warn!(%error, "reload refused: the configuration does not load; nothing changed");
            return;
        }
    };
    let restart_needed = [
        ("sip", config.sip.listen != server.config.sip.listen),
        ("store", config.store.url != server.config.store.url),
        (
            "media",
            config.media.rtp_port_min != server.config.media.rtp_port_min
                || config.media.rtp_port_max != server.config.media.rtp_port_max,
        ),
    ];
    for (section, changed) in restart_needed {
        if changed {
            warn!(
                section,
                "this section changed but only takes effect on restart"
            );
        }
    }
    match Live::load(Arc::new(config)) {
        Ok(live) => {
            let phrases = live.cache.len();
            let problems = live.config.problems.len();
            server.services.set_live(live);
            info!(
                phrases,
                problems, "reloaded: new calls use it, calls in progress keep theirs"
            );
        }
        Err(error) => warn!(%error, "reload refused: the cache does not load; nothing changed"),
    }
}

/// A second stop while draining: end the calls now. Never resolves once
/// nobody can tell us any more.
async fn stop_again(control: &mut tokio::sync::mpsc::Receiver<Control>) {
    loop {
        match control.recv().await {
            Some(Control::Stop) => {
                warn!("second stop signal: ending calls now");
                return;
            }
            Some(Control::Reload) => warn!("reload while shutting down: ignored"),
            None => std::future::pending::<()>().await,
        }
    }
}

/// SIGINT, SIGTERM (stop) and SIGHUP (reload).
struct Signals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    hup: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    int: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn new() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Self {
                term: signal(SignalKind::terminate()).ok(),
                hup: signal(SignalKind::hangup()).ok(),
                int: signal(SignalKind::interrupt()).ok(),
            }
        }
        #[cfg(not(unix))]
        Self {}
    }

    async fn next(&mut self) -> Control {
        #[cfg(unix)]
        {
            tokio::select! {
                Some(()) = recv(&mut self.term) => Control::Stop,
                Some(()) = recv(&mut self.int) => Control::Stop,
                Some(()) = recv(&mut self.hup) => Control::Reload,
                else => std::future::pending::<Control>().await,
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            Control::Stop
        }
    }
}

#[cfg(unix)]
async fn recv(signal: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match signal {
        Some(signal) => signal.recv().await,
        None => std::future::pending().await,
    }
}

/// Routes one incoming transaction. Never blocks the receive loop.
fn dispatch(server: &Arc<Server>, mut tx: Transaction) {
    let method = tx.original.method;
    let in_dialog = tx
        .original
        .to_header()
        .ok()
        .and_then(|to| to.tag().ok().flatten())
        .is_some();
    if in_dialog {
        match server.dialogs.match_dialog(&tx) {
            // RFC 3261 §14.2: an INVITE while our answer to the first is not
            // yet ACKed gets 500 with Retry-After (rsipstack would leave it
            // unanswered, and its task alive, for good).
            Some(Dialog::Invite(dialog))
                if method == Method::Invite
                    && matches!(dialog.state(), DialogState::Terminated(..)) =>
            {
                spawn_reply(tx, StatusCode::CallTransactionDoesNotExist, Vec::new());
            }
            Some(Dialog::Invite(dialog))
                if method == Method::Invite
                    && !matches!(dialog.state(), DialogState::Confirmed(..)) =>
            {
                let retry = rand::random::<u32>() % 11;
                spawn_reply(
                    tx,
                    StatusCode::ServerInternalError,
                    vec![Header::RetryAfter(retry.to_string().into())],
                );
            }
            Some(mut dialog) => {
                tokio::spawn(async move {
                    // Bounded: a request the dialog never answers must not
                    // keep this task (and its transaction) forever.
                    match tokio::time::timeout(IN_DIALOG_LIMIT, dialog.handle(&mut tx)).await {
                        Ok(Err(e)) => debug!(error = %e, ?method, "in-dialog request failed"),
                        Ok(Ok(())) => {}
                        Err(_) => warn!(?method, "in-dialog request not answered in time"),
                    }
                    // The dialog may return without answering (early
                    // in-dialog requests): never leave a request unanswered.
                    let answered = tx
                        .last_response
                        .as_ref()
                        .is_some_and(|r| r.status_code.code() >= 200);
                    if !answered && tx.original.method != Method::Ack {
                        let _ = tx.reply(StatusCode::CallTransactionDoesNotExist).await;
                    }
                });
            }
            None if method == Method::Ack => {}
            None => spawn_reply(tx, StatusCode::CallTransactionDoesNotExist, Vec::new()),
        }
        return;
    }
    let user_agent = tx.original.header_value("User-Agent");
    let source = request_source(&tx);
    if method != Method::Ack {
        let verdict = match (method, source) {
            (Method::Invite, Some(ip)) if source_allowed(server, &tx) => {
                let user = tx
                    .original
                    .uri
                    .auth
                    .as_ref()
                    .map(|auth| auth.user.as_str())
                    .unwrap_or("");
                server.admission.invite(ip, user_agent.as_deref(), user)
            }
            (Method::Invite, _) => Ok(None),
            (_, Some(ip)) => server
                .admission
                .request(ip, method, user_agent.as_deref())
                .map(|()| None),
            (_, None) => Ok(None),
        };
        match verdict {
            Err(answer) => return server.admission.refuse(tx, answer),
            Ok(Some(hold)) if method == Method::Invite => {
                let server = server.clone();
                tokio::spawn(answer::handle_invite(server, tx, Some(hold)));
                return;
            }
            Ok(_) => {}
        }
    }
    // RFC 3261 §8.2.2.3: a request that requires an extension we do not
    // support is 420 (an INVITE's is checked with its offer).
    if !matches!(method, Method::Invite | Method::Ack | Method::Cancel) {
        let unsupported = crate::sip::midcall::header_tokens(&tx.original, &["Require"])
            .into_iter()
            .filter(|tag| !tag.eq_ignore_ascii_case("timer"))
            .collect::<Vec<_>>()
            .join(", ");
        if !unsupported.is_empty() {
            return spawn_reply(
                tx,
                StatusCode::BadExtension,
                vec![Header::Unsupported(unsupported.into())],
            );
        }
    }
    match method {
        Method::Invite if !source_allowed(server, &tx) => {
            let count = server.forbidden.fetch_add(1, Ordering::Relaxed) + 1;
            let source = tx
                .connection
                .as_ref()
                .and_then(|c| c.get_remote_addr())
                .map(|a| a.to_string());
            warn!(source = ?source, refused_so_far = count, "INVITE from a source not in [sip] allow: 403");
            spawn_reply(tx, StatusCode::Forbidden, Vec::new());
        }
        Method::Invite => {
            let server = server.clone();
            tokio::spawn(answer::handle_invite(server, tx, None));
        }
        // Draining: a load balancer probing with OPTIONS takes us out.
        Method::Options if server.services.draining() => spawn_reply(
            tx,
            StatusCode::ServiceUnavailable,
            vec![Header::Allow(ALLOW.into())],
        ),
        Method::Options => spawn_reply(
            tx,
            StatusCode::OK,
            vec![
                Header::Allow(ALLOW.into()),
                Header::Accept("application/sdp".into()),
            ],
        ),
        Method::Ack => {}
        Method::Bye | Method::Cancel | Method::Info => {
            spawn_reply(tx, StatusCode::CallTransactionDoesNotExist, Vec::new())
        }
        _ => spawn_reply(
            tx,
            StatusCode::MethodNotAllowed,
            vec![Header::Allow(ALLOW.into())],
        ),
    }
}

/// The address a request came from (not what its headers say).
fn request_source(tx: &Transaction) -> Option<std::net::IpAddr> {
    tx.connection
        .as_ref()
        .and_then(|c| c.get_remote_addr())
        .and_then(|a| a.get_socketaddr().ok())
        .map(|addr| addr.ip())
}

/// Whether `[sip] allow` lets this request's source in (always, when unset).
fn source_allowed(server: &Server, tx: &Transaction) -> bool {
    let allow = &server.config.sip.allow;
    if allow.is_empty() {
        return true;
    }
    match request_source(tx) {
        Some(ip) => allow.iter().any(|net| net.contains(ip)),
        None => false,
    }
}

/// The retention purge: a minute after the start (not on the way of a
/// restart's first calls), then every 24 hours, until `stop`.
async fn purge_daily(store: crate::store::Store, config: Arc<Config>, stop: CancellationToken) {
    let mut wait = Duration::from_secs(60);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.cancelled() => return,
        }
        wait = Duration::from_secs(24 * 3600);
        let recordings = config.recordings_dir();
        match store
            .purge(
                &config.retention,
                recordings.as_deref(),
                crate::store::now_ms(),
                false,
            )
            .await
        {
            Ok(purged) => info!(%purged, "retention purge"),
            Err(error) => warn!(%error, "retention purge failed; tried again tomorrow"),
        }
    }
}
