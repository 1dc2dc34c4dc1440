//! `/metrics` of every service of `mall up` after real traffic: the RED series per service (requests by
//! method and code, duration histograms, in-flight), the database pools, the cache, the saga's
//! outcomes; and label sets that stay the same size however many distinct ids the clients ask for.

use futures::StreamExt;

use crate::commerce::{GOOD_CARD, checkout_body};
use crate::process::{MallUp, json_ok, shopper};

/// The series (name and labels, without the value) of a Prometheus text exposition.
fn series(text: &str) -> std::collections::BTreeSet<&str> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.rsplit_once(' ').map(|(series, _)| series))
        .collect()
}

/// The value of the one series named exactly `series` (name with its labels as rendered).
fn value(text: &str, wanted: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(wanted)?.strip_prefix(' ')?.parse().ok())
}

/// The gRPC address of each service, as `mall up` printed them ("    cart      gRPC on 127.0.0.1:…").
fn service_addrs(stdout: &str) -> Vec<(String, String)> {
    stdout
        .lines()
        .filter_map(|l| {
            let (name, addr) = l.trim().split_once(" gRPC on ")?;
            Some((name.trim().to_owned(), addr.trim().to_owned()))
        })
        .collect()
}

#[tokio::test]
async fn every_service_exports_red_metrics_with_bounded_labels() {
    let mall = MallUp::start(&[("MALL_RATE_LIMIT_PER_ADDRESS", "1000000")]).await;
    let client = reqwest::Client::new();
    let base = mall.url.clone();
    // Traffic that reaches every service: sign up, browse, add to the cart, check out.
    let (_, token, product_id) = shopper(&client, &mall).await;
    json_ok(
        client
            .post(format!("{base}/checkout"))
            .bearer_auth(&token)
            .json(&checkout_body(GOOD_CARD))
            .send()
            .await
            .unwrap(),
    )
    .await;
    json_ok(client.get(format!("{base}/products/{product_id}")).send().await.unwrap()).await;

    let stdout = std::fs::read_to_string(mall.dir.path().join("stdout.log")).unwrap();
    let services = service_addrs(&stdout);
    let names: Vec<&str> = services.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["auth", "user", "product", "cart", "order", "payment", "checkout"], "{stdout}");
    // Each service answers on its own port. (`mall up` is one process, so each shows every service's
    // series; a pod shows its own.)
    let mut text = String::new();
    for (name, addr) in &services {
        text = client.get(format!("http://{addr}/metrics")).send().await.unwrap().text().await.unwrap();
        let requests = format!("mall_grpc_server_requests_total{{service=\"{name}\"");
        assert!(
            text.lines().any(|l| l.starts_with(&requests) && l.contains("code=\"OK\"")),
            "{name}: {text}"
        );
        let durations = format!("mall_grpc_server_request_duration_seconds_bucket{{service=\"{name}\"");
        assert!(text.lines().any(|l| l.starts_with(&durations)), "{name}: {text}");
        let in_flight = format!("mall_grpc_server_requests_in_flight{{service=\"{name}\"}}");
        assert_eq!(value(&text, &in_flight), Some(0.0), "{name}: nothing in flight now: {text}");
    }
    // Per method: the one checkout, its one order and its one charge.
    for (service, method) in [("checkout", "Checkout"), ("payment", "Charge"), ("order", "PlaceOrder")] {
        let one = format!(
            "mall_grpc_server_requests_total{{service=\"{service}\",method=\"{method}\",code=\"OK\"}}"
        );
        assert_eq!(value(&text, &one), Some(1.0), "{one}: {text}");
    }
    assert_eq!(value(&text, "mall_checkout_outcomes_total{outcome=\"completed\"}"), Some(1.0), "{text}");
    assert!(text.contains("mall_db_pool_connections{db="), "{text}");
    assert!(text.contains("mall_db_pool_max_connections{db="), "{text}");
    assert!(text.contains("mall_db_pool_acquire_duration_seconds_bucket"), "{text}");
    assert!(text.lines().any(|l| l.starts_with("mall_cache_requests_total{cache=\"product\"")), "{text}");
    assert!(text.lines().any(|l| l.starts_with("mall_http_requests_total{")), "{text}");

    // 10,000 distinct product ids, unknown ones: every label set stays what it was after the first 10.
    let unknown = |i: u64| format!("{base}/products/{}", 900_000_000 + i);
    let fetch = |range: std::ops::Range<u64>| {
        let client = client.clone();
        futures::stream::iter(range)
            .map(move |i| {
                let client = client.clone();
                let url = unknown(i);
                async move { client.get(url).send().await.unwrap().status() }
            })
            .buffer_unordered(16)
            .collect::<Vec<_>>()
    };
    assert!(fetch(0..10).await.iter().all(|s| *s == 404));
    let metrics_of = |addr: String| {
        let client = client.clone();
        async move { client.get(format!("http://{addr}/metrics")).send().await.unwrap().text().await.unwrap() }
    };
    let product_addr = services.iter().find(|(n, _)| n == "product").unwrap().1.clone();
    let gateway = base.trim_start_matches("http://").to_owned();
    metrics_of(gateway.clone()).await; // the gateway counts its own /metrics: that series exists now
    let before = metrics_of(product_addr.clone()).await;
    let gateway_before = metrics_of(gateway.clone()).await;
    let statuses = fetch(10..10_000).await;
    assert!(statuses.iter().all(|s| *s == 404), "unknown products are 404");
    let after = metrics_of(product_addr).await;
    let gateway_after = metrics_of(gateway.clone()).await;
    for (what, before, after) in [("services", &before, &after), ("gateway", &gateway_before, &gateway_after)]
    {
        let (b, a) = (series(before), series(after));
        assert_eq!(b, a, "{what}: the same series before and after 9,990 more ids");
        // The ids are 900000000 and up; a value (a duration's sum) may contain those digits, a label not.
        assert!(a.iter().all(|series| !series.contains("900000")), "{what}: no id in a label: {after}");
    }
    let not_found =
        "mall_grpc_server_requests_total{service=\"product\",method=\"GetProduct\",code=\"NOT_FOUND\"}";
    assert_eq!(value(&after, not_found), Some(10_000.0), "{after}");

    let (status, _) = mall.stop();
    assert!(status.success());
}
