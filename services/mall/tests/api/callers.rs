//! Service identity in the running mall: every gRPC method of every service answers only the callers
//! the design names for it; a call with no identity, another service's, or another stack's key is
//! refused with PERMISSION_DENIED before any handler runs.

use mall_runtime::{Identity, PeerChannel};
use tonic::Code;
use tonic::codegen::http::uri::PathAndQuery;

use crate::helpers::spawn_app;

/// Calls `path` on the service at `addr` with an empty request, as `caller` (or as nobody).
async fn call(
    addr: std::net::SocketAddr,
    path: &'static str,
    caller: Option<(&Identity, &str)>,
) -> tonic::Status {
    let mut channel: PeerChannel = mall_runtime::channel(&format!("http://{addr}")).unwrap();
    if let Some((identity, callee)) = caller {
        channel = channel.with_identity(identity, callee);
    }
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    match grpc.unary(tonic::Request::new(()), PathAndQuery::from_static(path), codec).await {
        Ok(_) => tonic::Status::ok(""),
        Err(status) => status,
    }
}

fn refused_for_identity(status: &tonic::Status) -> bool {
    mall_runtime::identity::is_refusal(status)
}

#[tokio::test]
async fn every_method_answers_only_its_named_callers() {
    let app = spawn_app().await;
    let mall = app.mall.as_ref().unwrap();
    let stranger = Identity::generate_all();
    let mut checked = 0;
    for &path in mall_proto::METHODS {
        let service = path.trim_start_matches("/mall.").split('.').next().unwrap();
        let addr = mall.service_addr(service).unwrap_or_else(|| panic!("{service} runs in mall up"));

        let anonymous = call(addr, path, None).await;
        assert!(refused_for_identity(&anonymous), "{path} without identity: {anonymous:?}");
        let forged = call(addr, path, Some((&stranger["gateway"], service))).await;
        assert!(refused_for_identity(&forged), "{path} from another stack's gateway key: {forged:?}");

        for (name, identity) in &mall.identities {
            let status = call(addr, path, Some((identity, service))).await;
            let named = mall_runtime::identity::may_call(name, path);
            assert_eq!(!refused_for_identity(&status), named, "{name} → {path}: {status:?}");
        }
        checked += 1;
    }
    assert!(checked > 20, "checked {checked} methods");
    app.stop().await;
}

#[tokio::test]
async fn internal_methods_refuse_the_services_the_design_does_not_name() {
    let app = spawn_app().await;
    let mall = app.mall.as_ref().unwrap();
    let ids = &mall.identities;
    let cases: &[(&str, &str, &str)] = &[
        // Signing a token for anyone: the gateway only.
        ("payment", "auth", "/mall.auth.v1.AuthService/IssueToken"),
        ("checkout", "auth", "/mall.auth.v1.AuthService/IssueToken"),
        // Marking an order paid: not the cart, not the product service.
        ("cart", "order", "/mall.order.v1.OrderService/MarkPaid"),
        ("product", "order", "/mall.order.v1.OrderService/MarkPaid"),
        // Taking stock: the order service reserves it; checkout and payment may not.
        ("checkout", "product", "/mall.product.v1.ProductService/ReserveStock"),
        ("payment", "product", "/mall.product.v1.ProductService/ReserveStock"),
    ];
    for &(caller, callee, path) in cases {
        let status = call(mall.service_addr(callee).unwrap(), path, Some((&ids[caller], callee))).await;
        assert_eq!(status.code(), Code::PermissionDenied, "{caller} → {path}");
        assert!(status.message().contains(&format!("{caller} may not call")), "{}", status.message());
    }
    // And the named caller gets through to the handler (which judges the empty request on its own).
    let through = call(
        mall.service_addr("auth").unwrap(),
        "/mall.auth.v1.AuthService/IssueToken",
        Some((&ids["gateway"], "auth")),
    )
    .await;
    assert!(!refused_for_identity(&through), "{through:?}");
    app.stop().await;
}
