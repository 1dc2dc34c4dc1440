//! The whole delivery on a real cluster (the current context of `KUBECONFIG`; settings in
//! `mall_e2e::cluster`): a fresh namespace; the operator chart installed into it and its `helm test`; the
//! minimal example applied with the image under test; Ready within a bounded time; the seed flow through
//! the gateway (register, log in, create a product as admin, add it to the cart, check out with
//! 4111 1111 1111 1111, see the order paid); a scale followed by status and back (its
//! PodDisruptionBudget comes and goes); a deleted child Deployment restored; the MallStack deleted and
//! every child collected (but the managed MySQL's Secret, kept with its volume); the release and the namespace deleted.
//!
//! Without `KUBECONFIG` and `MALL_E2E_IMAGE`, or when the cluster does not answer, it says why and
//! passes (unless `MALL_E2E_REQUIRE=1`), so a plain `cargo test` costs nothing here.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use mall_e2e::cluster::{Cluster, wait_for};
use mall_e2e::run::{RELEASE, Run, STACK, components};
use mall_operator::MallStack;
use serde::de::DeserializeOwned;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shop_on_a_real_cluster() {
    let Some(cluster) = Cluster::for_test("cluster end-to-end test").await else { return };
    let mut run = Run::new(&cluster, "mall-e2e");
    let result = steps(&mut run).await;
    run.finish(result).await;
}

async fn steps(run: &mut Run<'_>) -> Result<()> {
    run.step("create the namespace");
    run.create_namespace().await?;

    run.step("the CRD: installed by helm, or applied server-side first when it exists (the upgrade path)");
    run.crd_upgrade_path().await?;

    run.step("helm install the operator chart");
    run.helm_install().await?;

    run.step("helm test (the operator's /readyz through its metrics Service)");
    let mut test = run.c.helm()?;
    test.args(["test", RELEASE, "--namespace", &run.ns, "--timeout", "3m", "--logs"]);
    eprintln!("{}", mall_e2e::cluster::run(test, "helm test")?.trim_end());

    run.step("apply the minimal example with the image under test");
    let stack = run.example_stack(true).await?;
    run.prepare_volume(&stack).await?;
    run.apply_stack(&stack).await?;

    run.step("wait for the MallStack to be Ready");
    let ready = run.wait_ready(run.c.ready_timeout, None).await?;
    eprintln!("e2e: ready: {}", components(&ready));
    let status = ready.status.as_ref().unwrap();
    ensure!(status.ready_components.is_some(), "no readyComponents in the status");
    ensure!(
        status.condition("MigrationsComplete").is_some_and(|c| c.status == "True"),
        "MigrationsComplete is not True: {:?}",
        status.conditions
    );

    run.step("the seed flow through the gateway");
    seed_flow(run).await?;

    run.step("scale cart to 2: status follows, a PodDisruptionBudget appears");
    scale(run, "cart", 2).await?;
    let pdbs: Api<PodDisruptionBudget> = run.api();
    let pdb = format!("{STACK}-cart");
    wait_for(Duration::from_secs(60), Duration::from_secs(1), || async {
        Ok(pdbs.get_opt(&pdb).await?.is_some())
    })
    .await
    .context("the PodDisruptionBudget of a 2-replica service")?;

    run.step("scale cart back to 1: status follows, the PodDisruptionBudget is pruned");
    scale(run, "cart", 1).await?;
    wait_for(Duration::from_secs(60), Duration::from_secs(1), || async {
        Ok(pdbs.get_opt(&pdb).await?.is_none())
    })
    .await
    .context("the PodDisruptionBudget of a 1-replica service is deleted")?;

    run.step("delete a child Deployment: the operator restores it");
    delete_and_restore(run, "product").await?;

    run.step("delete the MallStack: every child is garbage-collected");
    delete_stack(run).await?;
    run.done();
    Ok(())
}

async fn seed_flow(run: &Run<'_>) -> Result<()> {
    let (gw, _forward) = run.gateway().await?;
    eprintln!("e2e: gateway at {}", gw.url);
    gw.wait_ready(Duration::from_secs(60)).await?;

    let (email, token, product) = run.shopper_with_cart(&gw, "E2E mug", "12.50", 10, 2).await?;
    let (order_id, total) = gw.checkout(&token, &email).await?;
    ensure!(total == 2500, "total: {total}");

    let orders = gw.get("/orders", Some(&token)).await?.expect(200, "list orders")?;
    let order = orders.data()["items"]
        .as_array()
        .and_then(|items| items.iter().find(|o| o["order_id"] == order_id.as_str()))
        .with_context(|| format!("order {order_id} not listed: {}", orders.body))?;
    ensure!(order["status"] == "paid", "order {order_id} is {}", order["status"]);
    let stock = gw.get(&format!("/products/{product}"), None).await?.expect(200, "the product")?;
    ensure!(stock.data()["stock"] == 8, "stock after buying 2 of 10: {}", stock.body);
    eprintln!("e2e: order {order_id} paid (2 × 12.50); stock 10 → 8");

    // The storefront, from the same gateway: HTML pages and their embedded stylesheet.
    let home = gw.get("/", None).await?.expect(200, "the shop's home page")?;
    let html = home.body.as_str().context("the home page is not HTML")?;
    let css_at = html.find("/static/css/shop.").context("the home page links no stylesheet")?;
    let css = html[css_at..].split('"').next().unwrap_or_default();
    gw.get(css, None).await?.expect(200, "the stylesheet")?;
    let page = gw.get(&format!("/shop/products/{product}"), None).await?.expect(200, "the product page")?;
    ensure!(
        page.body
            .as_str()
            .is_some_and(|html| html.contains("<h1>E2E mug</h1>") && html.contains("Only 8 left")),
        "the product page: {}",
        page.body
    );
    eprintln!("e2e: the storefront serves its home page, stylesheet and the product's page");
    Ok(())
}

/// Sets one service's replicas in the spec and waits for the status to report them all ready.
async fn scale(run: &Run<'_>, service: &str, replicas: i32) -> Result<()> {
    let patch = json!({"spec": {"services": {service: {"replicas": replicas}}}});
    run.stacks().patch(STACK, &PatchParams::default(), &Patch::Merge(&patch)).await?;
    let component = service.to_owned();
    let check = move |s: &MallStack| {
        s.status
            .as_ref()
            .and_then(|st| st.components.get(&component))
            .is_some_and(|c| c.desired == replicas && c.ready == replicas)
    };
    let stack = run.wait_ready(Duration::from_secs(180), Some(&check)).await?;
    let deployments: Api<Deployment> = run.api();
    let deployment = deployments.get(&format!("{STACK}-{service}")).await?;
    let spec_replicas = deployment.spec.and_then(|s| s.replicas);
    ensure!(spec_replicas == Some(replicas), "Deployment replicas {spec_replicas:?}, wanted {replicas}");
    eprintln!("e2e: {}", components(&stack));
    Ok(())
}

async fn delete_and_restore(run: &Run<'_>, component: &str) -> Result<()> {
    let deployments: Api<Deployment> = run.api();
    let name = format!("{STACK}-{component}");
    let old = deployments.get(&name).await?.metadata.uid;
    deployments.delete(&name, &DeleteParams::default()).await?;
    wait_for(Duration::from_secs(180), Duration::from_secs(1), || async {
        let Some(d) = deployments.get_opt(&name).await? else { return Ok(false) };
        let ready = d.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0);
        Ok(d.metadata.uid != old && d.metadata.deletion_timestamp.is_none() && ready >= 1)
    })
    .await
    .with_context(|| format!("Deployment {name} restored and ready"))?;
    run.wait_ready(Duration::from_secs(120), None).await?;
    Ok(())
}

async fn delete_stack(run: &Run<'_>) -> Result<()> {
    run.stacks().delete(STACK, &DeleteParams::default()).await?;
    let selector = format!("app.kubernetes.io/instance={STACK},app.kubernetes.io/managed-by=mall-operator");
    let mut last = String::new();
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let mut left = BTreeMap::new();
        left.insert("MallStack", usize::from(run.stacks().get_opt(STACK).await?.is_some()));
        left.insert("Deployment", count::<Deployment>(run, &selector).await?);
        left.insert("StatefulSet", count::<StatefulSet>(run, &selector).await?);
        left.insert("Job", count::<Job>(run, &selector).await?);
        left.insert("Service", count::<Service>(run, &selector).await?);
        left.insert("ConfigMap", count::<ConfigMap>(run, &selector).await?);
        // The managed MySQL's Secrets stay with its volume (retainOnDelete, the default): the root
        // password's and one per service.
        let kept = format!("{STACK}-mysql");
        let secrets = run.api::<Secret>().list(&ListParams::default().labels(&selector)).await?.items;
        let managed = run.c.database_url.is_none();
        let is_kept = |name: &str| name == kept || name.starts_with(&format!("{kept}-"));
        let retained = secrets.iter().filter(|s| managed && is_kept(&s.name_any())).count();
        left.insert("Secret", secrets.len() - retained);
        left.insert("PodDisruptionBudget", count::<PodDisruptionBudget>(run, &selector).await?);
        left.insert("HorizontalPodAutoscaler", count::<HorizontalPodAutoscaler>(run, &selector).await?);
        left.insert("NetworkPolicy", count::<NetworkPolicy>(run, &selector).await?);
        left.insert("Pod", count::<Pod>(run, &selector).await?);
        left.retain(|_, n| *n > 0);
        if left.is_empty() {
            ensure!(
                retained == if managed { 8 } else { 0 },
                "the Secrets {kept} and {kept}-<service> were kept with the MySQL volume ({retained})"
            );
            return Ok(());
        }
        let now = format!("{left:?}");
        if now != last {
            eprintln!("e2e:   [{:>6.1}s] left: {now}", run.elapsed());
            last = now;
        }
        if Instant::now() > deadline {
            bail!("children left 240 s after the MallStack was deleted: {last}");
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

async fn count<K>(run: &Run<'_>, selector: &str) -> Result<usize>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    Ok(run.api::<K>().list(&ListParams::default().labels(selector)).await?.items.len())
}
