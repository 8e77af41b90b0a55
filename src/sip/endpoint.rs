//! The rsipstack endpoint: its transports (UDP, TCP, TLS as `[sip]` says,
//! or one ephemeral UDP port for `sav call`) and the task that serves it.

use std::net::{IpAddr, SocketAddr};

use rsipstack::transaction::endpoint::Endpoint;
use rsipstack::transaction::TransactionReceiver;
use rsipstack::transport::{
    udp::UdpConnection, SipConnection, TcpListenerConnection, TlsListenerConnection, TransportLayer,
};
use rsipstack::EndpointBuilder;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::sip::config::{SipConfig, Transport};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EndpointError {
    #[error("cannot listen for SIP on {transport:?} {addr}: {source}")]
    Listen {
        transport: Transport,
        addr: SocketAddr,
        source: Box<rsipstack::Error>,
    },
    #[error("SIP endpoint: {0}")]
    Endpoint(Box<rsipstack::Error>),
    #[error(transparent)]
    Tls(#[from] crate::sip::tls::TlsError),
}

/// Judges each datagram and each new connection by its source address
/// before the stack parses it: `false` drops it (see
/// [`crate::sip::admission`]).
pub type PacketGate = std::sync::Arc<dyn Fn(IpAddr) -> bool + Send + Sync>;

/// A running endpoint.
pub struct SipEndpoint {
    pub endpoint: Endpoint,
    /// New transactions (requests outside a dialog, and in-dialog requests
    /// to match to their dialogs).
    pub incoming: TransactionReceiver,
    /// Stops the endpoint and its transports.
    pub cancel: CancellationToken,
    /// The endpoint's serving task.
    pub task: tokio::task::JoinHandle<()>,
}

impl SipEndpoint {
    /// Listens on every transport of `[sip]`; a port that cannot be bound
    /// is an error here (not a log line later). `gate` judges every
    /// connection and, after `udp_gate`, every datagram first; `refused` is told of each datagram
    /// the socket keeps from the stack (too large, malformed); idle TCP/TLS connections are closed after
    /// `[sip] tcp_idle_secs`.
    pub async fn listen(
        sip: &SipConfig,
        gate: Option<PacketGate>,
        udp_gate: Option<PacketGate>,
        refused: Option<crate::sip::wire::RefusalHook>,
    ) -> Result<SipEndpoint, EndpointError> {
        let cancel = CancellationToken::new();
        let layer = TransportLayer::new(cancel.child_token());
        layer.set_stream_idle_timeout(std::time::Duration::from_secs(sip.tcp_idle_secs.max(1)));
        if let Some(gate) = gate {
            layer.set_whitelist(move |ip: IpAddr| {
                let admitted = gate(ip);
                async move { admitted }
            });
        }
        let advertised = sip.advertised_ip();
        // UDP first: dialogs take their default Contact from the first listener.
        let mut transports = sip.transports.clone();
        transports.sort_by_key(|t| *t != Transport::Udp);
        for transport in transports {
            let listen = match transport {
                Transport::Tls => sip.tls_listen(),
                _ => sip.listen,
            };
            let external =
                (advertised != listen.ip()).then_some(SocketAddr::new(advertised, listen.port()));
            let failed = |source: rsipstack::Error| EndpointError::Listen {
                transport,
                addr: listen,
                source: Box::new(source),
            };
            let connection: Result<SipConnection, rsipstack::Error> = match transport {
                Transport::Udp => {
                    let socket = bind_udp(listen).map_err(|e| failed(e.into()))?;
                    let socket = crate::sip::wire::SipUdpSocket::new(
                        socket,
                        udp_gate.clone(),
                        refused.clone(),
                    );
                    UdpConnection::from_socket(
                        std::sync::Arc::new(socket),
                        external,
                        Some(cancel.child_token()),
                    )
                    .await
                    .map(Into::into)
                }
                Transport::Tcp => {
                    // rsipstack binds TCP only inside serve() and merely logs a
                    // failure there; bind once here so a busy port is an error.
                    std::net::TcpListener::bind(listen).map_err(|e| failed(e.into()))?;
                    TcpListenerConnection::new(listen, external)
                        .await
                        .map(Into::into)
                }
                Transport::Tls => {
                    let tls = crate::sip::tls::load(&sip.tls)?;
                    std::net::TcpListener::bind(listen).map_err(|e| failed(e.into()))?;
                    info!(%listen, cert = %sip.tls.cert.display(), "SIP over TLS");
                    TlsListenerConnection::new(listen, external, tls)
                        .await
                        .map(Into::into)
                }
            };
            layer.add_transport(connection.map_err(failed)?);
        }
        let (endpoint, task) = start(&sip.user_agent, layer, cancel.clone());
        let incoming = endpoint
            .incoming_transactions()
            .map_err(|e| EndpointError::Endpoint(Box::new(e)))?;
        Ok(SipEndpoint {
            endpoint,
            incoming,
            cancel,
            task,
        })
    }

    /// A user agent client on one UDP transport on an ephemeral port of
    /// `ip` (so that a running `sav serve` is no obstacle): the endpoint, what
    /// stops it, and its port. Whoever dials reads its incoming requests
    /// (the callee's BYE) and hands them to its dialogs.
    pub async fn ephemeral(
        user_agent: &str,
        ip: IpAddr,
    ) -> Result<(Endpoint, CancellationToken, u16), EndpointError> {
        let cancel = CancellationToken::new();
        let layer = TransportLayer::new(cancel.child_token());
        let addr = SocketAddr::new(ip, 0);
        let failed = |source: rsipstack::Error| EndpointError::Listen {
            transport: Transport::Udp,
            addr,
            source: Box::new(source),
        };
        let udp = UdpConnection::create_connection(addr, None, Some(cancel.child_token()))
            .await
            .map_err(failed)?;
        let port = udp.get_addr().get_socketaddr().map_err(failed)?.port();
        layer.add_transport(udp.into());
        let (endpoint, _task) = start(user_agent, layer, cancel.clone());
        Ok((endpoint, cancel, port))
    }
}

/// A UDP socket bound to `addr` (no address or port reuse: a port in use
/// is an error), for tokio.
fn bind_udp(addr: SocketAddr) -> std::io::Result<tokio::net::UdpSocket> {
    let socket = std::net::UdpSocket::bind(addr)?;
    socket.set_nonblocking(true)?;
    tokio::net::UdpSocket::from_std(socket)
}

/// Builds the endpoint on `layer` and spawns its serving task.
fn start(
    user_agent: &str,
    layer: TransportLayer,
    cancel: CancellationToken,
) -> (Endpoint, tokio::task::JoinHandle<()>) {
    let endpoint = EndpointBuilder::new()
        .with_user_agent(user_agent)
        .with_cancel_token(cancel)
        .with_transport_layer(layer)
        .build();
    let inner = endpoint.inner.clone();
    let task = tokio::spawn(async move {
        if let Err(e) = inner.serve().await {
            warn!(error = %e, "SIP endpoint stopped");
        }
    });
    (endpoint, task)
}
