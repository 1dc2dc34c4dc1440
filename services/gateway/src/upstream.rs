//! The gateway's channel to one service, knowing which service it reaches: a call that cannot reach it
//! (refused, reset, timed out) fails with UNAVAILABLE and a message that names the service, so a
//! service that is down fails only the routes that need it, with a 503 that says which.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use mall_runtime::PeerChannel;
use tonic::Status;
use tonic::body::Body;
use tonic::codegen::Service;

#[derive(Clone, Debug)]
pub struct Upstream {
    service: &'static str,
    channel: PeerChannel,
}

impl Upstream {
    /// `service` is the name people know it by ("payment").
    pub fn new(service: &'static str, channel: PeerChannel) -> Upstream {
        Upstream { service, channel }
    }
}

/// What a client sees when the gateway cannot reach `service`; the cause goes to the log only. A
/// status the channel itself decided (a deadline that ran out) is kept as it is.
fn unreachable(service: &'static str, error: Box<dyn std::error::Error + Send + Sync>) -> Status {
    match error.downcast::<Status>() {
        Ok(status) => *status,
        Err(error) => {
            tracing::warn!(service, error = ?error, "cannot reach a service");
            Status::unavailable(format!("the {service} service is unavailable"))
        }
    }
}

impl Service<http::Request<Body>> for Upstream {
    type Response = http::Response<Body>;
    type Error = Status;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Status>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        self.channel.poll_ready(cx).map_err(|e| unreachable(self.service, e))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let service = self.service;
        let call = self.channel.call(request);
        Box::pin(async move { call.await.map_err(|e| unreachable(service, e)) })
    }
}
