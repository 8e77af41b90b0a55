//! A CRM webhook on loopback: counts the events POSTed to it, by id.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running webhook; serves until dropped.
pub struct Webhook {
    pub addr: SocketAddr,
    events: Arc<Mutex<Vec<serde_json::Value>>>,
    _runtime: std::thread::JoinHandle<()>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Webhook {
    pub fn start() -> Webhook {
        let events: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let seen = events.clone();
        let runtime = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("webhook runtime");
            rt.block_on(async move {
                let app = axum::Router::new().route(
                    "/events",
                    axum::routing::post(move |body: String| {
                        let seen = seen.clone();
                        async move {
                            match serde_json::from_str::<serde_json::Value>(&body) {
                                Ok(event) => {
                                    seen.lock().unwrap().push(event);
                                    axum::http::StatusCode::OK
                                }
                                Err(_) => axum::http::StatusCode::BAD_REQUEST,
                            }
                        }
                    }),
                );
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind webhook");
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stop_rx.await;
                    })
                    .await;
            });
        });
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("webhook started");
        Webhook {
            addr,
            events,
            _runtime: runtime,
            stop: Some(stop_tx),
        }
    }

    /// The `[crm]` section pointing at this webhook, retrying fast.
    pub fn config(&self) -> String {
        format!(
            "\n[crm]\nwebhook_url = \"http://{}/events\"\nretry_min_ms = 200\nretry_max_ms = 1000\n",
            self.addr
        )
    }

    /// Every event received so far, in order.
    pub fn events(&self) -> Vec<serde_json::Value> {
        self.events.lock().unwrap().clone()
    }

    /// Waits (bounded) for `count` events; returns them all.
    pub fn wait_for(&self, count: usize, timeout: Duration) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.events().len() >= count {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.events()
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
