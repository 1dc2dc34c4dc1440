//! An OpenTelemetry collector for tests: a tonic server implementing OTLP's `TraceService` that keeps
//! every span it is sent, so a test can look at the traces a real process exported, and print one as
//! a tree.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value};

/// One span as it arrived, with ids in lowercase hex.
#[derive(Clone, Debug)]
pub struct ReceivedSpan {
    /// `service.name` of the exporting process's resource.
    pub service: String,
    pub trace_id: String,
    pub span_id: String,
    /// `None` for a root span.
    pub parent_span_id: Option<String>,
    pub name: String,
    /// `server`, `client`, `internal`, `producer`, `consumer` or `unspecified`.
    pub kind: &'static str,
    pub start_unix_nanos: u64,
    pub end_unix_nanos: u64,
    /// Attributes as text (strings as they are, other values as they print).
    pub attributes: BTreeMap<String, String>,
    /// Whether the span's status is `ERROR`.
    pub error: bool,
}

impl ReceivedSpan {
    pub fn duration(&self) -> Duration {
        Duration::from_nanos(self.end_unix_nanos.saturating_sub(self.start_unix_nanos))
    }

    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

/// What the receiver has been sent, and when it was last sent something.
#[derive(Default)]
struct Received {
    spans: Vec<ReceivedSpan>,
    last: HashMap<String, Instant>,
}

#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Received>>);

impl Collector {
    fn lock(&self) -> std::sync::MutexGuard<'_, Received> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let now = Instant::now();
        let mut received = self.lock();
        for resource_spans in request.into_inner().resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .map(|kv| text(kv.value.as_ref()))
                .unwrap_or_default();
            for span in resource_spans.scope_spans.into_iter().flat_map(|s| s.spans) {
                let span = ReceivedSpan {
                    service: service.clone(),
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: (!span.parent_span_id.is_empty()).then(|| hex(&span.parent_span_id)),
                    kind: kind_name(span.kind),
                    start_unix_nanos: span.start_time_unix_nano,
                    end_unix_nanos: span.end_time_unix_nano,
                    attributes: span
                        .attributes
                        .iter()
                        .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
                        .collect(),
                    // 2 is STATUS_CODE_ERROR.
                    error: span.status.as_ref().is_some_and(|s| s.code == 2),
                    name: span.name,
                };
                received.last.insert(span.trace_id.clone(), now);
                received.spans.push(span);
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn kind_name(kind: i32) -> &'static str {
    match kind {
        1 => "internal",
        2 => "server",
        3 => "client",
        4 => "producer",
        5 => "consumer",
        _ => "unspecified",
    }
}

/// A running receiver; it stops when dropped.
pub struct Receiver {
    addr: SocketAddr,
    collector: Collector,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Receiver {
    /// Listens on `listen` (`127.0.0.1:0` for a free port) and serves OTLP/gRPC there.
    pub async fn start(listen: &str) -> std::io::Result<Receiver> {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let collector = Collector::default();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .serve_with_incoming_shutdown(tokio_stream::wrappers::TcpListenerStream::new(listener), async {
                let _ = stopped.await;
            });
        tokio::spawn(async move {
            if let Err(e) = server.await {
                eprintln!("OTLP receiver on {addr} stopped: {e}");
            }
        });
        Ok(Receiver { addr, collector, _stop: stop })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The value for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.collector.lock().spans.clone()
    }

    /// The spans of one trace received so far.
    pub fn trace(&self, trace_id: &str) -> Vec<ReceivedSpan> {
        self.collector.lock().spans.iter().filter(|s| s.trace_id == trace_id).cloned().collect()
    }

    /// Waits (up to `timeout`) until the spans of `trace_id` satisfy `complete`, and returns them as
    /// they are then, complete or not.
    pub async fn wait_for_trace(
        &self,
        trace_id: &str,
        timeout: Duration,
        complete: impl Fn(&[ReceivedSpan]) -> bool,
    ) -> Vec<ReceivedSpan> {
        let started = Instant::now();
        loop {
            let spans = self.trace(trace_id);
            if complete(&spans) || started.elapsed() > timeout {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Removes and returns the traces nothing has arrived for in `quiet`, each as its spans.
    pub fn take_settled(&self, quiet: Duration) -> Vec<Vec<ReceivedSpan>> {
        let mut received = self.collector.lock();
        let settled: Vec<String> =
            received.last.iter().filter(|(_, at)| at.elapsed() >= quiet).map(|(id, _)| id.clone()).collect();
        let mut traces = Vec::new();
        for id in settled {
            received.last.remove(&id);
            let (trace, rest): (Vec<_>, Vec<_>) =
                std::mem::take(&mut received.spans).into_iter().partition(|s| s.trace_id == id);
            received.spans = rest;
            traces.push(trace);
        }
        traces
    }
}

/// The spans of one trace as an indented tree, children in the order they started: each line has the
/// span's name, its service and kind, its duration, and the attributes that say what it did. Spans
/// whose parent is not among them are roots (a trace continued from a client starts with one).
pub fn render_tree(spans: &[ReceivedSpan]) -> String {
    let ids: std::collections::HashSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    let mut children: HashMap<Option<&str>, Vec<&ReceivedSpan>> = HashMap::new();
    for span in spans {
        let parent = span.parent_span_id.as_deref().filter(|p| ids.contains(p));
        children.entry(parent).or_default().push(span);
    }
    for list in children.values_mut() {
        list.sort_by_key(|s| s.start_unix_nanos);
    }
    let mut out = String::new();
    let mut stack: Vec<(&ReceivedSpan, usize)> =
        children.get(&None).into_iter().flatten().rev().map(|s| (*s, 0)).collect();
    while let Some((span, depth)) = stack.pop() {
        let detail: Vec<String> = [
            "http.response.status_code",
            "rpc.grpc.status_code",
            "db.system",
            "db.operation",
            "checkout.step",
            "payment.decision",
        ]
        .iter()
        .filter_map(|k| span.attribute(k).map(|v| format!("{k}={v}")))
        .collect();
        out.push_str(&format!(
            "{:indent$}{} [{} {}] {:.2} ms{}{}\n",
            "",
            span.name,
            span.service,
            span.kind,
            span.duration().as_secs_f64() * 1e3,
            if detail.is_empty() { String::new() } else { format!(" {}", detail.join(" ")) },
            if span.error { " ERROR" } else { "" },
            indent = depth * 2,
        ));
        for child in children.get(&Some(span.span_id.as_str())).into_iter().flatten().rev() {
            stack.push((*child, depth + 1));
        }
    }
    out
}
