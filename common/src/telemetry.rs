//! Logs and traces. Logs go to stderr as text, each line inside a request
//! carrying that request's `trace_id`. Traces are exported over OTLP/gRPC
//! only when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (standard OpenTelemetry
//! variables: `OTEL_BSP_SCHEDULE_DELAY` etc. apply); unset, no OpenTelemetry
//! layer is installed at all. W3C `traceparent` headers carry a trace across
//! every internal hop (`inject` on the way out, `extract` on the way in).

use std::sync::OnceLock;

use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

const DEFAULT_FILTER: &str = "info,openraft=warn";
const OTLP_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// Who is exporting: `service.name` (e.g. `cart-stock-node`) and
/// `service.instance.id` (e.g. `stock-node-2`) of the spans.
pub struct Identity {
    pub service_name: String,
    pub instance: String,
}

/// Installs logging, and tracing if an OTLP endpoint is configured. With an
/// identity and an endpoint this must run inside a Tokio runtime (the gRPC
/// exporter's channel lives there).
pub fn init(identity: Option<Identity>) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_FILTER));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(false);
    let otel = identity
        .filter(|_| std::env::var(OTLP_ENDPOINT).is_ok_and(|e| !e.is_empty()))
        .and_then(|id| match exporter(&id) {
            Ok(provider) => {
                let tracer = provider.tracer("cart");
                let _ = PROVIDER.set(provider);
                Some(tracing_opentelemetry::layer().with_tracer(tracer))
            }
            Err(e) => {
                eprintln!("tracing export disabled: {e}");
                None
            }
        });
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .try_init();
}

fn exporter(id: &Identity) -> anyhow::Result<SdkTracerProvider> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()?;
    let resource = Resource::builder()
        .with_service_name(id.service_name.clone())
        .with_attribute(opentelemetry::KeyValue::new(
            "service.instance.id",
            id.instance.clone(),
        ))
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

/// Flushes spans not yet exported (at a graceful exit).
pub fn shutdown() {
    if let Some(provider) = PROVIDER.get() {
        if let Err(e) = provider.shutdown() {
            eprintln!("flushing traces: {e}");
        }
    }
}

struct HeaderInjector<'a>(&'a mut reqwest::header::HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            reqwest::header::HeaderName::from_bytes(key.as_bytes()),
            reqwest::header::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

struct HeaderExtractor<'a>(&'a axum::http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Adds the current span's `traceparent` to an outgoing request (nothing
/// when tracing is off).
pub fn inject(request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    if PROVIDER.get().is_none() {
        return request;
    }
    let cx = tracing::Span::current().context();
    let mut headers = reqwest::header::HeaderMap::new();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&cx, &mut HeaderInjector(&mut headers))
    });
    request.headers(headers)
}

/// Makes `span` a child of the trace an incoming request carries, and
/// records the trace id on it (so every log line inside it shows it).
pub fn extract(headers: &axum::http::HeaderMap, span: &tracing::Span) {
    if PROVIDER.get().is_none() {
        return;
    }
    let parent =
        opentelemetry::global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(headers)));
    let _ = span.set_parent(parent);
    let trace_id = span.context().span().span_context().trace_id();
    span.record("trace_id", tracing::field::display(trace_id));
}
