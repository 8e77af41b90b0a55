//! Calls as OpenTelemetry traces: the `tracing` spans of each call (see
//! [`crate::timeline`]'s spans) exported by OTLP over HTTP (protobuf) to
//! the collector `[traces] endpoint` names, in batches from a thread of the
//! exporter's own (a slow or absent collector never holds up a call; spans
//! past its queue are dropped by the exporter).
//!
//! Headers for the collector (an API key) come from the standard
//! `OTEL_EXPORTER_OTLP_HEADERS` / `OTEL_EXPORTER_OTLP_TRACES_HEADERS`
//! variables, batching from `OTEL_BSP_*`.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;

use crate::config::TracesConfig;

/// The trace exporter; spans still queued are sent when it is dropped.
pub struct Traces {
    provider: SdkTracerProvider,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot start the OTLP trace exporter for {url}: {reason}")]
pub struct TracesError {
    url: String,
    reason: String,
}

impl Traces {
    /// The exporter and its tracer, when `[traces]` names an endpoint.
    pub fn start(config: &TracesConfig) -> Result<Option<(Traces, SdkTracer)>, TracesError> {
        let Some(url) = config.traces_url() else {
            return Ok(None);
        };
        // The exporter's HTTP client (rustls) uses the process's provider.
        crate::install_crypto_provider();
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(url.clone())
            .build()
            .map_err(|error| TracesError {
                url: url.clone(),
                reason: error.to_string(),
            })?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(
                Resource::builder()
                    .with_service_name(config.service_name.clone())
                    .with_attribute(opentelemetry::KeyValue::new(
                        "service.version",
                        env!("CARGO_PKG_VERSION"),
                    ))
                    .build(),
            )
            .build();
        let tracer = provider.tracer("sav");
        Ok(Some((Traces { provider }, tracer)))
    }
}

impl Drop for Traces {
    fn drop(&mut self) {
        // The last calls' spans go out before the process exits.
        if let Err(error) = self.provider.shutdown() {
            tracing::warn!(%error, "traces not all sent");
        }
    }
}
