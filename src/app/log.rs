//! Where the process's log lines go and how they look: stderr, as text
//! (colours only on a terminal, and not with `NO_COLOR`) or as JSON lines
//! (`[log] format = "json"`), one flat object per line that a log shipper
//! indexes as it is: `timestamp`, `level`, `target`, `message`, the event's
//! fields, and the fields of the spans it happened in (a call's `call_id`)
//! beside them, numbers as numbers.

use std::fmt;
use std::io::IsTerminal;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Installs the process's subscriber. `RUST_LOG` filters (default: info,
/// the SIP stack at warn). With a `tracer` (`[traces]`), sav's spans at
/// info and above, and the events in them, are exported too, whatever
/// `RUST_LOG` says.
pub fn init(log: &LogConfig, tracer: Option<opentelemetry_sdk::trace::SdkTracer>) {
    crate::redact::show_in_full(log.show_caller_numbers);
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,rsipstack=warn"));
    // The SIP stack logs whole messages (numbers, digest credentials) at
    // info, debug and trace: only its warnings and errors pass, whatever
    // RUST_LOG says. Raw SIP is logged redacted, at trace (`sip::wire`).
    let stack_quiet = tracing_subscriber::filter::filter_fn(|meta| {
        !meta.target().starts_with("rsipstack") || *meta.level() <= tracing::Level::WARN
    });
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let layer = match log.format {
        LogFormat::Text => layer.with_ansi(colours()).boxed(),
        LogFormat::Json => layer
            .with_ansi(false)
            .fmt_fields(JsonFields::new())
            .event_format(FlatJson)
            .boxed(),
    };
    let traces = tracer.map(|tracer| {
        let ours = tracing_subscriber::filter::filter_fn(|meta| {
            meta.target().starts_with("sav") && *meta.level() <= tracing::Level::INFO
        });
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_filter(ours)
    });
    tracing_subscriber::registry()
        .with(layer.with_filter(stack_quiet).with_filter(filter))
        .with(traces)
        .init();
}

/// Colours when stderr is a terminal and `NO_COLOR` is not set
/// (no-color.org): never in journald, a file or a pipe.
fn colours() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// One flat JSON object per event.
pub struct FlatJson;

impl<S, N> FormatEvent<S, N> for FlatJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut line = Map::new();
        let mut timestamp = String::new();
        SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
        line.insert("timestamp".into(), Value::String(timestamp));
        let meta = event.metadata();
        line.insert("level".into(), Value::String(meta.level().to_string()));
        line.insert("target".into(), Value::String(meta.target().to_string()));
        // The spans' fields, outermost first (an inner span's field of the
        // same name wins), then the innermost span's name.
        if let Some(scope) = ctx.event_scope() {
            let spans: Vec<_> = scope.from_root().collect();
            for span in &spans {
                let extensions = span.extensions();
                let Some(fields) = extensions.get::<FormattedFields<N>>() else {
                    continue;
                };
                if let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(fields) {
                    line.extend(fields);
                }
            }
            if let Some(span) = spans.last() {
                line.insert("span".into(), Value::String(span.name().to_string()));
            }
        }
        // The event's own fields last: its message and values win.
        event.record(&mut FieldsInto(&mut line));
        let text = serde_json::to_string(&Value::Object(line)).map_err(|_| fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

/// Records an event's fields into a JSON object, numbers and booleans as
/// such, everything else as its text.
struct FieldsInto<'a>(&'a mut Map<String, Value>);

impl FieldsInto<'_> {
    fn put(&mut self, field: &Field, value: Value) {
        self.0.insert(field.name().to_string(), value);
    }
}

impl Visit for FieldsInto<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        let value = serde_json::Number::from_f64(value)
            .map(Value::Number)
            .unwrap_or_else(|| Value::String(value.to_string()));
        self.put(field, value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::Bool(value));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::String(value.to_string()));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, Value::String(value.to_string()));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, Value::String(format!("{value:?}")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::layer::SubscriberExt;

    /// What the layer writes, line by line.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| std::io::ErrorKind::Other)?
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_json_line_is_flat_with_the_calls_span_fields_and_plain_values() {
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(move || writer.clone())
                .fmt_fields(JsonFields::new())
                .event_format(FlatJson),
        );
        tracing::subscriber::with_default(subscriber, || {
            let call = tracing::info_span!("call", call_id = "abc@pbx", leg = 1u64);
            let _in = call.enter();
            let turn = tracing::info_span!("turn", turn = 3u64);
            let _in_turn = turn.enter();
            let reason = "no answer";
            tracing::warn!(
                latency_ms = 742u64,
                ratio = 0.5,
                heard = true,
                %reason,
                "reply late"
            );
        });
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        let line: Value = serde_json::from_str(text.trim()).expect(&text);
        assert_eq!(line["message"], "reply late");
        assert_eq!(line["level"], "WARN");
        assert_eq!(line["call_id"], "abc@pbx", "{text}");
        assert_eq!(line["leg"], 1);
        assert_eq!(line["turn"], 3);
        assert_eq!(line["span"], "turn");
        assert_eq!(line["latency_ms"], 742);
        assert_eq!(line["ratio"], 0.5);
        assert_eq!(line["heard"], true);
        assert_eq!(line["reason"], "no answer");
        assert!(line["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
        // Nothing nested.
        let object = line.as_object().unwrap();
        assert!(
            object.values().all(|v| !v.is_object() && !v.is_array()),
            "{text}"
        );
        assert!(!text.contains('\u{1b}'), "no escape codes");
    }
}
