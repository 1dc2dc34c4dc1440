//! `otlp-receiver`: the tests' OTLP/gRPC trace receiver as a program, for a cluster. It prints each
//! trace once nothing more has arrived for it in `--quiet-ms`: a `trace {json}` line (every span, for
//! a test to read from the pod's log) and the trace as an indented tree (for a person).

use std::time::Duration;

use clap::Parser;
use mall_testkit::otlp::{Receiver, render_tree};

#[derive(Parser)]
#[command(
    about = "Receives OTLP/gRPC traces and prints each one, as JSON and as a tree, once it is complete"
)]
struct Args {
    /// Address to serve OTLP/gRPC on.
    #[arg(long, default_value = "0.0.0.0:4317")]
    listen: String,
    /// A trace is printed when nothing has arrived for it in this many milliseconds.
    #[arg(long, default_value_t = 2000)]
    quiet_ms: u64,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let receiver = Receiver::start(&args.listen).await?;
    println!("otlp-receiver listening on {}", receiver.addr());
    let quiet = Duration::from_millis(args.quiet_ms);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let stop = shutdown();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = &mut stop => return Ok(()),
        }
        for trace in receiver.take_settled(quiet) {
            let spans: Vec<serde_json::Value> = trace.iter().map(span_json).collect();
            let id = trace.first().map(|s| s.trace_id.clone()).unwrap_or_default();
            println!("trace {}", serde_json::json!({"trace_id": id, "spans": spans}));
            print!("{}", render_tree(&trace));
        }
    }
}

fn span_json(span: &mall_testkit::otlp::ReceivedSpan) -> serde_json::Value {
    serde_json::json!({
        "service": span.service,
        "name": span.name,
        "kind": span.kind,
        "span_id": span.span_id,
        "parent_span_id": span.parent_span_id,
        "duration_ms": span.duration().as_secs_f64() * 1e3,
        "error": span.error,
        "attributes": span.attributes,
    })
}

/// SIGTERM (a pod being deleted) or Ctrl-C.
async fn shutdown() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
